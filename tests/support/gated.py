"""Test actors: a refund agent whose LLM waits at a gate the test opens.

The LLM announces on `<prefix>.test.thinking` (with its pid) that it has a step in
hand, then waits for any message on `<prefix>.test.gate`. Tests use it to kill an
agent process at a known moment: in the middle of a job.
"""

from __future__ import annotations

import os

from actors import LLM, LLMReply, RoutePrompt
from actors.examples.refund import RefundAgent, route
from protocols import Graph, Names, encode
from protocols._permissions import Role


class GatedLLM:
    def __init__(self, agent: GatedAgent, inner: LLM) -> None:
        self._agent = agent
        self._inner = inner

    async def complete(self, prompt: RoutePrompt) -> LLMReply:
        if prompt.state == "review":
            prefix = self._agent.names.prefix
            gate = await self._agent.nc.subscribe(f"{prefix}.test.gate")
            await self._agent.nc.publish(f"{prefix}.test.thinking", encode({"pid": os.getpid()}))
            await gate.next_msg(timeout=60)
            await gate.unsubscribe()
        return await self._inner.complete(prompt)


class GatedAgent(RefundAgent):
    name = "gated"
    graph = RefundAgent.graph
    example_input = RefundAgent.example_input

    @classmethod
    def role(cls, names: Names, graphs: list[Graph]) -> Role:
        """An agent's, and the test's gate: it says it is thinking, and waits to go on."""
        test = f"{names.prefix}.test"
        return (
            super()
            .role(names, graphs)
            .plus(publish=[f"{test}.thinking"], subscribe=[f"{test}.gate"])
        )

    def create_llm(self) -> LLM:
        return GatedLLM(self, super().create_llm())


__all__ = ["GatedAgent", "route"]
