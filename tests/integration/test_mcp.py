"""MCP servers' tools behind Rig's ledger, with real servers nobody here wrote:
`mcp-server-time` (PyPI) and `@modelcontextprotocol/server-filesystem` (npm), each run
by an `McpTools` executor process (tests/support/mcp_agents.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from actors.testing import Deployment, eventually
from protocols import ToolCall, ToolResult, decode_as, encode
from tests.integration.test_cli import rig_cli
from tests.support.mcp_agents import NPM_BIN, TOOLS_BIN

pytestmark = pytest.mark.integration

TIME = (
    "actors:Supervisor",
    "tests.support.mcp_agents:TimeAgent",
    "tests.support.mcp_agents:TimeTools",
)
FILES = (
    "actors:Supervisor",
    "tests.support.mcp_agents:FileAgent",
    "tests.support.mcp_agents:FileTools",
)


@pytest.fixture
def files(rig: Deployment, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the filesystem server may touch (`$RIG_TEST_FILES`, for the server the
    deployment's grants list and for the executor's)."""
    folder = rig.home / "files"
    folder.mkdir()
    monkeypatch.setenv("RIG_TEST_FILES", str(folder))
    rig.extra_env["RIG_TEST_FILES"] = str(folder)
    return folder


async def call(
    rig: Deployment, tool: str, args: dict[str, object], *, job: str, step: int = 1
) -> ToolResult:
    """Send one `ToolCall` as the supervisor would, and read the executor's report."""
    reports = await rig.nc.subscribe(rig.names.report("tool", tool, job))
    await rig.nc.jetstream().publish(
        rig.names.tool(tool),
        encode(ToolCall(job_id=job, step=step, tool=tool, args=args)),
        headers={"Nats-Msg-Id": f"probe-{job}-{step}"},
    )
    try:
        return decode_as(ToolResult, (await reports.next_msg(timeout=rig.within())).data)[0]
    finally:
        await reports.unsubscribe()


async def test_an_agent_routes_through_a_read_only_mcp_tool(rig: Deployment) -> None:
    await rig.spawn(*TIME)
    job = await rig.client.submit("clock", {"timezone": "Europe/Paris"})
    info = await rig.client.wait(job.job_id, timeout=rig.within())
    assert info.status == "succeeded", info.error
    assert info.result is not None
    found = info.result["results"]["get_current_time"]
    assert found["timezone"] == "Europe/Paris" and "datetime" in found  # structured content
    assert info.result["output"]["text"].startswith("it is ")
    [done] = [e for e in await rig.client.journal(job.job_id) if e.type == "tool_result"]
    assert done.data["ok"] and done.data["tool"] == "get_current_time"


async def test_an_mcp_tool_with_side_effects_runs_once_and_bad_input_never_reaches_it(
    rig: Deployment, files: Path
) -> None:
    """write_file is not read-only: through the ledger, at most once (a repeat of the
    call is answered from the ledger); arguments that do not fit its schema are refused
    before the server sees them; a call the server refuses is the tool's failure; a tool
    not allowed is not served."""
    await rig.spawn(*FILES)
    target = files / "note.txt"
    job = await rig.client.submit(
        "filer", {"path": str(target), "content": "first"}, job_id="file-1"
    )
    info = await rig.client.wait(job.job_id, timeout=rig.within())
    assert info.status == "succeeded", info.error
    assert info.result is not None and info.result["output"] == {"text": "first"}
    assert target.read_text() == "first"

    args = {"path": str(target), "content": "first"}
    # The same call again (as a redelivery would bring it; another step, so that its
    # report is not a duplicate the stream drops): the ledger's answer, nothing runs.
    again = await call(rig, "write_file", args, job="file-1", step=7)
    assert again.ok and again.ledger == "hit"
    target.write_text("changed by hand")
    assert (await call(rig, "write_file", args, job="file-1", step=8)).ledger == "hit"
    assert target.read_text() == "changed by hand"  # nothing ran again

    bad = await call(rig, "write_file", {"path": str(target)}, job="file-2")
    assert not bad.ok and bad.error is not None and bad.error["code"] == "invalid_args"
    assert "content" in bad.error["message"]
    outside = await call(rig, "read_text_file", {"path": "/etc/hostname"}, job="file-3")
    assert not outside.ok and outside.error is not None
    assert "outside allowed directories" in outside.error["message"] or "denied" in (
        outside.error["message"].lower()
    ), outside.error


async def test_rig_mcp_ls_says_how_each_tool_is_served(rig: Deployment, files: Path) -> None:
    code, out, err = await rig_cli(
        rig, "mcp", "ls", "--json", "--", str(TOOLS_BIN / "mcp-server-time")
    )
    assert code == 0, err
    assert {t["tool"]: t["ledger"] for t in json.loads(out)} == {
        "get_current_time": "may run again",
        "convert_time": "may run again",
    }
    code, out, err = await rig_cli(
        rig, "mcp", "ls", "--class", "tests.support.mcp_agents:FileTools", "--json"
    )
    assert code == 0, err
    assert {t["tool"]: t["side_effects"] for t in json.loads(out)} == {
        "write_file": True,
        "read_text_file": False,
        "list_directory": False,
    }
    code, out, err = await rig_cli(rig, "mcp", "ls", "--", str(NPM_BIN / "no-such-server"))
    assert code == 2 and "could not list the tools" in err and "Traceback" not in err


def ledger_states(home: Path, job_id: str) -> list[str]:
    """The states of the job's records in the executor's ledger."""
    with contextlib.closing(sqlite3.connect(home / "ledger.sqlite3")) as db:
        rows = db.execute("SELECT state FROM ledger WHERE job_id = ?", (job_id,)).fetchall()
    return [row[0] for row in rows]


async def kill_server_mid_call(rig: Deployment, executor: Any, job_id: str) -> int:
    """Once the job's call is claimed (the executor is about to ask the server, or
    asking it), SIGKILL the executor's MCP server; return how many it killed."""

    async def claimed() -> bool:
        return await asyncio.to_thread(ledger_states, rig.home, job_id) == ["in_progress"]

    await eventually(claimed, timeout=rig.within(), message="the call is claimed")
    servers = [
        child
        for child in psutil.Process(executor.pid).children(recursive=True)
        if "mcp-server-everything" in " ".join(child.cmdline())
    ]
    for server in servers:
        server.kill()
    return len(servers)


@pytest.mark.parametrize(
    ("executor", "ends"),
    [
        # Read-only as the server says: asked again of a new server, and done.
        ("EverythingTools", "succeeded"),
        # Declared to have side effects: it may have acted, so a person decides.
        ("EverythingEffects", "waiting_human"),
    ],
)
async def test_the_server_killed_mid_call(rig: Deployment, executor: str, ends: str) -> None:
    rig.extra_env["RIG_ACK_WAIT"] = "5"
    [_, _, proc] = await rig.spawn(
        "actors:Supervisor",
        "tests.support.mcp_agents:LongAgent",
        f"tests.support.mcp_agents:{executor}",
    )
    job = await rig.client.submit("long", {"seconds": 20}, job_id="long-1")
    assert await kill_server_mid_call(rig, proc, job.job_id) >= 1
    info = await rig.client.wait(job.job_id, timeout=rig.within(60))
    assert info.status == ends, info
    if ends == "waiting_human":
        assert info.waiting is not None and info.waiting.kind == "effect_unknown"
        assert "may or may not have run" in info.waiting.reason
        assert ledger_states(rig.home, job.job_id) == ["unknown"]
    else:
        assert ledger_states(rig.home, job.job_id) == ["succeeded"]
    # The executor started a new server, and goes on serving.
    quick = await rig.client.submit("long", {"seconds": 0.1}, job_id="long-2")
    assert (await rig.client.wait(quick.job_id, timeout=rig.within(30))).status == "succeeded"


async def test_a_server_that_hangs_or_answers_garbage_is_cut_off_and_the_rest_served(
    rig: Deployment,
) -> None:
    """A call the server never answers, and one answered with a line that is not JSON,
    end in typed failures within the tool's timeout (3 s); the executor keeps serving."""
    await rig.spawn("tests.support.mcp_agents:BadTools")
    for n, tool in enumerate(("hang", "garble")):
        result = await call(rig, tool, {}, job=f"bad-{n}")
        assert not result.ok and result.error is not None
        assert result.error["code"] == "timeout", result.error
    fine = await call(rig, "ok", {}, job="bad-2")
    assert fine.ok and fine.result == {"text": "fine"}


async def test_a_git_commit_through_mcp_happens_once_however_often_it_is_asked(
    rig: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mcp-server-git's git_commit is not idempotent (asked twice, it would commit
    twice): through the ledger, the same call asked again is answered, not run."""
    repo = rig.home / "repo"
    for command in (
        ["git", "init", "-q", str(repo)],
        ["git", "-C", str(repo), "config", "user.email", "rig@example.com"],
        ["git", "-C", str(repo), "config", "user.name", "Rig"],
    ):
        await asyncio.to_thread(subprocess.run, command, check=True)
    (repo / "a.txt").write_text("hello\n")
    monkeypatch.setenv("RIG_TEST_REPO", str(repo))
    rig.extra_env["RIG_TEST_REPO"] = str(repo)
    await rig.spawn("tests.support.mcp_agents:GitTools")
    added = await call(rig, "git_add", {"repo_path": str(repo), "files": ["a.txt"]}, job="git-1")
    assert added.ok, added.error
    commit = {"repo_path": str(repo), "message": "the first"}
    first = await call(rig, "git_commit", commit, job="git-1", step=2)
    assert first.ok and first.ledger == "miss", first.error
    for step in (3, 4):  # the same call again, as a redelivery or a replay would ask it
        again = await call(rig, "git_commit", commit, job="git-1", step=step)
        assert again.ok and again.ledger == "hit" and again.result == first.result
    count = await asyncio.to_thread(
        subprocess.run,
        ["git", "-C", str(repo), "rev-list", "--count", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert count.stdout.strip() == "1"
    status = await call(rig, "git_status", {"repo_path": str(repo)}, job="git-2")
    assert status.ok and "nothing to commit" in str(status.result)


async def test_rig_graph_lint_names_the_tools_no_executor_of_the_config_serves(
    rig: Deployment,
) -> None:
    """An MCP executor's tools are its server's, asked when the graph is linted."""
    served, unserved = rig.home / "served.toml", rig.home / "unserved.toml"
    served.write_text('[[actor]]\nclass = "tests.support.mcp_agents:TimeTools"\n')
    unserved.write_text('[[actor]]\nclass = "tests.support.family:ResearchTools"\n')
    agent = "tests.support.mcp_agents:TimeAgent"
    code, out, err = await rig_cli(rig, "graph", agent, "--lint", "--config", str(served))
    assert code == 0, (out, err)
    code, out, err = await rig_cli(
        rig, "graph", agent, "--lint", "--config", str(unserved), "--json"
    )
    assert code == 1, (out, err)
    assert json.loads(out)["unserved"] == [
        {"tool": "get_current_time", "edge": "now", "state": "ask"}
    ]
