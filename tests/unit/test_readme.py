"""The README's console examples are true: every `rig` line parses with the real CLI, every
`nats req` body is a valid request, and what can run offline prints what the README shows."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from actors.cli.main import _parser
from protocols import (
    CancelRequest,
    InboxRequest,
    Names,
    ResolveRequest,
    StatusRequest,
    SubmitRequest,
    loads,
    validate,
)

ROOT = Path(__file__).resolve().parents[2]
RIG = str(Path(sys.executable).parent / "rig")


def console_blocks() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    return [block.splitlines() for block in re.findall(r"```console\n(.*?)```", text, re.S)]


def commands(program: str) -> list[tuple[str, list[str]]]:
    """Each `$ PROGRAM ...` line (without a trailing comment or pipe), with its output."""
    found = []
    for block in console_blocks():
        for i, line in enumerate(block):
            if not line.startswith(f"$ {program} "):
                continue
            command = re.split(r"\s+#\s", line[2:])[0]
            command = command.split(" | ")[0]
            output = []
            for after in block[i + 1 :]:
                if after.startswith("$ "):
                    break
                output.append(after)
            found.append((command, output))
    return found


def test_the_readme_has_console_examples() -> None:
    assert len(commands("rig")) >= 15


@pytest.mark.parametrize("command", [c for c, _ in commands("rig")])
def test_every_rig_example_parses_with_the_real_cli(command: str) -> None:
    argv = shlex.split(command)[1:]
    args = _parser().parse_args(argv)  # argparse exits 2 on an unknown verb or option
    assert callable(args.run)


REQUESTS = {
    Names().api_submit: SubmitRequest,
    Names().api_status: StatusRequest,
    Names().api_resolve: ResolveRequest,
    Names().api_cancel: CancelRequest,
    Names().api_inbox: InboxRequest,
}


def test_every_nats_example_is_a_valid_request() -> None:
    examples = commands("nats")
    assert examples
    for command, _output in examples:
        words = shlex.split(command)
        # With the context `rig up` writes, named as the deployment (the client's seed and
        # inbox prefix, as `rig up` secures the server: tests/chaos/test_up.py connects
        # with it).
        assert words[1:3] == ["--context", Names().prefix]
        subject, body = words[words.index("req") + 1 :]
        value = loads(body.replace('"..."', '"job-1"'))
        validate(REQUESTS[subject], value)


def test_the_graph_example_is_what_rig_graph_prints() -> None:
    """`rig graph refund` needs a server; the class form prints the same, offline."""
    [(_command, shown)] = [(c, o) for c, o in commands("rig") if c == "rig graph refund"]
    printed = subprocess.run(
        [RIG, "graph", "actors.examples.refund:RefundAgent"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    ).stdout
    assert printed.splitlines() == shown


def test_the_api_document_covers_every_subject_and_field() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    for subject, model in REQUESTS.items():
        assert f"`{subject}`" in text, subject
        for field in model.model_fields:
            assert f"`{field}`" in text, (subject, field)


def test_the_security_doc_shows_the_roles_the_code_makes() -> None:
    """docs/security.md's role table is `rig roles`' output, not a copy that drifts."""
    doc = (ROOT / "docs" / "security.md").read_text()
    shown = doc.split("<!-- rig roles -->\n", 1)[1].split("<!-- /rig roles -->", 1)[0]
    env = {k: v for k, v in os.environ.items() if k != "RIG_PREFIX"}
    printed = subprocess.run(
        [RIG, "roles"], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60, env=env
    ).stdout
    assert shown == printed


def test_the_readme_shows_the_example_code_the_tests_run() -> None:
    """The Python blocks of "Writing your own agent" are in the example files, as shown
    (the greeter's test is one that `scripts/test` runs)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Writing your own agent", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    sources = {
        "run_job": (ROOT / "examples" / "test_greeter.py").read_text(),
        "rig.up(": (ROOT / "examples" / "test_greeter.py").read_text(),
        "class GreeterAgent": (ROOT / "examples" / "greeter.py").read_text(),
    }
    assert len(blocks) >= 2
    for block in blocks:
        [source] = [code for marker, code in sources.items() if marker in block]
        for part in block.strip().split("\n\n\n"):
            assert part.strip() in source, part
