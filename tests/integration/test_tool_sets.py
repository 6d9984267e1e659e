"""Many tools without an edge each, across processes: executors publish what they serve
(the catalog, `RIG_TOOLS`), an agent offers a set of tools and lookups from it, and the
supervisor calls only what the set offers; with Rig's own tools, and with a real MCP
server's (`@modelcontextprotocol/server-filesystem`, npm)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.testing import Deployment
from protocols import LOOKUP, Decision, encode
from tests.integration.test_cli import rig_cli
from tests.integration.test_mcp import files as files  # the filesystem server's folder
from tests.integration.test_security import Refusals

pytestmark = pytest.mark.integration

LIBRARY = (
    "actors:Supervisor",
    "tests.support.library:Librarian",
    "tests.support.library:Shelf",
)


async def test_an_agent_looks_up_then_lends_and_the_catalog_says_what_is_served(
    rig: Deployment,
) -> None:
    log = rig.home / "lent.txt"
    rig.extra_env["SHELF_LOG"] = str(log)
    await rig.spawn(*LIBRARY)
    job = await rig.client.submit("librarian", {"title": "dune", "reader": "ada"})
    info = await rig.client.wait(job.job_id, timeout=rig.within())
    assert info.status == "succeeded", info.error
    journal = await rig.client.journal(job.job_id)
    decisions = [e for e in journal if e.type == "decision"]
    assert [(e.data["edge"], e.data["tool"], e.step) for e in decisions] == [
        (LOOKUP, "find_book", 1),
        (LOOKUP, "count_books", 2),
        ("act", "lend_book", 3),
    ]
    assert log.read_text() == "dune ada\n"

    catalog = {(e.executor, e.tool): e.side_effects for e in await rig.client.catalog()}
    assert catalog == {
        ("shelf", "count_books"): False,
        ("shelf", "find_book"): False,
        ("shelf", "lend_book"): True,
        ("shelf", "return_book"): True,
    }
    code, out, err = await rig_cli(rig, "graph", "librarian", "--lint", "--deployed", "--json")
    assert code == 0, err
    assert json.loads(out)["unserved"] == []


async def test_a_forged_pick_is_not_called_and_no_executor_claims_another_s_tools(
    rig: Deployment,
) -> None:
    """A decision naming a tool the edge does not offer (an agent's seed in the wrong
    hands) takes the safe edge; an executor may write its own catalog entries only, so
    it cannot slip a tool into another executor's set."""
    log = rig.home / "lent.txt"
    rig.extra_env["SHELF_LOG"] = str(log)
    await rig.spawn("actors:Supervisor", "tests.support.library:Shelf")
    await rig.grant("tests.support.library:Librarian")
    # The librarian registered, its process gone: the test decides in its place.
    [agent] = await rig.spawn("tests.support.library:Librarian")
    agent.terminate()
    await agent.wait()
    job = await rig.client.submit("librarian", {"title": "dune", "reader": "ada"})
    forged = Decision(
        job_id=job.job_id, step=1, edge="act", tool="find_book", args={"title": "dune"}
    )
    await rig.nc.jetstream().publish(
        rig.names.report("agent", "librarian", job.job_id), encode(forged)
    )
    info = await rig.client.wait(job.job_id, timeout=rig.within())
    assert info.status == "failed" and info.state == "failed"
    [decision] = [e for e in await rig.client.journal(job.job_id) if e.type == "decision"]
    assert decision.data["edge"] == "give_up" and decision.data["fallback"]
    assert "tool 'find_book' is not one of the tools edge 'act' offers" in decision.data["reason"]
    assert not log.exists()

    shelf = Refusals()
    nc = await shelf.connect(rig, "tools-shelf")
    try:
        tools = rig.names.tools_bucket
        await shelf.tried([f"$KV.{tools}.file-tools.find_book", f"$KV.{tools}.shelf.other"])
    finally:
        await nc.close()


async def test_an_agent_looks_around_an_mcp_server_and_writes_through_its_set(
    rig: Deployment, files: Path
) -> None:
    (files / "notes.md").write_text("buy milk\n")
    await rig.spawn(
        "actors:Supervisor",
        "tests.support.mcp_agents:Archivist",
        "tests.support.mcp_agents:FileTools",
    )
    job = await rig.client.submit("archivist", {"root": str(files)})
    info = await rig.client.wait(job.job_id, timeout=rig.within())
    assert info.status == "succeeded", info.error
    assert info.result is not None and info.result["output"] == {"text": "saved after 2 lookups"}
    assert (files / "summary.md").read_text() == "files: True; notes: True\n"
    journal = await rig.client.journal(job.job_id)
    calls = [(e.data["edge"], e.data["tool"]) for e in journal if e.type == "decision"]
    assert calls == [
        (LOOKUP, "list_directory"),
        (LOOKUP, "read_text_file"),
        ("save", "write_file"),
        ("say", None),
    ]
    assert all(e.data["ok"] for e in journal if e.type == "tool_result")
    # Only the write has side effects (at most once); lookups may only call the others.
    served = {e.tool: e.side_effects for e in await rig.client.catalog()}
    assert served == {"list_directory": False, "read_text_file": False, "write_file": True}
