"""A tool executor for the crash tests: a payment whose effect lands in an independent sink.

The sink (`$RIG_HOME/payments.sqlite3`) is written by the tool itself, not by the
ledger: counting its rows is how a test sees how often the effect really happened.
`pay` has no way to learn whether a payment happened; `pay_reconciled` asks the sink,
by the call's idempotency key, as a payment API that takes `Idempotency-Key` allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import aiosqlite

from actors import ToolExecutor, tool, tool_context
from actors.examples.refund import RefundTools
from protocols import RetryableError

_SCHEMA = "CREATE TABLE IF NOT EXISTS payments (job TEXT, step INT, key TEXT, amount REAL)"


class CrashTools(ToolExecutor):
    name = "crash-tools"

    @tool(side_effects=True, timeout=1.0, lease=2.0)
    async def pay(self, account: str, amount: float) -> dict[str, Any]:
        return await self._pay(account, amount)

    @tool(side_effects=True, timeout=1.0, lease=2.0, reconcile="find_payment")
    async def pay_reconciled(self, account: str, amount: float) -> dict[str, Any]:
        return await self._pay(account, amount)

    async def find_payment(self, account: str, amount: float) -> dict[str, Any] | None:
        async with aiosqlite.connect(self.config.home / "payments.sqlite3") as db:
            await db.execute(_SCHEMA)
            cursor = await db.execute(
                "SELECT amount FROM payments WHERE key = ?", (tool_context().key,)
            )
            row = await cursor.fetchone()
        return {"account": account, "amount": row[0], "paid": True} if row else None

    async def _pay(self, account: str, amount: float) -> dict[str, Any]:
        call = tool_context()
        async with aiosqlite.connect(self.config.home / "payments.sqlite3") as db:
            await db.execute("PRAGMA busy_timeout=10000")
            await db.execute(_SCHEMA)
            await db.execute(
                "INSERT INTO payments VALUES (?, ?, ?, ?)",
                (call.job_id, call.step, call.key, amount),
            )
            await db.commit()
        return {"account": account, "amount": amount, "paid": True}


def payments(home: Path) -> list[tuple[Any, ...]]:
    path = home / "payments.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT job, step, key, amount FROM payments").fetchall()
    except sqlite3.OperationalError:  # the file exists, its table not yet: no payment
        return []
    finally:
        db.close()


class SlowClaimTools(CrashTools):
    """The crash tools behind a ledger whose first claim is answered only once the tool's
    lease has passed, as when the bucket's leader is being elected: the process stays
    alive (its in-progress acks hold the message, so nothing redelivers it), and the claim
    it gets is no longer good to act on."""

    name = "slow-claim-tools"

    async def on_start(self) -> None:
        await super().on_start()
        claim, first = self.ledger.claim, [True]

        async def late(*args: Any, **kwargs: Any) -> Any:
            answer = await claim(*args, **kwargs)
            if first and first.pop():
                await asyncio.sleep(self.tools["pay_reconciled"].spec.lease * 1.2)
            return answer

        self.ledger.claim = late  # type: ignore[method-assign]


class FastRefundTools(RefundTools):
    """The refund example's tools with a short lease, so a killed call settles in seconds."""

    name = "fast-refund-tools"

    @tool(side_effects=True, timeout=2.0, lease=3.0, reconcile="find_refund")
    async def issue_refund(self, order_id: str, amount: float) -> dict[str, Any]:
        return await RefundTools.issue_refund(self, order_id, amount)


class FlakyPay(CrashTools):
    """Pays, then (on the first run only) fails as a read timeout after the payment would."""

    name = "flaky-pay"

    @tool(side_effects=True, timeout=5.0, lease=5.0, reconcile="find_payment")
    async def pay_then_timeout(self, account: str, amount: float) -> dict[str, Any]:
        return await self._pay_then_fail(account, amount)

    @tool(side_effects=True, timeout=5.0, lease=5.0)
    async def pay_then_timeout_blind(self, account: str, amount: float) -> dict[str, Any]:
        return await self._pay_then_fail(account, amount)

    async def _pay_then_fail(self, account: str, amount: float) -> dict[str, Any]:
        paid = await self._pay(account, amount)
        if tool_context().epoch == 1:
            raise RetryableError("read timeout (the payment went through)", delay=0.1)
        return paid


class SlowTools(ToolExecutor):
    """A side-effect-free tool that takes 1 s and notes each start in the sink."""

    name = "slow-tools"

    @tool(side_effects=False, timeout=5.0)
    async def slow(self, n: int) -> dict[str, Any]:
        call = tool_context()
        async with aiosqlite.connect(self.config.home / "payments.sqlite3") as db:
            await db.execute("PRAGMA busy_timeout=10000")
            await db.execute(_SCHEMA)
            await db.execute(
                "INSERT INTO payments VALUES (?, ?, ?, ?)", (call.job_id, call.step, call.key, n)
            )
            await db.commit()
        await asyncio.sleep(1.0)
        return {"n": n}


class HostTools(ToolExecutor):
    """A payment service that executors on several hosts share, in `$RIG_TEST_SINK`: as a
    payment API does, it honours the idempotency key (a payment is the file `paid/<key>`,
    made only if absent; a repeat gets the first one back), and it notes every request
    in `asked/` (`<key>.<epoch>.<pid>`), so a test sees whether Rig asked twice. Both
    are done in one step of the event loop, with no await between them: a process
    frozen by a crash point is never half-way through one."""

    name = "host-tools"

    @tool(side_effects=True, timeout=1.0, lease=2.0, reconcile="find_payment")
    async def pay_shared(self, account: str, amount: float) -> dict[str, Any]:
        call, sink = tool_context(), shared_sink()
        (sink / "asked" / f"{call.key}.{call.epoch}.{os.getpid()}").touch()
        with contextlib.suppress(FileExistsError):
            (sink / "paid" / call.key).open("x").close()
        return {"account": account, "amount": amount, "paid": True}

    async def find_payment(self, account: str, amount: float) -> dict[str, Any] | None:
        paid = (shared_sink() / "paid" / tool_context().key).exists()
        return {"account": account, "amount": amount, "paid": True} if paid else None


def shared_sink() -> Path:
    return Path(os.environ["RIG_TEST_SINK"])


def shared_payments(sink: Path) -> tuple[set[str], Counter[str]]:
    """A `HostTools` sink's payments (their keys) and how often each key was asked for."""
    paid = {path.name for path in (sink / "paid").iterdir()}
    asked = Counter(path.name.split(".", 1)[0] for path in (sink / "asked").iterdir())
    return paid, asked
