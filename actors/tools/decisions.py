"""The ledger's decisions, pure: what a claim finds and the record it leaves, how an
outcome is recorded under the epoch that claimed, how a reconcile or a person settles an
`unknown` record. Both stores apply them to the record as stored: the SQLite file
(`actors.tools.ledger`, in a transaction) and the cluster's bucket
(`actors.tools.cluster`, by compare-and-set), so docs/design/ledger.md's table holds for each.
`LedgerStore` is what the executor asks of either.

    (no record) --claim--> in_progress --complete--> succeeded   (result returned to repeats)
                               |        --fail-----> failed      (retryable: claimable again)
                               '--lease runs out---> unknown     (the effect may have happened)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

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


def decide_claim(
    record: LedgerRecord | None, op: ClaimOp, *, owner: str, now: float
) -> tuple[Claim, LedgerRecord | None]:
    """What a claim finds, and the record it leaves (None: unchanged). Pure."""
    if record is None:
        new = LedgerRecord(
            key=op.key,
            job_id=op.job_id,
            tool=op.tool,
            args_hash=op.args_hash,
            state="in_progress",
            epoch=1,
            owner=owner,
            lease_until=now + op.lease,
            result=None,
            error=None,
            retryable=False,
            created_at=now,
            updated_at=now,
        )
        return Claim("claimed", epoch=1), new
    if record.args_hash != op.args_hash:
        return Claim("conflict", record=record), None
    if record.state == "succeeded":
        return Claim("succeeded", record=record), None
    if record.state == "failed" and not record.retryable:
        return Claim("failed", record=record), None
    # A holder known to be dead (`op.dead_owner`) ends its lease now: it cannot finish.
    if record.state == "in_progress" and record.lease_until > now and record.owner != op.dead_owner:
        return Claim("busy", record=record, retry_after=record.lease_until - now), None
    if record.state in ("in_progress", "unknown") and op.side_effects:
        # The lease ran out with the effect possibly done: never run it blindly.
        if record.state == "in_progress":
            return Claim("unknown", record=record), replace(record, state="unknown", updated_at=now)
        return Claim("unknown", record=record), None
    epoch = record.epoch + 1
    new = replace(
        record,
        state="in_progress",
        epoch=epoch,
        owner=owner,
        lease_until=now + op.lease,
        error=None,
        retryable=False,
        updated_at=now,
    )
    return Claim("claimed", epoch=epoch), new


def decide_finish(
    record: LedgerRecord | None, op: FinishOp, *, now: float
) -> tuple[bool, LedgerRecord | None]:
    """Record an outcome if `op.epoch` still owns the key; False if it was fenced off. Pure.

    A record that turned `unknown` at `op.epoch` (its lease ran out while the run was
    still going) takes that run's late success or final failure: it answers the very
    question `unknown` asks, and no other run has been started since.
    """
    if record is None or record.epoch != op.epoch:
        return False, None
    late = record.state == "unknown" and (
        op.state == "succeeded" or (op.state == "failed" and not op.retryable)
    )
    if record.state != "in_progress" and not late:
        return False, None
    return True, replace(
        record,
        state=op.state,
        result=op.result,
        error=op.error,
        retryable=op.retryable,
        updated_at=now,
    )


def decide_resolve(
    record: LedgerRecord | None, op: ResolveOp, *, owner: str, now: float
) -> tuple[Claim, LedgerRecord | None]:
    """Settle an `unknown` record from what the outside world says (a tool's reconcile).

    Happened: the record becomes `succeeded` with the result found, and the claim says
    so. Did not happen: the key is claimed again under a new epoch, to run the tool. A
    record that is no longer the `unknown` of `op.epoch` (someone settled it first) is
    left alone and returned as a claim would find it. Pure.
    """
    if record is None:
        return Claim("conflict"), None
    if record.state != "unknown" or record.epoch != op.epoch:
        # Settled by someone else first: say what a claim would find, change nothing.
        if record.state == "succeeded":
            return Claim("succeeded", record=record), None
        if record.state == "failed" and not record.retryable:
            return Claim("failed", record=record), None
        if record.state == "unknown":
            return Claim("unknown", record=record), None
        return Claim("busy", record=record, retry_after=max(record.lease_until - now, 0.1)), None
    if op.happened:
        new = replace(record, state="succeeded", result=op.result, updated_at=now)
        return Claim("succeeded", record=new), new
    epoch = record.epoch + 1
    return Claim("claimed", epoch=epoch), replace(
        record,
        state="in_progress",
        epoch=epoch,
        owner=owner,
        lease_until=now + op.lease,
        updated_at=now,
    )


@dataclass(slots=True)
class ClaimOp:
    key: str
    job_id: str
    tool: str
    args_hash: str
    lease: float
    side_effects: bool
    future: asyncio.Future[Any] = field(repr=False, default=None)  # type: ignore[arg-type]
    dead_owner: str | None = None


@dataclass(slots=True)
class FinishOp:
    key: str
    epoch: int
    state: RecordState
    result: Any
    error: dict[str, Any] | None
    retryable: bool
    future: asyncio.Future[Any] = field(repr=False, default=None)  # type: ignore[arg-type]


@dataclass(slots=True)
class ResolveOp:
    key: str
    epoch: int
    happened: bool
    result: Any
    lease: float
    future: asyncio.Future[Any] = field(repr=False, default=None)  # type: ignore[arg-type]


def decide_settle(
    record: LedgerRecord | None, *, happened: bool, result: Any, by: str, now: float
) -> LedgerRecord:
    """A person's answer to an `unknown` record: it happened (with `result`), or it did
    not (the call may run again). Raises `ValueError` for a record that is not `unknown`.
    Pure."""
    if record is None:
        raise ValueError("no such record")
    if record.state != "unknown":
        raise ValueError(f"the record is {record.state}, not unknown: there is nothing to settle")
    owner = f"settled by {by or 'a person'}"
    if happened:
        return replace(record, state="succeeded", result=result, owner=owner, updated_at=now)
    error = {"code": "settled_not_happened", "message": f"{owner}: the effect did not happen"}
    return replace(record, state="failed", error=error, retryable=True, owner=owner, updated_at=now)


class LedgerStore(Protocol):
    """What the tool executor asks of a ledger, whichever store keeps it."""

    # Whether a record holds a result of any size (else large results go by reference).
    keeps_large_results: bool

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
    ) -> Claim: ...

    async def complete(self, key: str, epoch: int, result: Any) -> bool: ...

    async def fail(
        self, key: str, epoch: int, error: dict[str, Any], *, retryable: bool
    ) -> bool: ...

    async def abandon(self, key: str, epoch: int, error: dict[str, Any]) -> bool: ...

    async def resolve(
        self, key: str, epoch: int, *, happened: bool, result: Any = None, lease: float = 60.0
    ) -> Claim: ...

    async def get(self, key: str) -> LedgerRecord | None: ...

    async def close(self) -> None: ...
