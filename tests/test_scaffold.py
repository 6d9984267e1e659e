"""`rig new agent|tool|verifier`: what it writes passes its own tests and the project's
lint and type checks as written, and the agent it writes runs under `rig up`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_cli import run_rig
from tests.test_up import Up

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


@pytest.mark.parametrize(
    ("kind", "name", "tests"),
    [
        ("agent", "support-triage", 3),
        ("agent", "a-name-of-24-characters", 3),  # the longest allowed still fits the lines
        ("tool", "open-ticket", 2),
        ("verifier", "ticket-fits", 2),
    ],
)
async def test_what_rig_new_writes_passes_its_tests_and_the_checks(
    tmp_path: Path, kind: str, name: str, tests: int
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(lint_settings())
    code, out = await run(str(BIN / "rig"), "new", kind, name, "--dir", str(project), cwd=tmp_path)
    assert code == 0, out
    module = name.replace("-", "_")
    assert f"wrote {project / (module + '.py')}" in out and "next:" in out
    env = {**os.environ, "PYTHONPATH": str(project)}
    code, out = await run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project, env=env
    )
    assert code == 0 and f"{tests} passed" in out, out
    code, out = await run(str(BIN / "ruff"), "check", ".", cwd=project)
    assert code == 0, out
    code, out = await run(str(BIN / "ruff"), "format", "--check", ".", cwd=project)
    assert code == 0, out
    # An installed Rig is typed (py.typed): its own modules are found, and not checked.
    typed = {**os.environ, "MYPYPATH": str(ROOT)}
    code, out = await run(
        sys.executable, "-m", "mypy", "--follow-imports=silent", ".", cwd=project, env=typed
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


@pytest.mark.integration
async def test_the_agent_rig_new_writes_runs_under_rig_up(tmp_path: Path) -> None:
    """From `rig new agent` to a job done by real processes, as docs/extending.md says."""
    project = tmp_path / "project"
    env = {
        **{k: v for k, v in os.environ.items() if k != "RIG_NATS_URL"},
        "RIG_HOME": str(tmp_path / "home"),
        "RIG_PREFIX": "n" + uuid.uuid4().hex[:8],
        "RIG_LOG_FORMAT": "json",
        "PYTHONPATH": f"{project}{os.pathsep}{ROOT}",
    }
    code, _, err = await run_rig(env, "new", "agent", "helpdesk", "--dir", str(project))
    assert code == 0, err
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "rig"),
        "up",
        "--json",
        "--port",
        "0",
        "--no-gateway",
        "--config",
        "helpdesk.toml",
        env=env,
        cwd=project,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    up = Up(proc, env)
    try:
        ready = await up.until("up.ready", timeout=120)
        env["RIG_NATS_URL"] = ready["url"]
        code, out, err = await run_rig(
            env, "submit", "helpdesk", "--input", '{"text": "hello"}', "--wait", "--json"
        )
        assert code == 0, (out, err)
        assert json.loads(out.splitlines()[-1])["status"] == "succeeded"
        records = list((tmp_path / "home" / "helpdesk-records").glob("*.json"))
        assert len(records) == 1 and json.loads(records[0].read_text())["text"] == "hello"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
