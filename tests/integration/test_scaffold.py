"""`rig new agent|tool|verifier`: what it writes, with Rig installed from its wheel in a
venv of its own, passes its own tests and the project's lint and type checks as written;
the agent's tests include one that runs it under `rig up` (the fixtures of Rig's pytest
plugin, in a project that is not this one)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from actors.deploy.up import UpConfig
from tests.conftest import ROOT
from tests.integration.test_cli import run_rig

BIN = Path(sys.executable).parent


def lint_settings() -> str:
    """The project's ruff and mypy settings, as a user's project adopting them has them."""
    text = (ROOT / "pyproject.toml").read_text()
    return "\n".join(re.findall(r"(\[tool\.(?:ruff|mypy)[^\]]*\]\n(?:(?!\n\[).)*)", text, re.S))


async def run(*command: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


# What `rig new` is asked for, and how many tests it writes for each.
MADE = [
    ("agent", "support-triage", 4),
    ("agent", "a-name-of-24-characters", 4),  # the longest allowed still fits the lines
    ("tool", "open-ticket", 2),
    ("verifier", "ticket-fits", 2),
]


async def install_from_a_wheel(where: Path) -> Path:
    """Rig built as a wheel (from a copy of its sources: a build writes beside them) and
    installed with the `testing` extra in a venv of its own, as a user installs it; the
    venv's python."""
    uv = str(BIN / "uv")
    source = where / "source"
    for part in ("actors", "protocols"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "nats.conf", "nats-cluster.conf"):
        shutil.copy(ROOT / name, source / name)
    code, out = await run(uv, "build", "--wheel", "--out-dir", str(where / "dist"), cwd=source)
    assert code == 0, out
    [wheel] = (where / "dist").glob("rig-*.whl")
    code, out = await run(uv, "venv", "--quiet", str(where / "venv"), cwd=where)
    assert code == 0, out
    python = where / "venv" / "bin" / "python"
    code, out = await run(
        uv, "pip", "install", "--python", str(python), f"{wheel}[testing]", cwd=where
    )
    assert code == 0, out
    return python


@pytest.mark.integration
async def test_what_rig_new_writes_passes_its_tests_and_the_checks(tmp_path: Path) -> None:
    """Every kind written into one project (as a user's would grow) by a Rig installed
    from its wheel; then the project's tests (the agents' real-server tests too: the
    pytest plugin, and `rig up` finding the server config the wheel ships), ruff and
    mypy run once over all of it."""
    python = await install_from_a_wheel(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(lint_settings())
    for kind, name, _ in MADE:
        code, out = await run(
            str(python.parent / "rig"), "new", kind, name, "--dir", str(project), cwd=tmp_path
        )
        assert code == 0, out
        module = name.replace("-", "_")
        assert f"wrote {project / (module + '.py')}" in out and "next:" in out
        if kind == "agent":  # `rig up --config NAME.toml` runs what the test runs
            camel = "".join(part.title() for part in name.split("-"))
            specs = UpConfig.load(project / f"{module}.toml").actors
            assert [spec.target for spec in specs] == [
                "actors:Supervisor",
                *(f"{module}:{camel}{role}" for role in ("Agent", "Tools", "Checks")),
            ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RIG_", "PYTHON"))}
    code, out = await run(
        str(python), "-m", "pytest", "-p", "no:cacheprovider", "-rA", cwd=project, env=env
    )
    assert code == 0 and f"{sum(n for _, _, n in MADE)} passed" in out, out
    for _, name, tests in MADE:  # each file's tests, each passed
        module = name.replace("-", "_")
        assert len(re.findall(rf"^PASSED test_{module}\.py::", out, re.M)) == tests, out
    code, out = await run(str(BIN / "ruff"), "check", ".", cwd=project)
    assert code == 0, out
    code, out = await run(str(BIN / "ruff"), "format", "--check", ".", cwd=project)
    assert code == 0, out
    # The installed Rig is typed (py.typed): its modules are found there, and not checked.
    code, out = await run(
        sys.executable,
        "-m",
        "mypy",
        "--python-executable",
        str(python),
        "--follow-imports=silent",
        ".",
        cwd=project,
        env=env,
    )
    assert code == 0, out


async def test_rig_new_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    env = dict(os.environ)
    code, _, _ = await run_rig(env, "new", "agent", "triage", "--dir", str(tmp_path))
    assert code == 0
    code, out, err = await run_rig(env, "new", "agent", "triage", "--dir", str(tmp_path))
    assert code == 2 and err.startswith("rig: usage_error: ") and "--force overwrites" in err
    assert "Traceback" not in err
    for bad in ("9lives", "a.b", "x" * 25):
        code, _, err = await run_rig(env, "new", "tool", bad, "--dir", str(tmp_path))
        assert code == 2 and err.startswith("rig: invalid_name: "), err
    code, out, _ = await run_rig(env, "new", "agent", "triage", "--dir", str(tmp_path), "--force")
    assert "wrote" in out
    assert code == 0
