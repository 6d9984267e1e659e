"""`scripts/demo` is the first command of the README: it must keep working."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


async def test_the_demo_runs_end_to_end() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "scripts" / "demo.py"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode()
    assert proc.returncode == 0, text
    assert text.count("all terminal  yes") == 2
    assert text.count("refunds match the jobs that reached 'done': yes") == 2
    assert "waits for a person" in text and "part 2:" in text
    assert "the tree ended, every child succeeded: yes" in text
    assert "every note written once (a pick of the edge's set of tools) and looked up: yes" in text
