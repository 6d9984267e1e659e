"""Threads in one process (`LocalRig`): turns in order, each with the turns before it in
its context, one at a time, as a deployment runs them (tests/support/chat.py)."""

from __future__ import annotations

from actors.examples.refund import RefundTools
from actors.examples.support import CONVERSATION, SupportAgent
from actors.testing import LocalRig
from tests.support.chat import Chatter, Compactor


async def test_turns_of_a_thread_see_the_turns_before_them() -> None:
    async with LocalRig(Chatter) as rig:
        runs = [
            # Ids as long as a deployment's (uuid hex): the budget counts them too.
            await rig.run({"text": f"t{n}"}, job_id=f"{n:032x}", thread="conv")
            for n in range(4)
        ]
    assert [run.status for run in runs] == ["succeeded"] * 4
    seen = [run.result["output"]["seen"] for run in runs if run.result]
    assert seen == [[], ["t0"], ["t0", "t1"], ["t1", "t2"]]  # the budget holds two
    assert [t.job_id for t in rig.threads["conv"].turns] == [r.job_id for r in runs]


async def test_a_turn_waits_while_the_one_before_waits_for_a_person() -> None:
    async with LocalRig(Chatter) as rig:
        first = await rig.run({"text": "help", "ask": True}, job_id="a", thread="conv")
        assert first.status == "waiting_human"
        second = await rig.run({"text": "later"}, job_id="b", thread="conv")
        assert second.status == "accepted"  # its turn has not come
        refused = await rig.run({"text": "now"}, job_id="c", thread="conv", thread_busy="refuse")
        assert refused.status == "failed" and refused.error is not None
        assert refused.error["code"] == "thread_busy"
        await first.resolve("go_on", note="fine")
        assert first.status == "succeeded"
        assert second.status == "succeeded" and second.result is not None
        assert second.result["output"]["seen"] == ["help"]
        assert rig.threads["conv"].active is None


async def test_older_turns_are_summarised_once_and_the_newest_kept_within_the_budget() -> None:
    async with LocalRig(Compactor) as rig:
        runs = [
            await rig.run({"text": f"t{n}"}, job_id=f"{n:032x}", thread="conv") for n in range(8)
        ]
    assert [run.status for run in runs] == ["succeeded"] * 8
    budget = Compactor.thread_tokens * 4  # characters: four a token
    for n, run in enumerate(runs):
        assert run.result is not None
        said = run.result["output"]
        assert said["context_chars"] <= budget  # counted at every turn
        # Nothing is lost: the summary covers the older turns, the context the newest.
        assert said["summary"] + said["seen"] == [f"t{k}" for k in range(n)]
    compacted = [run for run in runs if run.events("compacted")]
    assert len(compacted) >= 2  # the thread outgrew its budget more than once
    for run in compacted:  # one summarising step, first, then the turn itself
        [event] = run.events("compacted")
        assert run.path[:2] == ["summarise", "start"] and run.edges[0] == "summarised"
        assert event.data["summary"]["covers"] == [f"t{k}" for k in range(event.data["through"])]
    record = rig.threads["conv"]
    assert record.compactions == len(compacted) and record.summary is not None
    assert record.summary.job_id == compacted[-1].job_id


async def test_a_support_conversation_finds_its_order_in_earlier_turns() -> None:
    """The real-model conversation (tests/integration/test_real_model.py) with the
    agent's own rule for a model: the later turns name no order, the agent takes the
    first turn's; the dispute goes to a person, and the thread goes on after it."""
    async with LocalRig(SupportAgent, tools=[RefundTools]) as rig:
        runs = []
        for n, said in enumerate(CONVERSATION):
            runs.append(await rig.run(said, job_id=f"turn-{n}", thread="cust-1"))
        assert [run.status for run in runs] == ["succeeded", "succeeded", "waiting_human"]
        for run in runs:  # the first decision of each: which order it is about
            assert run.events("decision")[0].data["args"]["order_id"] == "A-4711"
        assert runs[1].result is not None
        assert runs[1].result["output"] == {"order_id": "A-4711", "status": "delivered"}
        assert runs[2].path == ["read", "person"]  # the dispute: a person takes it
        await runs[2].resolve("close", note="refund sent by hand")
        after = await rig.run({"text": "thanks, and its status now?"}, job_id="t3", thread="cust-1")
        assert after.result is not None and after.result["output"]["order_id"] == "A-4711"
