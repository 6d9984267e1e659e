"""`actors.testing`: a whole job in one process, with the supervisor's rules, the real
ledger in a temporary file, retries and dead letters as a consumer has them, and asserts
that tell the story of a job that went elsewhere."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors import ToolExecutor, tool, tool_context
from actors.examples.refund import RefundAgent, RefundChecks, RefundTools
from actors.testing import (
    LocalRig,
    ScriptedLLM,
    ScriptExhausted,
    Text,
    assert_edges,
    assert_path,
    assert_status,
    path_of,
    run_job,
)
from examples.greeter import GreeterAgent, GreeterChecks, GreeterTools
from protocols import RetryableError, SchemaError

GREETER = {"tools": [GreeterTools], "verifiers": [GreeterChecks]}
REFUND = {"tools": [RefundTools], "verifiers": [RefundChecks]}
ASKED = {"order_id": "A-1001", "amount": 25.0, "reason": "damaged"}


class FlakyGreetings(ToolExecutor):
    """`compose_greeting` that fails retryably every time (no side effects)."""

    name = "flaky-greetings"

    @tool(side_effects=False)
    async def compose_greeting(self, who: str) -> dict[str, str]:
        raise RetryableError("the greeting service is down")


class HalfDoneRefunds(RefundTools):
    """`issue_refund` that acts, then fails as if the connection dropped: the ledger
    cannot know whether the effect happened."""

    name = "half-done-refunds"
    calls = 0

    @tool(side_effects=True)
    async def issue_refund(self, order_id: str, amount: float) -> dict[str, Any]:
        HalfDoneRefunds.calls += 1
        assert tool_context().key  # a real idempotency key, as production gives
        raise RetryableError("the bank hung up after the request")


async def test_a_job_runs_to_its_end_with_its_journal() -> None:
    run = await run_job(RefundAgent, ASKED, **REFUND)
    assert run.status == "succeeded" and run.state == "done"
    assert run.path == ["triage", "review", "refunding", "done"]
    assert run.edges == ["lookup", "approve", "refund"]
    types = [event.type for event in run.journal]
    assert types[:2] == ["accepted", "started"] and types[-1] == "status"
    assert [event.seq for event in run.journal] == list(range(1, len(run.journal) + 1))
    [lookup, refund] = run.events("tool_result")
    assert lookup.data["ledger"] == "miss" and refund.data["tool"] == "issue_refund"
    assert run.usage.tokens > 0  # RuleLLM's estimate, as budgets see it


async def test_a_scripted_model_is_re_asked_then_the_safe_edge_is_taken() -> None:
    model = ScriptedLLM(["lookup", Text("I would rather not"), "escalate"])
    run = await run_job(RefundAgent, ASKED, llm=model, **REFUND)
    # `lookup` without arguments: the edge's args model refuses it; the model is asked
    # again, writes prose, and the state's safe edge (`escalate`) is taken.
    assert_path(run, ["triage", "human"])
    [decision] = run.events("decision")
    assert decision.data["fallback"] and decision.data["reasks"] == 1
    assert [len(p.feedback) for p in model.prompts] == [0, 1]
    assert "order_id" in model.prompts[1].feedback[0]
    assert run.status == "waiting_human"


async def test_a_script_that_runs_out_fails_the_test_saying_where() -> None:
    with pytest.raises(ScriptExhausted, match="asked for answer 2, in state 'review'"):
        await run_job(
            RefundAgent, ASKED, llm=ScriptedLLM([("lookup", {"order_id": "A-1001"})]), **REFUND
        )


async def test_an_async_script_sees_each_prompt() -> None:
    async def decide(prompt: Any) -> Any:
        if prompt.state == "triage":
            return ("lookup", {"order_id": prompt.context.input["order_id"]})
        return "deny"

    run = await run_job(RefundAgent, ASKED, llm=ScriptedLLM(decide), **REFUND)
    assert_edges(run, ["lookup", "deny"])
    assert_status(run, "succeeded")


async def test_a_model_that_stays_down_is_retried_then_a_person_is_told() -> None:
    model = ScriptedLLM(lambda prompt: RetryableError("503 from the provider"))
    run = await run_job(GreeterAgent, {"who": "Ada"}, llm=model, **GREETER)
    assert len(model.prompts) == 10  # RIG_MAX_DELIVER deliveries, as a consumer gives
    assert run.events("decision") == []
    assert run.escalation is not None and run.escalation.kind == "dead_letter"
    assert "503 from the provider" in run.escalation.reason


async def test_a_tool_that_keeps_failing_is_dead_lettered_and_a_person_is_told() -> None:
    run = await run_job(
        GreeterAgent, {"who": "Ada"}, tools=[FlakyGreetings], verifiers=[GreeterChecks]
    )
    assert_status(run, "waiting_human")
    assert run.escalation is not None and run.escalation.kind == "dead_letter"
    assert "after 10 deliveries: the greeting service is down" in run.escalation.reason


async def test_an_effect_of_unknown_outcome_is_not_run_again() -> None:
    HalfDoneRefunds.calls = 0
    run = await run_job(RefundAgent, ASKED, tools=[HalfDoneRefunds], verifiers=[RefundChecks])
    assert HalfDoneRefunds.calls == 1  # the ledger held every redelivery back
    assert_status(run, "waiting_human")
    [_lookup, refund] = run.events("tool_result")
    assert refund.data["error"]["code"] == "effect_unknown"


async def test_a_person_resolves_and_cancels() -> None:
    big = {**ASKED, "amount": 650.0}
    run = await run_job(RefundAgent, big, **REFUND)
    assert run.escalation is not None and run.escalation.kind == "human_state"
    await run.resolve("close", note="not this time", by="lead")
    assert_path(run, ["triage", "review", "human", "denied"])
    [resolved] = run.events("resolved")
    assert resolved.data["by"] == "lead" and resolved.data["note"] == "not this time"

    other = await run_job(RefundAgent, big, job_id="job-2", **REFUND)
    await other.cancel("the customer withdrew")
    assert other.status == "cancelled" and other.error is not None
    assert other.error["message"] == "the customer withdrew"


async def test_budgets_and_the_deadline_hold() -> None:
    run = await run_job(RefundAgent, ASKED, limits={"max_steps": 1}, **REFUND)
    assert run.status == "step_limit", run.snapshot

    async def never(prompt: Any) -> Any:
        await asyncio.Event().wait()  # a model that does not answer

    slow = await run_job(
        GreeterAgent, {"who": "Ada"}, llm=ScriptedLLM(never), limits={"deadline_s": 0.2}, **GREETER
    )
    assert slow.status == "deadline_exceeded", slow.snapshot


async def test_mistakes_in_a_test_get_clear_errors() -> None:
    with pytest.raises(TypeError, match=r"names tool 'compose_greeting'.*no class given"):
        await run_job(GreeterAgent, {"who": "Ada"}, verifiers=[GreeterChecks])
    with pytest.raises(SchemaError):
        await run_job(GreeterAgent, {"who": float("nan")}, **GREETER)


async def test_a_path_that_differs_says_where_and_why() -> None:
    run = await run_job(RefundAgent, {**ASKED, "amount": 5000.0}, **REFUND)
    with pytest.raises(AssertionError) as failure:
        assert_path(run, ["triage", "review", "refunding", "done"])
    message = str(failure.value)
    assert "differs at state 3: expected 'refunding', got 'denied'" in message
    assert "actual:   triage -> review -> denied" in message
    assert "decision in review: edge deny" in message
    # The same reading of a journal as `rig watch --json` prints it.
    plain = [event.model_dump(mode="json") for event in run.journal]
    assert path_of(plain) == run.path


async def test_one_rig_runs_many_jobs_and_keeps_one_ledger() -> None:
    async with LocalRig(RefundAgent, **REFUND) as rig:
        runs = [await rig.run({**ASKED, "amount": float(n)}, job_id=f"job-{n}") for n in (1, 2)]
        again = await rig.run({**ASKED, "amount": 1.0}, job_id="job-1")  # the same job id
    assert [run.status for run in runs] == ["succeeded", "succeeded"]
    refunds = [e for e in again.events("tool_result") if e.data["tool"] == "issue_refund"]
    assert refunds[0].data["ledger"] == "hit"  # recorded by the first job-1: not run again


class Polite(GreeterAgent):
    """The greeter with words of its own for the model, and its own prompt text."""

    name = "polite"
    instructions = "You are the front desk of a small hotel. Greet every guest."

    def render_prompt(self, prompt: Any) -> str:
        who = prompt.context.input.get("who")
        return f"A guest named {who} walked in.\n{prompt.standard()}"


async def test_an_agent_says_what_it_is_and_renders_its_own_prompt() -> None:
    from actors.models.router import ModelRouter

    model = ScriptedLLM([("greet", {"who": "Ada"})])
    run = await run_job(Polite, {"who": "Ada"}, llm=model, **GREETER)
    assert run.status == "succeeded"
    [prompt] = model.prompts
    assert prompt.instructions == Polite.instructions
    assert prompt.render().startswith("A guest named Ada walked in.\nYou are routing a job")
    # What a model provider is sent: Rig's rule, then the agent's words; its prompt text.
    system, user = ModelRouter.request(prompt).messages
    assert system["content"].endswith(
        "\n\nYou are the front desk of a small hotel. Greet every guest."
    )
    assert user["content"] == prompt.render()


async def test_the_model_sees_why_earlier_decisions_went_as_they_did() -> None:
    """A refund the tool refused goes to a person, who sends it back with a note: the
    model's next question carries both, in the job's context and so in its prompt."""
    model = ScriptedLLM(
        [
            ("lookup", {"order_id": "A-1001"}),
            "approve",
            ("refund", {"order_id": "A-1001", "amount": 99.0}),
            ("refund", {"order_id": "A-1001", "amount": 25.0}),
        ]
    )
    run = await run_job(RefundAgent, ASKED, llm=model, **REFUND)
    assert run.status == "waiting_human"
    await run.resolve("approve", note="the customer asked for 25, not 99", by="lead")
    assert run.status == "succeeded"
    last = model.prompts[-1].context.decisions
    assert [(d["step"], d["state"], d["edge"], d["by"]) for d in last] == [
        (1, "triage", "lookup", "llm"),
        (2, "review", "approve", "llm"),
        (3, "refunding", "refund", "llm"),
        (4, "human", "approve", "human"),
    ]
    assert "more than the 25 the customer asked for" in last[2]["outcome"]
    assert last[3]["reason"] == "the customer asked for 25, not 99"
    assert "the customer asked for 25, not 99" in model.prompts[-1].render()


async def test_a_model_built_for_a_deployment_asks_for_one_in_a_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.chain import CodedChain
    from tests.support.looper import LooperTools

    monkeypatch.setenv("RIG_TEST_LLM_URL", "http://127.0.0.1:9/v1")  # never called

    with pytest.raises(
        RuntimeError, match=r"router\(\) needs a running agent.*give the job an llm="
    ):
        await run_job(CodedChain, {"n": 1}, tools=[LooperTools])
    run = await run_job(CodedChain, {"n": 1}, llm=ScriptedLLM(["give_up"]), tools=[LooperTools])
    assert run.path == ["a", "gave_up"]
