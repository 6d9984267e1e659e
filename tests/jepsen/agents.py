"""The Jepsen run's workload: an agent that pays once per job through a bank on the client
host, then ends, waits for a person, or waits for a signal.

    start --pay--> paid --finish--> done
                     |--review--> human --approve--> done / --deny--> denied
                     '--hold--> waiting (signal `go`) --finish--> done

The bank (`Bank`, served by the test process on the client host's address) is the
effects sink: every request is recorded with its idempotency key, the host that sent it
and when, so the checker sees whether Rig asked twice. Like a payment API it moves
money once per key and answers a repeat with the first payment; `find_payment` asks it
by key (the ledger's reconcile after a crash or a lost answer).
"""

from __future__ import annotations

import os
import time
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM, ToolExecutor, Verifier, tool, tool_context, verifier
from protocols import Edge, Graph, State, VerifyRequest


class PayArgs(BaseModel):
    account: str
    amount: float


def route(prompt: RoutePrompt) -> str | tuple[str, dict[str, Any]]:
    said = prompt.context.input
    if prompt.state == "start":
        return "pay", {"account": said["account"], "amount": said["amount"]}
    return {"human": "review", "signal": "hold"}.get(said.get("mode", ""), "finish")


class LedgerAgent(Agent):
    name = "jepsen"
    graph = Graph(
        initial="start",
        states={
            "start": State(
                edges=(
                    Edge(
                        name="pay",
                        to="paid",
                        tool="pay",
                        args=PayArgs,
                        verifier="paid_as_asked",
                        consequential=True,
                    ),
                    Edge(name="escalate", to="human"),
                ),
                safe_edge="escalate",
            ),
            "paid": State(
                edges=(
                    Edge(name="finish", to="done"),
                    Edge(name="review", to="human"),
                    Edge(name="hold", to="waiting"),
                ),
                safe_edge="review",
            ),
            "waiting": State(
                wait_for="go",
                on_signal="finish",
                timeout_s=15.0,  # no signal: it ends on its own
                on_timeout="finish",
                edges=(Edge(name="finish", to="done"),),
            ),
            "human": State(
                human=True,
                edges=(Edge(name="approve", to="done"), Edge(name="deny", to="denied")),
            ),
            "done": State(terminal="succeeded"),
            "denied": State(terminal="failed"),
        },
    )
    example_input = {"account": "acct-1", "amount": 10.0, "mode": "plain"}
    max_steps = 12
    llm = RuleLLM(route)


class LedgerTools(ToolExecutor):
    name = "jepsen-tools"

    async def on_start(self) -> None:
        await super().on_start()
        self.bank = os.environ["JEPSEN_BANK"]
        self.host = os.environ.get("RIG_HOSTNAME", "")
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))

    async def on_stop(self) -> None:
        await self.http.close()
        await super().on_stop()

    @tool(side_effects=True, timeout=3.0, lease=4.0, reconcile="find_payment")
    async def pay(self, account: str, amount: float) -> dict[str, Any]:
        call = tool_context()
        asked = {"key": call.key, "job": call.job_id, "step": call.step, "host": self.host}
        async with self.http.post(
            f"{self.bank}/pay", json=asked | {"account": account, "amount": amount}
        ) as answer:
            answer.raise_for_status()
            paid: dict[str, Any] = await answer.json()
        return paid

    async def find_payment(self, account: str, amount: float) -> dict[str, Any] | None:
        async with self.http.get(f"{self.bank}/payments/{tool_context().key}") as answer:
            if answer.status == 404:
                return None
            answer.raise_for_status()
            found: dict[str, Any] = await answer.json()
            return found


class LedgerChecks(Verifier):
    name = "jepsen-checks"

    @verifier
    async def paid_as_asked(self, request: VerifyRequest) -> tuple[bool, str]:
        result, args = request.result or {}, request.args
        if (result.get("account"), result.get("amount")) != (args["account"], args["amount"]):
            return False, f"paid {result}, asked {args}"
        return True, "paid as asked"


class Bank:
    """The effects sink on the client host: every request, and one payment per key."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []  # every /pay, in order, with its time
        self.payments: dict[str, dict[str, Any]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/pay", self._pay)
        app.router.add_get("/payments/{key}", self._find)
        return app

    async def _pay(self, request: web.Request) -> web.Response:
        asked = await request.json()
        self.requests.append(asked | {"time": time.time()})
        paid = self.payments.setdefault(
            asked["key"],
            {"account": asked["account"], "amount": asked["amount"], "key": asked["key"]},
        )
        return web.json_response(paid)

    async def _find(self, request: web.Request) -> web.Response:
        paid = self.payments.get(request.match_info["key"])
        return web.json_response(paid) if paid is not None else web.Response(status=404)
