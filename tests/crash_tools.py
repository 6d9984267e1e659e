"""A tool executor for the crash tests: a payment whose effect lands in an independent sink.

The sink (`$RIG_HOME/payments.sqlite3`) is written by the tool itself, not by the
ledger: counting its rows is how a test sees how often the effect really happened.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from actors import ToolExecutor, tool, tool_context


class CrashTools(ToolExecutor):
    name = "crash-tools"

    @tool(side_effects=True, timeout=1.0, lease=2.0)
    async def pay(self, account: str, amount: float) -> dict[str, Any]:
        call = tool_context()
        async with aiosqlite.connect(self.config.home / "payments.sqlite3") as db:
            await db.execute("PRAGMA busy_timeout=10000")
            await db.execute(
                "CREATE TABLE IF NOT EXISTS payments (job TEXT, step INT, account"
                " TEXT, amount REAL)"
            )
            await db.execute(
                "INSERT INTO payments VALUES (?, ?, ?, ?)",
                (call.job_id, call.step, account, amount),
            )
            await db.commit()
        return {"account": account, "amount": amount, "paid": True}


def payments(home: Path) -> list[tuple[Any, ...]]:
    path = home / "payments.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT job, step, account, amount FROM payments").fetchall()
    finally:
        db.close()
