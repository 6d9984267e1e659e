"""docs/reference/http-api.md's route table, written from `ROUTES` (the table the app
and its OpenAPI document are built from; a test keeps the file equal to it).

    python -m actors.gateway.reference     # prints the Markdown
"""

from __future__ import annotations

import sys

from actors.gateway.app import _OPEN_PATHS, ROUTES, Route


def markdown() -> str:
    lines = [
        "| route | what it does | parameters | answers |",
        "| --- | --- | --- | --- |",
    ]
    for route in ROUTES:
        lines.append(
            f"| `{route.method} {route.path}` | {_what(route)} | {_params(route)} "
            f"| {_answers(route)} |"
        )
    return "\n".join(lines) + "\n"


def _what(route: Route) -> str:
    text = route.summary.rstrip(".")
    if route.path in _OPEN_PATHS:
        text += " (no API key)"
    return text.replace("|", "\\|")


def _params(route: Route) -> str:
    said = [f"body `{route.body.__name__}`"] if route.body is not None else []
    for param in route.params:
        if param.where == "path":
            continue
        where = "header " if param.where == "header" else ""
        text = f"{where}`{param.name}`"
        if param.description:
            text += f": {param.description}"
        said.append(text)
    return "; ".join(said).replace("|", "\\|") or "-"


def _answers(route: Route) -> str:
    what = route.answer.__name__ if route.answer is not None else "Server-Sent Events"
    errors = ", ".join(str(code) for code in route.errors)
    return f"{route.ok} `{what}`" + (f"; {errors}" if errors else "")


if __name__ == "__main__":
    sys.stdout.write(markdown())
