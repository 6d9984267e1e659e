"""The idempotency ledger: an SQLite file that lets a tool's effect happen at most once.

One row per idempotency key (a hash of job id, tool and canonical arguments). A call
first *claims* its key; only a fresh claim may run the tool, and its outcome is then
recorded under the epoch it claimed with, so a stale executor cannot overwrite a
newer record.

    (no row) --claim--> in_progress --complete--> succeeded   (result returned to repeats)
                            |        --fail-----> failed      (retryable: claimable again)
                            '--lease runs out---> unknown     (the effect may have happened)

The file uses WAL and `synchronous=FULL`: a recorded result survives power loss, which
is the point of a ledger that prevents duplicate payments. Claims use `BEGIN IMMEDIATE`,
so two executor processes sharing the file serialise on the write lock instead of
failing with SQLITE_BUSY. One file per host, shared by every executor on it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiosqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    key         TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    tool        TEXT NOT NULL,
    args_hash   TEXT NOT NULL,
    state       TEXT NOT NULL
                CHECK (state IN ('in_progress', 'succeeded', 'failed', 'unknown')),
    epoch       INTEGER NOT NULL,
    owner       TEXT NOT NULL,
    lease_until REAL NOT NULL,
    result      TEXT,
    error       TEXT,
    retryable   INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
"""

RecordState = Literal["in_progress", "succeeded", "failed", "unknown"]


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    key: str
    job_id: str
    tool: str
    args_hash: str
    state: RecordState
    epoch: int
    owner: str
    lease_until: float
    result: Any
    error: dict[str, Any] | None
    retryable: bool
    created_at: float
    updated_at: float


ClaimOutcome = Literal["claimed", "succeeded", "failed", "busy", "unknown", "conflict"]


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim found: `claimed` means run the tool under `epoch`; the rest mean don't."""

    outcome: ClaimOutcome
    epoch: int = 0
    record: LedgerRecord | None = None
    retry_after: float = 0.0


class Ledger:
    """An open ledger file. Use `await Ledger.open(path, owner=...)`; not shareable across loops.

    Transactions on the one connection are serialised by a lock; several processes may
    open the same file.
    """

    def __init__(self, db: aiosqlite.Connection, *, owner: str) -> None:
        self._db = db
        self._owner = owner
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path, *, owner: str) -> Ledger:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA busy_timeout=10000")
        await db.execute(_SCHEMA)
        return cls(db, owner=owner)

    async def close(self) -> None:
        await self._db.close()

    async def claim(
        self,
        key: str,
        *,
        job_id: str,
        tool: str,
        args_hash: str,
        lease: float,
        side_effects: bool = True,
    ) -> Claim:
        """Claim `key` for one run of the tool, or say why it must not run now."""
        now = time.time()
        async with self._transaction():
            record = await self._get(key)
            if record is None:
                await self._db.execute(
                    "INSERT INTO ledger (key, job_id, tool, args_hash, state, epoch, owner,"
                    " lease_until, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, 'in_progress', 1, ?, ?, ?, ?)",
                    (key, job_id, tool, args_hash, self._owner, now + lease, now, now),
                )
                return Claim("claimed", epoch=1)
            if record.args_hash != args_hash:
                return Claim("conflict", record=record)
            if record.state == "succeeded":
                return Claim("succeeded", record=record)
            if record.state == "failed" and not record.retryable:
                return Claim("failed", record=record)
            if record.state == "in_progress" and record.lease_until > now:
                return Claim("busy", record=record, retry_after=record.lease_until - now)
            if record.state in ("in_progress", "unknown") and side_effects:
                # The lease ran out with the effect possibly done: never run it blindly.
                if record.state == "in_progress":
                    await self._db.execute(
                        "UPDATE ledger SET state = 'unknown', updated_at = ? WHERE key = ?",
                        (now, key),
                    )
                return Claim("unknown", record=record)
            epoch = record.epoch + 1
            await self._db.execute(
                "UPDATE ledger SET state = 'in_progress', epoch = ?, owner = ?, lease_until = ?,"
                " error = NULL, retryable = 0, updated_at = ? WHERE key = ?",
                (epoch, self._owner, now + lease, now, key),
            )
            return Claim("claimed", epoch=epoch)

    async def complete(self, key: str, epoch: int, result: Any) -> bool:
        """Record a result; False if a newer epoch owns the key (this run was fenced off)."""
        return await self._finish(key, epoch, "succeeded", json.dumps(result), None, False)

    async def fail(self, key: str, epoch: int, error: dict[str, Any], *, retryable: bool) -> bool:
        """Record a failure; a retryable one may be claimed again under a new epoch."""
        return await self._finish(key, epoch, "failed", None, json.dumps(error), retryable)

    async def get(self, key: str) -> LedgerRecord | None:
        async with self._lock:
            return await self._get(key)

    async def _finish(
        self,
        key: str,
        epoch: int,
        state: str,
        result: str | None,
        error: str | None,
        retryable: bool,
    ) -> bool:
        async with self._transaction():
            cursor = await self._db.execute(
                "UPDATE ledger SET state = ?, result = ?, error = ?, retryable = ?,"
                " updated_at = ? WHERE key = ? AND epoch = ? AND state = 'in_progress'",
                (state, result, error, int(retryable), time.time(), key, epoch),
            )
            return cursor.rowcount == 1

    async def _get(self, key: str) -> LedgerRecord | None:
        async with self._db.execute(
            "SELECT key, job_id, tool, args_hash, state, epoch, owner, lease_until, result,"
            " error, retryable, created_at, updated_at FROM ledger WHERE key = ?",
            (key,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return LedgerRecord(
            key=row[0],
            job_id=row[1],
            tool=row[2],
            args_hash=row[3],
            state=row[4],
            epoch=row[5],
            owner=row[6],
            lease_until=row[7],
            result=json.loads(row[8]) if row[8] is not None else None,
            error=json.loads(row[9]) if row[9] is not None else None,
            retryable=bool(row[10]),
            created_at=row[11],
            updated_at=row[12],
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self)


class _Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT` (or `ROLLBACK` on error), under the ledger's lock."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def __aenter__(self) -> None:
        await self._ledger._lock.acquire()
        try:
            await self._ledger._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._ledger._lock.release()
            raise

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self._ledger._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._ledger._lock.release()
