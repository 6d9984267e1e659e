"""Memory in one process (`LocalRig`): what a job remembers, the next reads, in its
scope only, and the journal says what each step read (tests/support/keeper.py)."""

from __future__ import annotations

from actors.testing import LocalRig
from actors.tools.memory import MemoryTools
from tests.support.keeper import Keeper


async def test_a_turn_reads_what_an_earlier_one_remembered_in_its_scope() -> None:
    async with LocalRig(Keeper, tools=[MemoryTools]) as rig:
        first = await rig.run({"remember": "name", "value": "Ada"}, job_id="a", thread="c1")
        assert first.status == "succeeded"
        [write] = first.events("tool_result")
        assert write.data["result"]["remembered"] == "name"
        later = await rig.run({}, job_id="b", thread="c1")
        assert later.result is not None and later.result["output"]["known"] == {"name": "Ada"}
        [decision] = later.events("decision")  # the journal says what the step read
        assert [(m["scope"], m["key"], m["value"]) for m in decision.data["memory"]] == [
            ("thread", "name", "Ada")
        ]
        other = await rig.run({}, job_id="c", thread="c2")  # another thread's memory
        assert other.result is not None and other.result["output"]["known"] == {}
        # A user's memory follows the user across threads; global, every job.
        await rig.run(
            {"remember": "tier", "value": "gold", "scope": "user"},
            job_id="d",
            thread="c3",
            labels={"user": "u-7"},
        )
        await rig.run({"remember": "policy", "value": 30, "scope": "global"}, job_id="e")
        seen = await rig.run({}, job_id="f", thread="c4", labels={"user": "u-7"})
        assert seen.result is not None
        assert seen.result["output"]["known"] == {"tier": "gold", "policy": 30}


async def test_a_write_the_job_has_no_scope_for_fails_with_its_code() -> None:
    async with LocalRig(Keeper, tools=[MemoryTools]) as rig:
        run = await rig.run({"remember": "name", "value": "Ada"}, job_id="a")  # no thread
        [result] = run.events("tool_result")
        assert run.status == "failed" and result.data["error"]["code"] == "no_scope"
        big = {"remember": "blob", "value": "x" * 20_000, "scope": "global"}
        run = await rig.run(big, job_id="b")
        [result] = run.events("tool_result")
        assert result.data["error"]["code"] == "memory_too_large"
