"""Actors for the "nothing stuck" tests: each kind can be made to die on a job's message.

A job's input `{"crash": KIND}` makes the agent (`agent`), the tool (`tool`) or the
verifier (`verifier`) exit as if SIGKILLed whenever it handles that job's message, so
the message comes back until it is dead-lettered. `SlowPay` holds a payment past its
executor's death: a lease (8 s) longer than the deliveries of a test could wait.
"""

from __future__ import annotations

import os
from typing import Any

from actors import Agent, RuleLLM, ToolExecutor, Verifier, tool, verifier
from protocols import Edge, Graph, State, VerifyRequest
from tests.support.crash_tools import CrashTools


def _route(prompt: Any) -> tuple[str, dict[str, Any]]:
    crash = prompt.context.input.get("crash", "")
    if crash == "agent":
        os._exit(137)
    if crash == "code":
        return prompt.context.input["no_such_field"]  # a bug: KeyError
    return "work", {"crash": crash}


class Crashy(Agent):
    """One step: a tool, then a verifier; `give_up` is the safe edge."""

    name = "crashy"
    graph = Graph(
        initial="start",
        states={
            "start": State(
                edges=(
                    Edge(name="work", to="done", tool="crash_work", verifier="crash_check"),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    example_input = {"crash": ""}
    llm = RuleLLM(_route)


class CrashyTools(ToolExecutor):
    name = "crashy-tools"

    @tool(side_effects=False)
    async def crash_work(self, crash: str) -> dict[str, Any]:
        if crash == "tool":
            os._exit(137)
        if crash == "tool-bug":
            return {"value": {}["missing"]}
        return {"worked": True}


class CrashyChecks(Verifier):
    name = "crashy-checks"

    @verifier
    async def crash_check(self, request: VerifyRequest) -> tuple[bool, str]:
        if request.args.get("crash") == "verifier":
            os._exit(137)
        return True, "it worked"


class Payer(Agent):
    """Pays once: `pay` with reconcile, or `pay_blind` (no reconcile) if the input says so."""

    name = "payer"
    graph = Graph(
        initial="start",
        states={
            "start": State(
                edges=(
                    Edge(name="pay", to="paid", tool="slow_pay"),
                    Edge(name="pay_blind", to="paid", tool="slow_pay_blind"),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "paid": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    example_input = {"account": "acct-1", "amount": 5.0}
    llm = RuleLLM(
        lambda p: (
            "pay_blind" if p.context.input.get("blind") else "pay",
            {"account": p.context.input["account"], "amount": p.context.input["amount"]},
        )
    )


class SlowPay(CrashTools):
    """Payments whose lease (8 s) outlasts what three deliveries at a 1 s ack wait span."""

    name = "slow-pay"

    @tool(side_effects=True, timeout=5.0, lease=8.0, reconcile="find_payment")
    async def slow_pay(self, account: str, amount: float) -> dict[str, Any]:
        return await self._pay(account, amount)

    @tool(side_effects=True, timeout=5.0, lease=8.0)
    async def slow_pay_blind(self, account: str, amount: float) -> dict[str, Any]:
        return await self._pay(account, amount)


class Picky(Agent):
    """A verifier that rejects 7 sends the job to a person; `wait` loops back to them."""

    name = "picky"
    graph = Graph(
        initial="start",
        states={
            "start": State(
                edges=(
                    Edge(
                        name="work", to="done", tool="crash_work", verifier="picky", on_fail="human"
                    ),
                    Edge(name="give_up", to="failed"),
                ),
                safe_edge="give_up",
            ),
            "human": State(
                human=True,
                edges=(
                    Edge(name="close", to="failed"),
                    Edge(name="wait", to="human"),
                    Edge(name="retry", to="start"),
                ),
            ),
            "done": State(terminal="succeeded"),
            "failed": State(terminal="failed"),
        },
    )
    example_input = {"n": 1}
    llm = RuleLLM(lambda p: ("work", {"crash": str(p.context.input.get("n"))}))


class PickyChecks(Verifier):
    name = "picky-checks"

    @verifier
    async def picky(self, request: VerifyRequest) -> tuple[bool, str]:
        if request.args.get("crash") == "7":
            return False, "the number 7 is unlucky"
        return True, "fine"
