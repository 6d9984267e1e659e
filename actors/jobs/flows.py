"""Concurrency keys: at most N jobs with one key run at once; the others wait in order.

Pure, like `rules.py`, whose `Rules` calls these with itself. A job has a key when its
agent declares a `Flow` (the key is a field of its input) or its submission names one
(`concurrency_key`); its key is then `<agent>.<value>`, a `FlowRecord` in `RIG_FLOWS`
that supervisors change by compare-and-set, as they do a thread's (`threads.py`). A job
starts if the key has room (`admit`); otherwise it stays `accepted`, its journal's
`queued` event saying behind how many, in order of priority then arrival. As a job with
a key ends, its last transition sends `FlowEnded`, whose handler frees its place and
starts the next ones (`released`, then `FlowNext` to each). A waiting job counts
against no budget (it has not started), but its deadline runs.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from protocols import (
    AgentInfo,
    FlowEnded,
    FlowRecord,
    FlowWaiter,
    JobSnapshot,
    Outgoing,
    SubmitRequest,
    encode,
    msg_id,
)

if TYPE_CHECKING:
    from actors.jobs.rules import Rules

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def flow_of(info: AgentInfo, request: SubmitRequest) -> tuple[str, int] | None:
    """A submission's concurrency key (`<agent>.<value>`) and limit, if it has one: the
    one it names, else its agent's `Flow` key's value in its input (a job whose input
    lacks the field has none)."""
    flow = info.flow
    value: Any = request.concurrency_key
    if value is None and flow is not None:
        value = request.input
        for part in flow.key.removeprefix("input.").split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value)
    if not _TOKEN.match(text):  # any value, as a subject token
        text = "h" + hashlib.sha256(text.encode()).hexdigest()[:32]
    limit = request.concurrency_limit or (flow.limit if flow is not None else 1)
    return f"{info.name}.{text}", limit


def admit(record: FlowRecord, job: JobSnapshot, now: float) -> tuple[bool, str | None]:
    """Whether `job` runs now: its key has room, and its rate allows a start (the record
    now counts it running). Otherwise it waits (once), before every job of lower
    priority; or, on a debounced key, it is the submit that waits out the window (and
    the one it replaces is named, to be cancelled: itself, when a later submit came
    first, as when its start is handled after the later one's submission)."""
    record.limit, record.rate_per_min = job.flow_limit, job.flow_rate
    record.debounce_s = job.flow_debounce
    if job.job_id in record.running or any(w.job_id == job.job_id for w in record.waiting):
        return job.job_id in record.running, None
    debouncing = record.debouncing
    if debouncing is not None and debouncing.job_id == job.job_id:
        return False, None  # it waits out its window (`pump` lets it in)
    if job.flow_debounce is not None:
        if job.created_at < record.newest:
            return False, job.job_id  # a later submit replaced it already (asked again)
        replaced = debouncing.job_id if debouncing is not None else None
        window_ends = now + job.flow_debounce
        record.debouncing = FlowWaiter(job_id=job.job_id, priority=job.priority, at=window_ends)
        record.newest = job.created_at
        return False, replaced
    if _room(record, now) and not _ahead(record, job.job_id, job.priority):
        _run(record, job.job_id, now)
        return True, None
    record.waiting.append(FlowWaiter(job_id=job.job_id, priority=job.priority, at=now))
    record.waiting.sort(key=lambda w: (-w.priority, w.at))
    return False, None


def _room(record: FlowRecord, now: float) -> bool:
    """Whether the key may start a job now: fewer than its limit run, and its last start
    was at least a rate's interval ago."""
    if _spaced(record) > now:
        return False
    return len(record.running) < record.limit


def _spaced(record: FlowRecord) -> float:
    """When the key's rate allows its next start (its starts are evenly spaced)."""
    if record.rate_per_min is None or not record.starts:
        return 0.0
    return record.starts[-1] + 60.0 / record.rate_per_min


def _run(record: FlowRecord, job_id: str, now: float) -> None:
    record.running.append(job_id)
    if record.rate_per_min is not None:
        record.starts = [now]


def pump(record: FlowRecord, now: float) -> list[str]:
    """Start what the key now allows: a debounced submit whose window ended joins the
    queue; then the first waiting jobs, while there is room and the rate allows."""
    debouncing = record.debouncing
    if debouncing is not None and debouncing.at <= now:
        record.debouncing = None
        record.waiting.append(debouncing.model_copy(update={"at": now}))
        record.waiting.sort(key=lambda w: (-w.priority, w.at))
    starting = []
    while record.waiting and _room(record, now):
        first = record.waiting.pop(0)
        _run(record, first.job_id, now)
        starting.append(first.job_id)
    return starting


def next_tick(record: FlowRecord, now: float) -> float | None:
    """When the key may start a job it cannot start now (its rate, a debounce window);
    None when nothing waits for the clock."""
    times = []
    if record.debouncing is not None:
        times.append(record.debouncing.at)
    spaced = _spaced(record)
    if record.waiting and spaced > now and len(record.running) < record.limit:
        times.append(spaced)
    return min(times) if times else None


def _ahead(record: FlowRecord, job_id: str, priority: int) -> bool:
    """Whether a job waits that starts before this one (a higher priority, or earlier)."""
    return any(w.priority >= priority and w.job_id != job_id for w in record.waiting)


def released(record: FlowRecord, job_id: str, now: float) -> tuple[bool, list[str]]:
    """Free `job_id`'s place (or its wait); whether the record changed, and the waiting
    jobs that now run (first to start first)."""
    changed = job_id in record.running or any(w.job_id == job_id for w in record.waiting)
    record.running = [r for r in record.running if r != job_id]
    record.waiting = [w for w in record.waiting if w.job_id != job_id]
    if record.debouncing is not None and record.debouncing.job_id == job_id:
        record.debouncing, changed = None, True  # cancelled while it waited out its window
    starting = pump(record, now)
    return changed or bool(starting), starting


def position(record: FlowRecord, job_id: str) -> dict[str, Any]:
    """What `rig status` says of a job waiting for its key."""
    ahead = next((n for n, w in enumerate(record.waiting) if w.job_id == job_id), None)
    where = {
        "key": record.key,
        "limit": record.limit,
        "running": len(record.running),
        "ahead": len(record.waiting) if ahead is None else ahead,
    }
    if record.debouncing is not None and record.debouncing.job_id == job_id:
        where["debounced_until"] = record.debouncing.at
    if record.rate_per_min is not None:
        where["rate_per_min"] = record.rate_per_min
    return where


def start(
    rules: Rules, job: JobSnapshot, info: AgentInfo, record: FlowRecord, runs: bool
) -> JobSnapshot | None:
    """A job with a concurrency key whose record said whether it `runs` (`admit`): it
    starts, or stays accepted, its journal saying behind how many it waits, and listed
    (`rig jobs`)."""
    if runs:
        return rules.start(job, info.graph)
    if job.status != "accepted":
        return None
    where = position(record, job.job_id)
    rules.event(job, "queued", **where)
    rules.index(job)
    if job.deadline is not None:
        rules.set_deadline(job, job.deadline)  # it runs while the job waits
    return job


def ended(rules: Rules, job: JobSnapshot) -> None:
    """A job with a key ended: its place is freed (durably, in its last outbox)."""
    assert job.flow_key is not None
    notice = FlowEnded(job_id=job.job_id, key=job.flow_key)
    job.outbox.append(
        Outgoing(
            subject=rules.names.supervisor_for(job.flow_key),
            msg_id=msg_id(job.job_id, job.event_seq, "flow-ended"),
            data=encode(notice),
        )
    )
