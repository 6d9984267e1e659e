"""The tool ledger of a cluster: the same records and decisions, in a replicated bucket.

With `RIG_LEDGER=cluster` every executor on every host claims calls in one KV bucket
(`RIG_CLAIMS`, as many copies as the cluster has servers), so at most once holds across
hosts, not only within one host's SQLite file. A record is the `LedgerRecord` of
`actors.tools.ledger` as JSON under `<tool>.<key>`, and every change is the pure decision of
`decide_claim`, `decide_finish` or `decide_resolve` applied to the record as stored,
written by compare-and-set on its revision: the bucket's stream leader accepts a write
only if the key is still at the revision the decision was made on, and acknowledges it
once a majority of the servers has it. Two executors that race on one key cannot both
win; the loser reads the record again and decides again, exactly as if the two had run
one after the other. So the crash-point table of docs/design/ledger.md holds unchanged.

Reads go to the leader (the bucket is not `direct`), and a write is checked by the leader
whatever a read said: a read that was stale (a deposed leader answering during an
election) can only make the write fail and the decision be taken again.

A process remembers the record and revision it last wrote for each key, and tries its
next change on that (one round trip: a fresh claim is a `create`, a completion an
`update`); a lost race, or an answer that would change nothing (a claim finding another's
`busy`), is decided again on a record read from the leader. The records of calls running
here are never forgotten.

Each write carries a nonce. A write whose answer is lost (a timeout, an election) may
have been stored: the record read back says whether it was this one, so a claim whose
acknowledgement was lost is still this process's claim, not a stranger's `busy` that
would end `unknown` a lease later; and a completion is written until it is known stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, ServiceUnavailableError
from nats.js.kv import KeyValue

from actors.runtime.clock import SERVER_CLOCK
from actors.runtime.nats import kv_latest, kv_read
from actors.tools.decisions import (
    Claim,
    ClaimOp,
    FinishOp,
    LedgerRecord,
    ResolveOp,
    decide_claim,
    decide_finish,
    decide_resolve,
    decide_settle,
)
from protocols import TERMINAL_STATUSES, JobSnapshot, Names, decode_as

# Records this process remembers beside those of its running calls.
_REMEMBERED = 65_536
# How long a write whose answer was lost waits for the bucket to answer a read.
_READ_BACK_S = 30.0
# What a write or read may raise when the bucket does not answer (an election, a lost ack).
_UNANSWERED = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    ServiceUnavailableError,
)


@dataclass(slots=True)
class _Known:
    """A record as this process last wrote or read it."""

    tool: str
    record: LedgerRecord | None
    revision: int  # 0: never written (the next write creates it)
    write: str = ""  # the nonce of the write that stored `record`


class ClusterLedger:
    """`Ledger`'s operations on the cluster's claims bucket. `await ClusterLedger.open(js,
    names, owner=...)`; the key of a call must be claimed (in this process) before its
    outcome is recorded, as the executor does."""

    # A result stored in a record makes it larger than the bucket takes (the server's
    # max_payload): the executor stores large results by reference before recording.
    keeps_large_results = False

    def __init__(self, kv: KeyValue, *, owner: str) -> None:
        self._kv = kv
        self._owner = owner
        # Records of calls running here (their claim is this process's): never forgotten,
        # and as many as the executor runs at once.
        self._running: dict[str, _Known] = {}
        # Every other record seen, the least recently used forgotten first.
        self._seen: OrderedDict[str, _Known] = OrderedDict()
        # key -> nonce of a write whose answer never came (it may be stored or not).
        self._unanswered: OrderedDict[str, str] = OrderedDict()
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
        op = ClaimOp(key, job_id, tool, args_hash, lease, side_effects, dead_owner=dead_owner)
        if self._known(key) is None:
            self._remember(key, _Known(tool, None, 0))  # a fresh key: try to create it first

        def decide(known: _Known, now: float) -> tuple[Claim, LedgerRecord | None]:
            record = known.record
            if (
                record is not None
                and record.state == "in_progress"
                and record.owner == self._owner
                and known.write
                and known.write == self._unanswered.get(key)
            ):
                # This process's own claim, stored though its answer was lost: the tool
                # has not run under it, so it is taken up again with a fresh lease.
                renewed = replace(record, lease_until=now + op.lease, updated_at=now)
                return Claim("claimed", epoch=record.epoch), renewed
            return decide_claim(record, op, owner=self._owner, now=now)

        claim: Claim = await self._change(key, decide)
        return claim

    async def complete(self, key: str, epoch: int, result: Any) -> bool:
        json.dumps(result)  # refuse a result that cannot be stored
        return await self._finish(FinishOp(key, epoch, "succeeded", result, None, False))

    async def fail(self, key: str, epoch: int, error: dict[str, Any], *, retryable: bool) -> bool:
        return await self._finish(FinishOp(key, epoch, "failed", None, error, retryable))

    async def abandon(self, key: str, epoch: int, error: dict[str, Any]) -> bool:
        return await self._finish(FinishOp(key, epoch, "unknown", None, error, False))

    async def resolve(
        self, key: str, epoch: int, *, happened: bool, result: Any = None, lease: float = 60.0
    ) -> Claim:
        if happened:
            json.dumps(result)
        op = ResolveOp(key, epoch, happened, result, lease)
        claim: Claim = await self._change(
            key, lambda known, now: decide_resolve(known.record, op, owner=self._owner, now=now)
        )
        return claim

    async def get(self, key: str) -> LedgerRecord | None:
        """The record as the bucket's leader has it now."""
        return (await self._read(key)).record

    async def _finish(self, op: FinishOp) -> bool:
        done: bool = await self._change(
            op.key, lambda known, now: decide_finish(known.record, op, now=now)
        )
        return done

    async def _change(
        self, key: str, decide: Callable[[_Known, float], tuple[Any, LedgerRecord | None]]
    ) -> Any:
        """Decide on the record as last known, write by compare-and-set; when the record
        had moved, read it from the leader and decide again.

        An answer that changes nothing is given on a record read by this call, never on
        a remembered one (a call that found another's claim `busy` must see it end). A
        write whose answer is lost (a timeout, an election) may have been stored: each
        write carries a nonce, and the record read back says whether it was this one."""
        known = self._entry(key)
        fresh = False
        while True:
            self.operations += 1
            outcome, new = decide(known, SERVER_CLOCK.now())  # leases on the servers' clock
            if new is None:
                if fresh:
                    return outcome
                known, fresh = await self._read(key), True
                continue
            nonce = secrets.token_hex(8)
            value = json.dumps({**dataclasses.asdict(new), "write": nonce}).encode()
            subject_key = _subject_key(known.tool, key)
            try:
                if known.revision == 0:
                    written = await self._kv.create(subject_key, value)
                else:
                    written = await self._kv.update(subject_key, value, last=known.revision)
            except KeyWrongLastSequenceError:
                self.races += 1
                known, fresh = await self._read(key), True
                continue
            except _UNANSWERED:
                self._note_unanswered(key, nonce)
                known, fresh = await self._read_back(key), True
                if known.write != nonce:
                    continue  # not stored: decide again on what is there
                written = known.revision
            self._unanswered.pop(key, None)
            self._remember(key, _Known(known.tool, new, written, nonce))
            return outcome

    async def _read(self, key: str) -> _Known:
        tool = self._entry(key).tool
        data, revision = await kv_read(self._kv, _subject_key(tool, key))
        record, write = _decoded(data) if data else (None, "")
        known = _Known(tool, record, revision, write)
        self._remember(key, known)
        return known

    async def _read_back(self, key: str) -> _Known:
        """The record after a write whose answer was lost, read once the bucket answers
        again (an election takes seconds); the last error if it does not within
        `_READ_BACK_S`."""
        deadline = time.monotonic() + _READ_BACK_S
        pause = 0.05
        while True:
            try:
                return await self._read(key)
            except _UNANSWERED:
                if time.monotonic() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _note_unanswered(self, key: str, nonce: str) -> None:
        self._unanswered[key] = nonce
        self._unanswered.move_to_end(key)
        while len(self._unanswered) > _REMEMBERED:
            self._unanswered.popitem(last=False)

    def _known(self, key: str) -> _Known | None:
        return self._running.get(key) or self._seen.get(key)

    def _entry(self, key: str) -> _Known:
        known = self._known(key)
        if known is None:
            raise KeyError(f"ledger key {key} was not claimed in this process")
        return known

    def _remember(self, key: str, known: _Known) -> None:
        record = known.record
        if record is not None and record.state == "in_progress" and record.owner == self._owner:
            self._seen.pop(key, None)
            self._running[key] = known
            return
        self._running.pop(key, None)
        self._seen[key] = known
        self._seen.move_to_end(key)
        while len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)


def _decoded(value: bytes) -> tuple[LedgerRecord, str]:
    """A stored record and the nonce of the write that stored it ("" before nonces)."""
    fields = json.loads(value)
    write = fields.pop("write", "")
    return LedgerRecord(**fields), write


def _subject_key(tool: str, key: str) -> str:
    """A record's key in the bucket: under its tool, so that an executor's NATS user may
    write only its own tools' records."""
    return f"{tool}.{key}"


# --- administration (`rig ledger` with RIG_LEDGER=cluster) ------------------------------


async def list_claims(
    js: JetStreamContext, names: Names, *, limit: int = 100, state: str | None = None
) -> list[LedgerRecord]:
    """The newest records first (at most `limit`), optionally only those in `state`."""
    records = [_decoded(value)[0] async for _, value in kv_latest(js, names.claims_bucket)]
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
        record = _decoded(data)[0] if data else None
        now = SERVER_CLOCK.now()
        new = decide_settle(record, happened=happened, result=result, by=by, now=now)
        value = json.dumps(dataclasses.asdict(new)).encode()
        try:
            await kv.update(found[0], value, last=revision)
        except KeyWrongLastSequenceError:
            continue  # it changed since it was read: decide on what it is now
        return new


async def prune_claims(
    js: JetStreamContext, names: Names, *, older_than: float, retention: float | None = None
) -> int:
    """Delete finished records of ended jobs not updated for `older_than` seconds; return
    how many (never an `in_progress` or `unknown` one: it may stand for an effect that
    happened; never one of a job that may take the call again: `actors.tools.ledger.prune`).
    With `retention` (the deployment's `RIG_RETENTION`), a job whose snapshot is gone
    counts as ended when its record is older than that: only an ended job's snapshot
    expires, and the bucket is this deployment's alone. Each delete is conditional on the
    revision read, so a record that changed is kept."""
    kv = await js.key_value(names.claims_bucket)
    cutoff = time.time() - older_than
    candidates: list[tuple[str, bytes, LedgerRecord]] = []
    async for subject_key, value in kv_latest(js, names.claims_bucket):
        record = _decoded(value)[0]
        if record.state in ("succeeded", "failed") and record.updated_at < cutoff:
            candidates.append((subject_key, value, record))
    ended, kept = await jobs_ended(js, names, {record.job_id for _, _, record in candidates})
    expired = time.time() - retention if retention is not None else None
    deleted = 0
    for subject_key, value, record in candidates:
        gone = expired is not None and record.job_id not in kept and record.updated_at < expired
        if record.job_id not in ended and not gone:
            continue
        data, revision = await kv_read(kv, subject_key)
        if data != value:
            continue
        with contextlib.suppress(KeyWrongLastSequenceError):
            await kv.delete(subject_key, last=revision)
            deleted += 1
    return deleted


async def jobs_ended(
    js: JetStreamContext, names: Names, job_ids: set[str]
) -> tuple[set[str], set[str]]:
    """Which of these jobs have ended (a terminal snapshot in `RIG_JOBS`), and which Rig
    keeps a snapshot of. A job Rig does not know (no snapshot: another deployment's, or
    one whose snapshot expired) is not counted as ended."""
    jobs = await js.key_value(names.jobs_bucket)
    room = asyncio.Semaphore(32)

    async def status(job_id: str) -> str | None:
        async with room:
            data, _revision = await kv_read(jobs, job_id)
        return decode_as(JobSnapshot, data)[0].status if data else None

    ids = sorted(job_ids)
    answers = dict(zip(ids, await asyncio.gather(*(status(job_id) for job_id in ids)), strict=True))
    ended = {job_id for job_id, said in answers.items() if said in TERMINAL_STATUSES}
    return ended, {job_id for job_id, said in answers.items() if said is not None}


async def _find(js: JetStreamContext, names: Names, key: str) -> tuple[str, LedgerRecord] | None:
    """A record by its idempotency key, whatever its tool: (its key in the bucket, it)."""
    if not key or any(c in key for c in ".*> "):
        return None
    async for subject_key, value in kv_latest(js, names.claims_bucket, f"*.{key}"):
        return subject_key, _decoded(value)[0]
    return None
