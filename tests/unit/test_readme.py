"""The README and every page of docs/ are true: every `rig` line parses with the real
CLI, every `nats req` body and JSON body is a valid request, every link and every path
named resolves, the generated references are what the code prints, and what can run
offline prints what the page shows."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from actors.cli.main import _parser
from actors.cli.reference import markdown as cli_reference
from actors.gateway.app import HttpSubmit
from actors.gateway.reference import markdown as routes_reference
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
from scripts.docs import roles, shown

ROOT = Path(__file__).resolve().parents[2]
RIG = str(Path(sys.executable).parent / "rig")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def console_blocks(page: Path) -> list[list[str]]:
    text = page.read_text()
    return [block.splitlines() for block in re.findall(r"```console\n(.*?)```", text, re.S)]


def commands(program: str, pages: list[Path] = PAGES) -> list[tuple[str, list[str]]]:
    """Each `$ PROGRAM ...` line (without a trailing comment or pipe), with its output."""
    found = []
    for page in pages:
        for block in console_blocks(page):
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


def test_the_pages_have_console_examples() -> None:
    assert len(commands("rig", [ROOT / "README.md"])) >= 3
    assert len(commands("rig")) >= 40


@pytest.mark.parametrize("command", sorted({c for c, _ in commands("rig")}))
def test_every_rig_example_parses_with_the_real_cli(command: str) -> None:
    argv = shlex.split(command)[1:]
    args = _parser().parse_args(argv)  # argparse exits 2 on an unknown verb or option
    assert callable(args.run)
    for flag in ("--input", "--args"):
        if flag in argv and not argv[argv.index(flag) + 1].startswith(("@", "-")):
            json.loads(argv[argv.index(flag) + 1])


REQUESTS = {
    Names().api_submit: SubmitRequest,
    Names().api_status: StatusRequest,
    Names().api_resolve: ResolveRequest,
    Names().api_cancel: CancelRequest,
    Names().api_inbox: InboxRequest,
}


def test_every_nats_example_is_a_valid_request() -> None:
    examples = commands("nats")
    assert len(examples) >= 2
    for command, _output in examples:
        words = shlex.split(command)
        # With the context `rig up` writes, named as the deployment (the client's seed and
        # inbox prefix, as `rig up` secures the server: tests/chaos/test_up.py connects
        # with it).
        assert words[1:3] == ["--context", Names().prefix]
        subject, body = words[words.index("req") + 1 :]
        value = loads(body.replace('"..."', '"job-1"'))
        validate(REQUESTS[subject], value)


def test_every_json_body_is_valid() -> None:
    """A `curl -d` to /v1/jobs is a valid submission; every ```json block parses."""
    posted = 0
    for command, _output in commands("curl"):
        words = shlex.split(command)
        if "-d" in words and any(w.endswith("/v1/jobs") for w in words):
            HttpSubmit.model_validate_json(words[words.index("-d") + 1])
            posted += 1
    assert posted >= 2
    for page in PAGES:
        for block in re.findall(r"```json\n(.*?)```", page.read_text(), re.S):
            json.loads(block)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in found:
            n += 1
            anchor = f"{slug}-{n}"
        found.add(anchor)
    return found


def _prose(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def test_every_link_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.exists():
                broken.append(f"{name(page)}: {target} (no such file)")
            elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
                broken.append(f"{name(page)}: {target} (no such heading)")
    assert broken == []


def test_every_path_the_pages_and_the_code_name_exists() -> None:
    """`docs/...md`, `examples/...`, `tests/...py` and `actors/...py` named in any page,
    docstring, help text or error message is a file (moves leave no stale name)."""
    texts = [*PAGES, *(ROOT / "actors").rglob("*.py"), *(ROOT / "scripts").iterdir()]
    texts += [*(ROOT / "tests").rglob("*.py"), ROOT / "pyproject.toml"]
    fixtures = ROOT / "tests" / "unit" / "test_structure.py"  # names files it makes
    missing = []
    for text in texts:
        if not text.is_file() or text.suffix not in (".md", ".py", ".toml", "") or text == fixtures:
            continue
        pattern = (
            r"(?<![\w/.])((?:docs|examples|tests|actors|scripts)/[\w/.-]+\.(?:md|py|toml|png))"
        )
        for path in re.findall(pattern, text.read_text(errors="replace")):
            if not (ROOT / path).exists() and "..." not in path:
                missing.append(f"{name(text)}: {path}")
    assert missing == []


def test_the_graph_example_is_what_rig_graph_prints() -> None:
    """`rig graph refund` needs a server; the class form prints the same, offline."""
    [(_command, output)] = [(c, o) for c, o in commands("rig") if c == "rig graph refund"]
    printed = subprocess.run(
        [RIG, "graph", "actors.examples.refund:RefundAgent"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    ).stdout
    assert printed.splitlines() == output


def test_the_api_document_covers_every_subject_and_field() -> None:
    text = (ROOT / "docs" / "reference" / "nats-api.md").read_text()
    for subject, model in REQUESTS.items():
        assert f"`{subject}`" in text, subject
        for field in model.model_fields:
            assert f"`{field}`" in text, (subject, field)


def test_the_security_doc_shows_the_roles_the_code_makes() -> None:
    """docs/design/security.md's role table is `rig roles`' output, not a copy that drifts."""
    assert shown("docs/design/security.md", "rig roles") == roles()


def test_the_cli_reference_is_the_parser() -> None:
    """docs/reference/cli.md has every command and option, as the parser has them."""
    table = shown("docs/reference/cli.md", "rig cli")
    assert table == cli_reference()
    verbs = {c.split()[1] for c, _ in commands("rig")}
    for verb in verbs:
        assert f"### `rig {verb}" in table, verb


def test_the_http_reference_is_the_route_table() -> None:
    assert shown("docs/reference/http-api.md", "rig routes") == routes_reference()


def test_the_readme_shows_the_example_code_the_tests_run() -> None:
    """The Python blocks of "Your first agent" are in the example files, as shown (the
    greeter's test is one that `scripts/test` runs), the asyncio marker included."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your first agent", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    sources = {
        "run_job": (ROOT / "examples" / "test_greeter.py").read_text(),
        "rig.up(": (ROOT / "examples" / "test_greeter.py").read_text(),
        "class GreeterAgent": (ROOT / "examples" / "greeter.py").read_text(),
    }
    assert len(blocks) >= 3
    assert "pytestmark = pytest.mark.asyncio" in section
    for block in blocks:
        [source] = [code for marker, code in sources.items() if marker in block]
        for part in block.strip().split("\n\n\n"):
            assert part.strip() in source, part


def test_the_readme_is_a_front_door() -> None:
    """About 250 lines: what Rig is, the two commands, a first agent, the manual's map."""
    text = (ROOT / "README.md").read_text()
    assert text.count("\n") <= 300
    for page in (ROOT / "docs" / "guide").glob("*.md"):
        assert f"docs/guide/{page.name}" in text, page.name
