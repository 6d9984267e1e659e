"""The tool ledger of a cluster: the same records and decisions, in a replicated bucket.

With `RIG_LEDGER=cluster` every executor on every host claims calls in one KV bucket
(`RIG_CLAIMS`, as many copies as the cluster has servers), so at most once holds across
hosts, not only within one host's SQLite file. A record is the `LedgerRecord` of
`actors._ledger` as JSON under `<tool>.<key>`, and every change is the pure decision of
`decide_claim`, `decide_finish` or `decide_resolve` applied to the record as stored,
written by compare-and-set on its revision: the bucket's stream leader accepts a write
only if the key is still at the revision the decision was made on, and acknowledges it
once a majority of the servers has it. Two executors that race on one key cannot both
win; the loser reads the record again and decides again, exactly as if the two had run
one after the other. So the crash-point table of docs/ledger.md holds unchanged.

Reads go to the leader (the bucket is not `direct`), and a write is checked by the leader
whatever a read said: a read that was stale (a deposed leader answering during an
election) can only make the write fail and the decision be taken again.

A process remembers the record and revision it last wrote for each key, and tries its
next change on that (one round trip: a fresh claim is a `create`, a completion an
`update`); only a lost race or a key it has not seen costs a read first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from actors._ledger import (
    Claim,
    LedgerRecord,
    _ClaimOp,
    _FinishOp,
    _ResolveOp,
    decide_claim,
    decide_finish,
    decide_resolve,
    decide_settle,
)
from actors._nats import kv_latest, kv_read
from protocols import TERMINAL_STATUSES, JobSnapshot, Names, decode_as

# Records this process remembers (key -> tool, last record and revision written).
_REMEMBERED = 65_536


class ClusterLedger:
    """`Ledger`'s operations on the cluster's claims bucket. `await ClusterLedger.open(js,
    names, owner=...)`; the key of a call must be claimed (in this process) before its
    outcome is recorded, as the executor does."""

    def __init__(self, kv: KeyValue, *, owner: str) -> None:
        self._kv = kv
        self._owner = owner
        # key -> (tool, record, revision) as this process last wrote or read it
        self._known: OrderedDict[str, tuple[str, LedgerRecord | None, int]] = OrderedDict()
        self.operations = 0
        self.races = 0  # writes refused because the record had moved: decided again

    @classmethod
    async def open(cls, js: JetStreamContext, names: Names, *, owner: str) -> ClusterLedger:
        return cls(await js.key_value(names.claims_bucket), owner=owner)

    async def close(self) -> None:
        """Nothing is queued: every change was acknowledged before it returned."""

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
        op = _ClaimOp(key, job_id, tool, args_hash, lease, side_effects, dead_owner=dead_owner)
        if key not in self._known:
            self._remember(key, tool, None, 0)  # a fresh key: try to create it first
        claim: Claim = await self._change(
            key, lambda record, now: decide_claim(record, op, owner=self._owner, now=now)
        )
        return claim

    async def complete(self, key: str, epoch: int, result: Any) -> bool:
        json.dumps(result)  # refuse a result that cannot be stored
        return await self._finish(_FinishOp(key, epoch, "succeeded", result, None, False))

    async def fail(self, key: str, epoch: int, error: dict[str, Any], *, retryable: bool) -> bool:
        return await self._finish(_FinishOp(key, epoch, "failed", None, error, retryable))

    async def abandon(self, key: str, epoch: int, error: dict[str, Any]) -> bool:
        return await self._finish(_FinishOp(key, epoch, "unknown", None, error, False))

    async def resolve(
        self, key: str, epoch: int, *, happened: bool, result: Any = None, lease: float = 60.0
    ) -> Claim:
        if happened:
            json.dumps(result)
        op = _ResolveOp(key, epoch, happened, result, lease)
        claim: Claim = await self._change(
            key, lambda record, now: decide_resolve(record, op, owner=self._owner, now=now)
        )
        return claim

    async def get(self, key: str) -> LedgerRecord | None:
        """The record as the bucket's leader has it now."""
        record, _ = await self._read(key)
        return record

    async def _finish(self, op: _FinishOp) -> bool:
        done: bool = await self._change(
            op.key, lambda record, now: decide_finish(record, op, now=now)
        )
        return done

    async def _change(
        self,
        key: str,
        decide: Callable[[LedgerRecord | None, float], tuple[Any, LedgerRecord | None]],
    ) -> Any:
        """Decide on the record as last known, write by compare-and-set; when the record
        had moved, read it from the leader and decide again."""
        tool, record, revision = self._entry(key)
        while True:
            self.operations += 1
            outcome, new = decide(record, time.time())
            if new is None:
                return outcome
            value = json.dumps(dataclasses.asdict(new)).encode()
            try:
                if revision == 0:
                    written = await self._kv.create(_subject_key(tool, key), value)
                else:
                    written = await self._kv.update(_subject_key(tool, key), value, last=revision)
            except KeyWrongLastSequenceError:
                self.races += 1
                record, revision = await self._read(key)
                continue
            self._remember(key, tool, new, written)
            return outcome

    async def _read(self, key: str) -> tuple[LedgerRecord | None, int]:
        tool, _, _ = self._entry(key)
        data, revision = await kv_read(self._kv, _subject_key(tool, key))
        record = LedgerRecord(**json.loads(data)) if data else None
        self._remember(key, tool, record, revision)
        return record, revision

    def _entry(self, key: str) -> tuple[str, LedgerRecord | None, int]:
        try:
            return self._known[key]
        except KeyError:
            raise KeyError(f"ledger key {key} was not claimed in this process") from None

    def _remember(self, key: str, tool: str, record: LedgerRecord | None, revision: int) -> None:
        self._known[key] = (tool, record, revision)
        self._known.move_to_end(key)
        while len(self._known) > _REMEMBERED:
            self._known.popitem(last=False)


def _subject_key(tool: str, key: str) -> str:
    """A record's key in the bucket: under its tool, so that an executor's NATS user may
    write only its own tools' records."""
    return f"{tool}.{key}"


# --- administration (`rig ledger` with RIG_LEDGER=cluster) ------------------------------


async def list_claims(
    js: JetStreamContext, names: Names, *, limit: int = 100, state: str | None = None
) -> list[LedgerRecord]:
    """The newest records first (at most `limit`), optionally only those in `state`."""
    records = [
        LedgerRecord(**json.loads(value)) async for _, value in kv_latest(js, names.claims_bucket)
    ]
    records = [r for r in records if state is None or r.state == state]
    return sorted(records, key=lambda r: r.updated_at, reverse=True)[:limit]


async def get_claim(js: JetStreamContext, names: Names, key: str) -> LedgerRecord | None:
    found = await _find(js, names, key)
    return found[1] if found is not None else None


async def settle_claim(
    js: JetStreamContext, names: Names, key: str, *, happened: bool, result: Any, by: str
) -> LedgerRecord:
    """A person's answer to an `unknown` record (`decide_settle`), written by
    compare-and-set: a record that moved meanwhile is read and decided again."""
    kv = await js.key_value(names.claims_bucket)
    found = await _find(js, names, key)
    if found is None:
        raise ValueError("no such record")
    while True:
        data, revision = await kv_read(kv, found[0])
        record = LedgerRecord(**json.loads(data)) if data else None
        new = decide_settle(record, happened=happened, result=result, by=by, now=time.time())
        value = json.dumps(dataclasses.asdict(new)).encode()
        try:
            await kv.update(found[0], value, last=revision)
        except KeyWrongLastSequenceError:
            continue  # it changed since it was read: decide on what it is now
        return new


async def prune_claims(js: JetStreamContext, names: Names, *, older_than: float) -> int:
    """Delete finished records of ended jobs not updated for `older_than` seconds; return
    how many (never an `in_progress` or `unknown` one: it may stand for an effect that
    happened; never one of a job that may take the call again: `actors._ledger.prune`).
    Each delete is conditional on the revision read, so a record that changed is kept."""
    kv = await js.key_value(names.claims_bucket)
    cutoff = time.time() - older_than
    candidates: list[tuple[str, bytes, LedgerRecord]] = []
    async for subject_key, value in kv_latest(js, names.claims_bucket):
        record = LedgerRecord(**json.loads(value))
        if record.state in ("succeeded", "failed") and record.updated_at < cutoff:
            candidates.append((subject_key, value, record))
    gone = await jobs_ended(js, names, {record.job_id for _, _, record in candidates})
    deleted = 0
    for subject_key, value, record in candidates:
        if record.job_id not in gone:
            continue
        data, revision = await kv_read(kv, subject_key)
        if data != value:
            continue
        with contextlib.suppress(KeyWrongLastSequenceError):
            await kv.delete(subject_key, last=revision)
            deleted += 1
    return deleted


async def jobs_ended(js: JetStreamContext, names: Names, job_ids: set[str]) -> set[str]:
    """Which of these jobs have ended (a terminal snapshot in `RIG_JOBS`). A job Rig does
    not know (no snapshot: another deployment's, say) is not counted as ended."""
    jobs = await js.key_value(names.jobs_bucket)
    room = asyncio.Semaphore(32)

    async def ended(job_id: str) -> bool:
        async with room:
            data, _revision = await kv_read(jobs, job_id)
        if not data:
            return False
        return decode_as(JobSnapshot, data)[0].status in TERMINAL_STATUSES

    ids = sorted(job_ids)
    answers = await asyncio.gather(*(ended(job_id) for job_id in ids))
    return {job_id for job_id, done in zip(ids, answers, strict=True) if done}


async def _find(js: JetStreamContext, names: Names, key: str) -> tuple[str, LedgerRecord] | None:
    """A record by its idempotency key, whatever its tool: (its key in the bucket, it)."""
    if not key or any(c in key for c in ".*> "):
        return None
    async for subject_key, value in kv_latest(js, names.claims_bucket, f"*.{key}"):
        return subject_key, LedgerRecord(**json.loads(value))
    return None
