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

Group commit: one writer task per `Ledger` takes every claim and completion waiting in
its queue and applies them in one transaction, so a full fsync is paid per batch, not
per call. Nobody is answered before their batch has committed. The decisions themselves
are pure functions of the record read inside that transaction (`decide_claim`,
`decide_finish`), applied in arrival order, so two calls on one key in one batch see
each other exactly as if they had been committed one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from actors.tools.decisions import (
    Claim,
    ClaimOp,
    FinishOp,
    LedgerRecord,
    RecordState,
    ResolveOp,
    decide_claim,
    decide_finish,
    decide_resolve,
    decide_settle,
)

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


@dataclass(slots=True)
class _GetOp:
    key: str
    future: asyncio.Future[Any] = field(repr=False, default=None)  # type: ignore[arg-type]


_Op = ClaimOp | FinishOp | ResolveOp | _GetOp

_COLUMNS = (
    "key, job_id, tool, args_hash, state, epoch, owner, lease_until, result, error,"
    " retryable, created_at, updated_at"
)
_UPSERT = (
    f"INSERT INTO ledger ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(key) DO UPDATE SET state = excluded.state, epoch = excluded.epoch,"
    " owner = excluded.owner, lease_until = excluded.lease_until, result = excluded.result,"
    " error = excluded.error, retryable = excluded.retryable, updated_at = excluded.updated_at"
)
# SQLite's default limit on host parameters is 32766; stay far below it.
_SELECT_CHUNK = 500


async def prepare_sqlite(
    db: aiosqlite.Connection, schema: Sequence[str] = (), *, within: float = 10.0
) -> None:
    """Make a connection's file ready: a 10 s busy timeout, WAL, and `schema`'s statements.

    When several connections open a new file at once, the switch to WAL, and a statement
    that runs while another connection makes that switch, can fail with "database is
    locked" at once, whatever the busy timeout (SQLite does not wait on a lock another
    connection holds to build the WAL index). So the whole setup is tried again, backing
    off, for up to `within` seconds; the schema is written in a transaction that takes
    the write lock first (`BEGIN IMMEDIATE`), since a deferred one that read the schema
    before another connection wrote it fails at once too."""
    deadline = time.monotonic() + within
    pause = 0.01
    while True:
        try:
            await db.execute("PRAGMA busy_timeout=10000")
            await db.execute("PRAGMA journal_mode=WAL")
            if schema:
                await db.execute("BEGIN IMMEDIATE")
                for statement in schema:
                    await db.execute(statement)
                await db.execute("COMMIT")
            return
        except sqlite3.OperationalError as exc:
            if db.in_transaction:
                await db.rollback()
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)


class Ledger:
    """An open ledger file. Use `await Ledger.open(path, owner=...)`; one event loop only.

    Several processes may open the same file. Calls are queued (at most `max_queue`)
    and committed in batches of at most `max_batch` by one writer task.
    """

    # A record holds its result whatever its size (results are at most RIG_MAX_RESULT_BYTES).
    keeps_large_results = True

    def __init__(
        self,
        db: aiosqlite.Connection,
        *,
        owner: str,
        max_batch: int = 256,
        max_queue: int = 10_000,
    ) -> None:
        self._db = db
        self._owner = owner
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue(maxsize=max_queue)
        self._writer = asyncio.create_task(self._write_loop())
        self.batches = 0
        self.operations = 0

    @classmethod
    async def open(
        cls, path: str | Path, *, owner: str, durable: bool = True, **kwargs: Any
    ) -> Ledger:
        """Open (or create) the ledger at `path`. `durable=False` skips the sync to disk
        of each commit: for a throwaway file (`actors.testing.run_job`'s), never for
        effects that must survive a power cut."""
        await asyncio.to_thread(_create_private, Path(path))
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await prepare_sqlite(db, [_SCHEMA])
            await db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        except BaseException:
            await db.close()  # its worker thread would keep the process alive
            raise
        return cls(db, owner=owner, **kwargs)

    async def close(self) -> None:
        """Finish what is queued, then close the file."""
        await self._queue.put(None)
        await self._writer
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
        dead_owner: str | None = None,
    ) -> Claim:
        """Claim `key` for one run of the tool, or say why it must not run now.

        `dead_owner`: an owner the caller knows has died (a process of this host that no
        longer exists); its lease ends now instead of at `lease_until`.
        """
        op = ClaimOp(key, job_id, tool, args_hash, lease, side_effects, dead_owner=dead_owner)
        result: Claim = await self._submit(op)
        return result

    async def complete(self, key: str, epoch: int, result: Any) -> bool:
        """Record a result; False if a newer epoch owns the key (this run was fenced off)."""
        json.dumps(result)  # refuse a result that cannot be stored before queueing it
        done: bool = await self._submit(FinishOp(key, epoch, "succeeded", result, None, False))
        return done

    async def fail(self, key: str, epoch: int, error: dict[str, Any], *, retryable: bool) -> bool:
        """Record a failure; a retryable one may be claimed again under a new epoch."""
        done: bool = await self._submit(FinishOp(key, epoch, "failed", None, error, retryable))
        return done

    async def abandon(self, key: str, epoch: int, error: dict[str, Any]) -> bool:
        """Say the run of `epoch` ended without knowing whether its effect happened: the
        record is `unknown` at once (a repeat reconciles it, or a person decides)."""
        done: bool = await self._submit(FinishOp(key, epoch, "unknown", None, error, False))
        return done

    async def resolve(
        self, key: str, epoch: int, *, happened: bool, result: Any = None, lease: float = 60.0
    ) -> Claim:
        """Settle the `unknown` record of `epoch`: it happened (with `result`), or not.

        Returns `succeeded` (recorded), `claimed` (run the tool under the new epoch), or,
        if someone settled it first, what a claim would find now.
        """
        if happened:
            json.dumps(result)
        settled: Claim = await self._submit(ResolveOp(key, epoch, happened, result, lease))
        return settled

    async def get(self, key: str) -> LedgerRecord | None:
        record: LedgerRecord | None = await self._submit(_GetOp(key))
        return record

    async def _submit(self, op: _Op) -> Any:
        if self._writer.done():
            raise RuntimeError("the ledger is closed")
        op.future = asyncio.get_running_loop().create_future()
        await self._queue.put(op)
        return await op.future

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch: list[_Op] = [first]
            stop = False
            while len(batch) < self._max_batch and not self._queue.empty():
                op = self._queue.get_nowait()
                if op is None:
                    stop = True
                    break
                batch.append(op)
            try:
                results = await self._commit(batch)
            except Exception as exc:
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(exc)
            else:
                for op, result in zip(batch, results, strict=True):
                    if not op.future.done():
                        op.future.set_result(result)
            if stop:
                return

    async def _commit(self, batch: list[_Op]) -> list[Any]:
        """One transaction for the whole batch: read its keys, decide in order, write once."""
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            records = await self._select({op.key for op in batch})
            changed: dict[str, LedgerRecord] = {}
            results: list[Any] = []
            for op in batch:
                record = records.get(op.key)
                new: LedgerRecord | None = None
                outcome: Any
                if isinstance(op, ClaimOp):
                    outcome, new = decide_claim(record, op, owner=self._owner, now=now)
                elif isinstance(op, FinishOp):
                    outcome, new = decide_finish(record, op, now=now)
                elif isinstance(op, ResolveOp):
                    outcome, new = decide_resolve(record, op, owner=self._owner, now=now)
                else:
                    outcome = record
                if new is not None:
                    records[op.key] = changed[op.key] = new
                results.append(outcome)
            if changed:
                await self._db.executemany(_UPSERT, [_row(r) for r in changed.values()])
            await self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await self._db.execute("ROLLBACK")
            raise
        self.batches += 1
        self.operations += len(batch)
        return results

    async def _select(self, keys: set[str]) -> dict[str, LedgerRecord]:
        found: dict[str, LedgerRecord] = {}
        for chunk in _chunks(sorted(keys), _SELECT_CHUNK):
            marks = ", ".join("?" * len(chunk))
            rows = await self._db.execute_fetchall(  # one trip to the database's thread
                f"SELECT {_COLUMNS} FROM ledger WHERE key IN ({marks})", chunk
            )
            for row in rows:
                record = _record(row)
                found[record.key] = record
        return found


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _record(row: Any) -> LedgerRecord:
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


def _row(record: LedgerRecord) -> tuple[Any, ...]:
    return (
        record.key,
        record.job_id,
        record.tool,
        record.args_hash,
        record.state,
        record.epoch,
        record.owner,
        record.lease_until,
        json.dumps(record.result) if record.state == "succeeded" else None,
        json.dumps(record.error) if record.error is not None else None,
        int(record.retryable),
        record.created_at,
        record.updated_at,
    )


# --- administration (`rig ledger`): own connection, for a file executors may be using --


async def list_records(
    path: str | Path, *, limit: int = 100, state: RecordState | None = None
) -> list[LedgerRecord]:
    """The newest records first (at most `limit`), optionally only those in `state`."""
    async with aiosqlite.connect(str(path)) as db:
        await db.execute("PRAGMA busy_timeout=10000")
        where, params = ("WHERE state = ?", (state,)) if state else ("", ())
        async with db.execute(
            f"SELECT {_COLUMNS} FROM ledger {where} ORDER BY updated_at DESC LIMIT ?",
            (*params, limit),
        ) as cursor:
            return [_record(row) for row in await cursor.fetchall()]


async def get_record(path: str | Path, key: str) -> LedgerRecord | None:
    async with aiosqlite.connect(str(path)) as db:
        await db.execute("PRAGMA busy_timeout=10000")
        async with db.execute(f"SELECT {_COLUMNS} FROM ledger WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
    return _record(row) if row is not None else None


async def settle(
    path: str | Path, key: str, *, happened: bool, result: Any = None, by: str = ""
) -> LedgerRecord:
    """Settle an `unknown` record by a person's word (`rig ledger settle`); see
    `decide_settle`. The next call of the key answers from it, or runs the tool again."""
    async with aiosqlite.connect(str(path), isolation_level=None) as db:
        await db.execute("PRAGMA busy_timeout=10000")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute(f"SELECT {_COLUMNS} FROM ledger WHERE key = ?", (key,)) as cursor:
                row = await cursor.fetchone()
            new = decide_settle(
                _record(row) if row is not None else None,
                happened=happened,
                result=result,
                by=by,
                now=time.time(),
            )
            await db.execute(_UPSERT, _row(new))
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
        return new


async def prune(
    path: str | Path,
    *,
    older_than: float,
    ended: Callable[[set[str]], Awaitable[set[str]]],
) -> int:
    """Delete finished records of ended jobs not updated for `older_than` seconds; return
    how many. `ended(job_ids)` says which of those jobs have ended (`jobs_ended`).

    Only `succeeded` and `failed` records go, and only of a job that has ended: an
    `in_progress` or `unknown` record may stand for an effect that happened, and a job
    still running (or parked for a person, for however long) may take the same call
    again, which must find its record rather than pay twice.
    """
    cutoff = time.time() - older_than
    async with aiosqlite.connect(str(path), isolation_level=None) as db:
        await db.execute("PRAGMA busy_timeout=10000")
        await db.execute("PRAGMA synchronous=FULL")
        cursor = await db.execute(
            "SELECT DISTINCT job_id FROM ledger "
            "WHERE state IN ('succeeded', 'failed') AND updated_at < ?",
            (cutoff,),
        )
        candidates = {str(row[0]) for row in await cursor.fetchall()}
        gone = sorted(await ended(candidates)) if candidates else []
        deleted = 0
        await db.execute("BEGIN IMMEDIATE")
        for start in range(0, len(gone), 500):  # SQLite's bound on parameters
            batch = gone[start : start + 500]
            marks = ",".join("?" * len(batch))
            cursor = await db.execute(
                "DELETE FROM ledger WHERE state IN ('succeeded', 'failed') AND updated_at < ? "
                f"AND job_id IN ({marks})",
                (cutoff, *batch),
            )
            deleted += cursor.rowcount
        await db.execute("COMMIT")
        return deleted


def _create_private(path: Path) -> None:
    """Make the ledger's file readable by its owner alone (it holds tools' results), and
    its folder too if it is new; SQLite gives its -wal and -shm files the file's mode."""
    if not path.parent.exists():
        with contextlib.suppress(FileExistsError):
            path.parent.mkdir(parents=True, mode=0o700)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
