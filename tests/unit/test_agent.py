"""The agent's routing envelope, with an in-memory seam for publishing (no NATS)."""

from __future__ import annotations

from typing import Any

from actors import LLMReply, RoutePrompt
from actors.examples.refund import RefundAgent
from actors.runtime.actor import Delivery
from protocols import Decision, Encoding, JobContext, StepRequest, Usage


class ScriptedLLM:
    """Answers with the given texts in order, and remembers the prompts it saw."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[RoutePrompt] = []

    async def complete(self, prompt: RoutePrompt) -> LLMReply:
        self.prompts.append(prompt)
        return LLMReply(self.answers.pop(0), Usage(input_tokens=10, output_tokens=2))


class Recorder(RefundAgent):
    """The refund agent with its publishes kept in a list instead of sent."""

    def __init__(self, llm: ScriptedLLM) -> None:
        super().__init__()
        self._llm = llm
        self.sent: list[tuple[str, Any, str | None]] = []

    async def publish(
        self,
        subject: str,
        message: Any,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.sent.append((subject, message, msg_id))


def step(state: str = "review") -> StepRequest:
    return StepRequest(
        job_id="j1",
        step=2,
        agent="refund",
        state=state,
        context=JobContext(input={"order_id": "A-1", "amount": 5}),
    )


DELIVERY = Delivery("rig.work.agent.refund", {}, Encoding.MSGPACK, 1)


async def decide(*answers: str) -> tuple[Decision, ScriptedLLM, str | None]:
    llm = ScriptedLLM(*answers)
    agent = Recorder(llm)
    await agent.on_step(step(), DELIVERY)
    [(subject, decision, msg_id)] = agent.sent
    assert subject == "rig.work.supervisor.agent.refund.0"  # one partition, the default
    return decision, llm, msg_id


async def test_a_legal_edge_is_reported_as_chosen() -> None:
    decision, llm, msg_id = await decide('{"edge": "approve", "args": {}}')
    assert (decision.edge, decision.reasks, decision.fallback) == ("approve", 0, False)
    assert msg_id == "j1:2:decision"
    assert [e.name for e in llm.prompts[0].edges] == ["approve", "deny", "escalate"]


async def test_an_illegal_edge_is_reasked_once_with_the_error() -> None:
    """An invented edge is re-asked with the problem named; a legal answer is then used."""
    decision, llm, _ = await decide('{"edge": "refund_everything"}', '{"edge": "deny"}')
    assert (decision.edge, decision.reasks, decision.fallback) == ("deny", 1, False)
    assert "refund_everything" in llm.prompts[1].feedback[0]
    assert decision.usage.input_tokens == 20


async def test_invalid_twice_takes_the_safe_edge() -> None:
    """Still invalid after the re-ask: the state's safe edge, marked as a fallback."""
    decision, _, _ = await decide("I think we should approve", '["approve"]')
    assert (decision.edge, decision.fallback, decision.reasks) == ("escalate", True, 1)
    assert "JSON object" in decision.reason
