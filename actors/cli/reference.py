"""docs/reference/cli.md's command reference, written from the real parser: every
command, its usage, and each option with its help (a test keeps the file equal to it).

    python -m actors.cli.reference     # prints the Markdown
"""

from __future__ import annotations

import argparse
import sys

from actors.cli.main import _parser

_COMMON = {"-h", "--help", "--json", "--debug"}  # every command has them: said once


def markdown() -> str:
    lines: list[str] = []
    for path, parser, summary in _commands(_parser(), ("rig",), ""):
        lines += [f"### `{' '.join(path)}`", ""]
        about = parser.description or summary
        if about:
            lines += [about.strip(), ""]
        usage = parser.format_usage().removeprefix("usage: ").strip()
        lines += ["```text", " ".join(usage.split()), "```", ""]
        rows = [_row(action) for action in parser._actions if _shown(action)]
        if rows:
            lines += ["| argument | meaning |", "| --- | --- |", *rows, ""]
    return "\n".join(lines)


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...], summary: str
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """Each command that runs (a leaf), depth first, in the order `--help` lists them."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser, summary)]
    found = []
    for sub in subs:
        helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
        for name, child in sub.choices.items():
            if child.prog.split()[-1] != name:
                continue  # an alias
            found += _commands(child, (*path, name), helps.get(name, ""))
    return found


def _shown(action: argparse.Action) -> bool:
    return (
        action.help is not argparse.SUPPRESS
        and not isinstance(action, argparse._SubParsersAction)
        and not set(action.option_strings) & _COMMON
    )


def _row(action: argparse.Action) -> str:
    if action.option_strings:
        metavar = action.metavar or (action.dest.upper() if action.nargs != 0 else None)
        name = ", ".join(action.option_strings) + (f" {metavar}" if metavar else "")
    else:
        name = str(action.metavar or action.dest).upper()
    meaning = (action.help or "").replace("|", "\\|").replace("%%", "%")
    if action.choices and not isinstance(action.choices, dict):
        meaning += f" (one of: {', '.join(map(str, action.choices))})"
    if action.required and action.option_strings:
        meaning += " (required)"
    name = name.replace("|", "\\|")
    return f"| `{name}` | {meaning} |"


if __name__ == "__main__":
    sys.stdout.write(markdown())
