"""Memory in a deployment (`Agent.memory`, `actors.tools.memory`): what a job remembers
the next reads, the journal says what each step read, an entry is gone at its TTL, and a
write is made once when its executor dies making it (tests/support/keeper.py)."""

from __future__ import annotations

import json

import pytest

from actors.testing import Deployment, eventually
from protocols import JobInfo
from tests.chaos.test_production_timings import spawn_doomed
from tests.integration.test_cli import rig_cli
from tests.integration.test_cli_user import one_clean_line

pytestmark = pytest.mark.integration

KEEPER = ("actors:Supervisor", "tests.support.keeper:Keeper")


async def ask(rig: Deployment, job_input: dict, **submit: object) -> JobInfo:
    reply = await rig.client.submit("keeper", job_input, **submit)  # type: ignore[arg-type]
    return await rig.client.wait(reply.job_id, timeout=rig.within(60))


async def test_what_a_turn_remembers_the_next_reads_and_the_journal_shows_it(
    rig: Deployment,
) -> None:
    await rig.spawn(*KEEPER, "actors.tools.memory:MemoryTools")
    first = await ask(rig, {"remember": "order", "value": "A-1"}, thread="conv")
    assert first.status == "succeeded"
    later = await ask(rig, {}, thread="conv")
    assert later.result is not None and later.result["output"]["known"] == {"order": "A-1"}
    journal = await rig.client.journal(later.job_id)
    [decision] = [e for e in journal if e.type == "decision"]
    [read] = decision.data["memory"]
    assert (read["scope"], read["key"], read["value"]) == ("thread", "order", "A-1")
    other = await ask(rig, {}, thread="elsewhere")
    assert other.result is not None and other.result["output"]["known"] == {}
    # A user's memory follows them into another thread (the CLI's --label user=...).
    tier = json.dumps({"remember": "tier", "value": "gold", "scope": "user"})
    args = ("--thread", "x1", "--label", "user=ada", "--wait")
    code, _, err = await rig_cli(rig, "submit", "keeper", "--input", tier, *args)
    assert code == 0, err
    theirs = await ask(rig, {}, thread="x2", labels={"user": "ada"})
    assert theirs.result is not None and theirs.result["output"]["known"] == {"tier": "gold"}
    code, _, err = await rig_cli(rig, "submit", "keeper", "--input", "{}", "--label", "user")
    one_clean_line(code, err, contains="--label 'user': give KEY=VALUE")


async def test_an_entry_is_gone_once_its_ttl_passed(rig: Deployment) -> None:
    await rig.spawn(*KEEPER, "actors.tools.memory:MemoryTools")
    kept = await ask(rig, {"remember": "code", "value": 4711, "ttl_s": 1}, thread="t")
    journal = await rig.client.journal(kept.job_id)
    [result] = [e for e in journal if e.type == "tool_result"]
    assert result.data["result"] == {"remembered": "code", "scope": "thread", "ttl_s": 1}
    stream = await rig.nc.jetstream().stream_info(f"KV_{rig.names.memory_bucket}")
    assert stream.state.last_seq == 1  # it was written

    async def gone() -> bool:
        later = await ask(rig, {}, thread="t")
        assert later.result is not None
        return later.result["output"]["known"] == {}

    # The server drops it at its TTL (whole seconds): a step reads nothing after.
    await eventually(gone, timeout=rig.within(10), message="the entry outlived its TTL")


async def test_a_write_is_made_once_when_its_executor_dies_making_it(rig: Deployment) -> None:
    """The memory executor dies after each first write, before the ledger recorded it:
    its successor reconciles (the entry names the call that wrote it). Three jobs, three
    writes: the bucket's stream counts every write ever made."""
    await rig.spawn(*KEEPER)
    infos = []
    for n in range(3):
        doomed = await spawn_doomed(rig, "actors.tools.memory:MemoryTools", "after_effect:remember")
        reply = await rig.client.submit("keeper", {"remember": f"k{n}", "value": n}, thread=f"w{n}")
        assert await doomed.wait() == 137
        (rig.home / "crashed-after_effect:remember").unlink()
        [alive] = await rig.spawn("actors.tools.memory:MemoryTools")
        infos.append(await rig.client.wait(reply.job_id, timeout=rig.within(60)))
        alive.kill()
        await alive.wait()
    assert [info.status for info in infos] == ["succeeded"] * 3
    stream = await rig.nc.jetstream().stream_info(f"KV_{rig.names.memory_bucket}")
    assert stream.state.last_seq == 3  # one write per job, none made twice
    for n, info in enumerate(infos):
        later = await ask(rig, {}, thread=f"w{n}")
        assert later.result is not None and later.result["output"]["known"] == {f"k{n}": n}
        journal = await rig.client.journal(info.job_id)
        [result] = [e for e in journal if e.type == "tool_result"]
        assert result.data["result"]["remembered"] == f"k{n}"
