"""The shipped example: a refund agent whose refunds are real side effects.

    triage --lookup--> review --approve--> refunding --refund--> done
       |     (tool        |                   |        (tool issue_refund,
       |   lookup_order)  |                   |         verifier refund_matches)
       '--escalate--> human <--escalate-------'
                          '--deny--> denied

The LLM is `RuleLLM`, a rule-based stand-in, so the example runs offline; configure a
model for agent `refund` in an LLM config file (`RIG_LLM_CONFIG`) to route with a real
one (or with `rig chaos-llm`). Refunds are
written to `$RIG_HOME/refunds.sqlite3`, a bank that the ledger knows nothing about. Like a
payment API it honours the idempotency key (one refund per key, a repeat gets the first
refund back), and it notes every request in `attempts`: counting those per key is how
the tests prove Rig asks at most once, which the bank's own uniqueness would hide.

Run it (each in its own terminal, or all at once with `rig up`):

    rig actor run actors:Supervisor
    rig actor run actors.examples.refund:RefundAgent
    rig actor run actors.examples.refund:RefundTools
    rig actor run actors.examples.refund:RefundChecks
    rig submit refund --input '{"order_id": "A-1001", "amount": 25, "reason": "damaged"}' --wait
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import Any

import aiosqlite
from pydantic import BaseModel, Field

from actors import Agent, RoutePrompt, RuleLLM, ToolExecutor, Verifier, tool, tool_context, verifier
from actors.tools.ledger import prepare_sqlite
from protocols import Edge, Graph, JobContext, NonRetryableError, State, VerifyRequest

# Refunds above this go to a person, whatever the order says.
AUTO_APPROVE_LIMIT = 500.0


# What an order id looks like. In the routing schema it is also a constraint: a model
# held to a grammar cannot end the id with a stray character (a small model copying
# `"A-1001", ` out of the prompt wrote `"A-1001,"` until the pattern forbade it).
ORDER_ID = r"^[A-Z]-[0-9]{1,9}$"


class LookupArgs(BaseModel):
    """What the LLM must give to look an order up."""

    order_id: str = Field(pattern=ORDER_ID)


class RefundArgs(BaseModel):
    """What the LLM must give to issue a refund."""

    order_id: str = Field(pattern=ORDER_ID)
    amount: float = Field(gt=0)


def find_order(order_id: str) -> dict[str, Any]:
    """The pretend order database: `A-<n>` exists; every tenth order is still in transit."""
    match = re.fullmatch(r"A-(\d{1,9})", order_id)
    if match is None:
        return {"found": False, "order_id": order_id}
    n = int(match.group(1))
    return {
        "found": True,
        "order_id": order_id,
        "status": "in_transit" if n % 10 == 3 else "delivered",
        "total": float(20 + (n * 37) % 980),
    }


def refund_problem(order_id: Any, amount: Any, job: JobContext) -> str | None:
    """Why a refund of `amount` on `order_id` does not fit the job, or None if it does: the
    order the customer named, found and delivered, no more than the customer asked for and
    no more than the order's total. The tool asks this before any money moves; the
    verifier asks it again of the refund the bank made."""
    asked_order, asked_amount = job.input.get("order_id"), job.input.get("amount")
    if order_id != asked_order:
        return f"the refund names order {order_id!r}; the customer asked about {asked_order!r}"
    order = job.results.get("lookup_order")
    if not isinstance(order, dict):
        return f"order {order_id!r} was never looked up"
    if order.get("order_id") != order_id:
        return f"the order looked up was {order.get('order_id')!r}, not {order_id!r}"
    if not order.get("found"):
        return f"order {order_id!r} does not exist"
    if order.get("status") != "delivered":
        return f"order {order_id!r} is {order.get('status')}, not delivered"
    if not isinstance(amount, int | float) or not amount > 0:
        return f"the amount {amount!r} is not a positive number"
    if isinstance(asked_amount, int | float) and amount > asked_amount + 1e-9:
        return f"the refund of {amount:g} is more than the {asked_amount:g} the customer asked for"
    if amount > float(order.get("total", 0.0)) + 1e-9:
        return f"the refund of {amount:g} is more than the order's total of {order['total']:g}"
    return None


# Requests a careful agent grants only some of: over an order's total, an order that
# does not exist, one still in transit, one above the auto-approve limit, an absurd sum.
# `scripts/demo --real-model` and the real-model tests put them to a real model.
TRICKY_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("a plain refund", {"order_id": "A-1001", "amount": 25.0, "reason": "arrived damaged"}),
    ("a second one", {"order_id": "A-1002", "amount": 60.0, "reason": "wrong size"}),
    ("over the order's total", {"order_id": "A-1004", "amount": 5000.0, "reason": "all"}),
    ("an order that does not exist", {"order_id": "Z-77", "amount": 40.0, "reason": "lost"}),
    ("an order in transit", {"order_id": "A-1003", "amount": 30.0, "reason": "late"}),
    ("a small one", {"order_id": "A-1006", "amount": 12.5, "reason": "missing part"}),
    ("above the auto-approve limit", {"order_id": "A-1008", "amount": 700.0, "reason": "x"}),
    ("another plain one", {"order_id": "A-1011", "amount": 80.0, "reason": "not as shown"}),
    ("an absurd sum", {"order_id": "A-1012", "amount": 1e15, "reason": "compensation"}),
    ("a short order id", {"order_id": "A-9", "amount": 19.99, "reason": "changed my mind"}),
]


def route(prompt: RoutePrompt) -> str | tuple[str, dict[str, Any]]:
    """What a careful support agent would do; stands in for the LLM."""
    request = prompt.context.input
    if prompt.state == "triage":
        order_id = request.get("order_id")
        return ("lookup", {"order_id": order_id}) if isinstance(order_id, str) else "escalate"
    if prompt.state == "review":
        order = prompt.context.results.get("lookup_order", {})
        amount = request.get("amount")
        if not isinstance(amount, int | float) or amount <= 0:
            return "escalate"
        if not order.get("found") or order.get("status") != "delivered":
            return "deny"
        if amount > order["total"]:
            return "deny"
        if amount > AUTO_APPROVE_LIMIT:
            return "escalate"
        return "approve"
    if prompt.state == "refunding":
        return "refund", {"order_id": request["order_id"], "amount": float(request["amount"])}
    return "escalate"


class RefundAgent(Agent):
    """Decides customer refund requests: look the order up, approve or deny, refund, verify."""

    name = "refund"
    graph = Graph(
        initial="triage",
        states={
            "triage": State(
                description="A customer asks for a refund. Find the order.",
                edges=(
                    Edge(
                        name="lookup",
                        to="review",
                        tool="lookup_order",
                        args=LookupArgs,
                        description="Look up the order the customer names.",
                    ),
                    Edge(
                        name="escalate",
                        to="human",
                        description="The request is unclear; hand it to a person.",
                    ),
                ),
                safe_edge="escalate",
            ),
            "review": State(
                description="Decide whether the order qualifies for the amount asked.",
                edges=(
                    Edge(
                        name="approve",
                        to="refunding",
                        description="The order was delivered and the amount is within its total.",
                    ),
                    Edge(
                        name="deny",
                        to="denied",
                        description="The order does not exist, is not delivered, or the "
                        "amount exceeds its total.",
                    ),
                    Edge(
                        name="escalate",
                        to="human",
                        description=f"The amount is above {AUTO_APPROVE_LIMIT:.0f}; "
                        "a person decides.",
                    ),
                ),
                safe_edge="escalate",
            ),
            "refunding": State(
                description="Issue the approved refund.",
                edges=(
                    Edge(
                        name="refund",
                        to="done",
                        tool="issue_refund",
                        verifier="refund_matches",
                        args=RefundArgs,
                        description="Refund the approved amount to the customer.",
                        consequential=True,  # money moves: a verifier checks it (the lint)
                    ),
                    Edge(
                        name="escalate", to="human", description="Something is off; ask a person."
                    ),
                ),
                safe_edge="escalate",
            ),
            "done": State(terminal="succeeded", description="The refund was issued and checked."),
            "denied": State(terminal="succeeded", description="The request was declined."),
            "human": State(
                human=True,
                description="A person decides.",
                edges=(
                    Edge(name="approve", to="refunding", description="Refund as asked."),
                    Edge(name="close", to="denied", description="Decline the request."),
                ),
            ),
        },
    )
    example_input = {"order_id": "A-1001", "amount": 25.0, "reason": "arrived damaged"}
    max_steps = 10
    llm = RuleLLM(route)


class RefundLLMAgent(RefundAgent):
    """The same refund agent, for routing through a configured model (see RIG_LLM_CONFIG)."""

    name = "refund-llm"
    max_reasks = 2


class RefundTools(ToolExecutor):
    """The order lookup (no side effects) and the refund (a side effect, at most once)."""

    name = "refund-tools"

    @tool(side_effects=False, timeout=10.0)
    async def lookup_order(self, order_id: str) -> dict[str, Any]:
        return find_order(order_id)

    @tool(side_effects=True, timeout=30.0, reconcile="find_refund")
    async def issue_refund(self, order_id: str, amount: float) -> dict[str, Any]:
        call = tool_context()
        # The model chose these arguments: check them against the job before money moves.
        problem = refund_problem(order_id, amount, call.job) if call.job else "no job context"
        if problem is not None:
            raise NonRetryableError(f"refused before any money moved: {problem}")
        refund = {
            "refund_id": uuid.uuid4().hex,
            "order_id": order_id,
            "amount": amount,
            "status": "issued",
        }
        # The bank is told the call's idempotency key, as a payment API would be: a second
        # request under it gets the first refund back, and moves no money.
        return await record_refund(self.bank, call.job_id, call.key, refund)

    async def find_refund(self, order_id: str, amount: float) -> dict[str, Any] | None:
        """Ask the bank whether a refund was made under this call's key (reconcile)."""
        return await find_refund(self.bank, tool_context().key)

    @property
    def bank(self) -> Path:
        return self.config.home / "refunds.sqlite3"


# The bank: `refunds` holds the money moved, at most one refund per idempotency key (the
# bank enforces it, as a payment API does); `attempts` holds every request that reached
# it, so a test can tell "Rig asked twice" from "money moved twice".
_BANK_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS refunds (refund_id TEXT PRIMARY KEY, job_id TEXT,"
    " idempotency_key TEXT UNIQUE, order_id TEXT, amount REAL, ts REAL)",
    "CREATE TABLE IF NOT EXISTS attempts (idempotency_key TEXT, job_id TEXT, ts REAL)",
)


async def record_refund(
    path: Path, job_id: str, key: str, refund: dict[str, Any]
) -> dict[str, Any]:
    """The side effect: a refund in the bank's file, once per key; the refund made under
    the key (this one, or the first one if the key was used before)."""
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    async with aiosqlite.connect(path) as db:
        await _open_bank(db)
        now = time.time()
        await db.execute("INSERT INTO attempts VALUES (?, ?, ?)", (key, job_id, now))
        await db.execute(
            "INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            (refund["refund_id"], job_id, key, refund["order_id"], refund["amount"], now),
        )
        await db.commit()
        made = await _refund_by_key(db, key)
    assert made is not None
    return made


async def find_refund(path: Path, key: str) -> dict[str, Any] | None:
    """The refund the bank made under an idempotency key, if any."""
    if not await asyncio.to_thread(path.exists):
        return None
    async with aiosqlite.connect(path) as db:
        await _open_bank(db)
        return await _refund_by_key(db, key)


async def _open_bank(db: aiosqlite.Connection) -> None:
    await prepare_sqlite(db, _BANK_SCHEMA)  # several calls may open a new bank at once


async def _refund_by_key(db: aiosqlite.Connection, key: str) -> dict[str, Any] | None:
    async with db.execute(
        "SELECT refund_id, order_id, amount FROM refunds WHERE idempotency_key = ?", (key,)
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    return {"refund_id": row[0], "order_id": row[1], "amount": row[2], "status": "issued"}


class RefundChecks(Verifier):
    """Checks the refund the bank made against what was asked: the refund issued is the
    one the model chose, and it fits the job (the customer's order, found and delivered,
    no more than asked, no more than the order's total)."""

    name = "refund-checks"

    @verifier
    async def refund_matches(self, request: VerifyRequest) -> tuple[bool, str]:
        result, args = request.result or {}, request.args
        if result.get("status") != "issued":
            return False, f"refund status is {result.get('status')!r}, not 'issued'"
        if result.get("order_id") != args.get("order_id"):
            return False, "refund went to another order"
        if abs(float(result.get("amount", -1)) - float(args.get("amount", 0))) > 1e-9:
            return False, f"refunded {result.get('amount')}, approved {args.get('amount')}"
        if request.context is None:
            return False, "no job context to check the refund against"
        problem = refund_problem(result.get("order_id"), result.get("amount"), request.context)
        if problem is not None:
            return False, problem
        return True, "refund issued for the customer's delivered order, within what was asked"
