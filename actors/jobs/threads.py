"""A thread's turns: the rules of jobs that are turns of one conversation.

Pure, like `actors/jobs/rules.py`, whose `Rules` calls these with itself. A thread is a
`ThreadRecord` in `RIG_THREADS` (the supervisors change it by compare-and-set): the turn
that runs, the turns waiting for it, and the turns that ended. One turn runs at a time
(`take_turn`); as a turn ends it sends `ThreadEnded`, and the record keeps the turn once
and hands the thread to the next (`thread_ended`).

A turn's context carries the thread's earlier turns, as many of the newest as the
agent's `thread_tokens` hold (`thread_context`, four characters a token). What no longer
fits is dropped, oldest first; or, when the graph names a summarising state
(`Graph.compact`), the turn starts there: its context holds the summary so far and the
older turns, and the arguments of the edge the LLM takes are the new summary
(`compacted`, journaled as `compacted`). The turn then goes on with the summary and the
newest turns in its context, and the thread keeps the summary as the turn ends. The
summary is a decision of one step of one job, so a redelivered step or a restarted
supervisor cannot make it twice, and a replay sees the same context.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from protocols import (
    AgentInfo,
    Compaction,
    Edge,
    JobSnapshot,
    Outgoing,
    ThreadEnded,
    ThreadRecord,
    ThreadSummary,
    ThreadTurn,
    encode,
    msg_id,
)

if TYPE_CHECKING:
    from actors.jobs.rules import Rules

# The most of one turn a thread keeps (its results beyond are left out, and said so).
TURN_MAX_BYTES = 8192

# The ended turns a thread keeps (the oldest are dropped, and counted).
THREAD_TURNS_KEPT = 50


def start(
    rules: Rules, job: JobSnapshot, info: AgentInfo, record: ThreadRecord, runs: bool, tokens: int
) -> JobSnapshot | None:
    """A turn of a thread whose record said whether it `runs` (`take_turn`): it starts
    with the thread's earlier turns in its context, `tokens` of them at most (first
    summarising them, when they no longer fit and the graph says how), is refused
    (`thread_busy`), or waits: it stays
    accepted, its journal saying for which turn, until that one ends (the transition is
    written all the same: the job is stored, and its submission's events go out)."""
    if runs:
        graph = info.graph
        plan = compaction(record, tokens) if graph.compact else None
        if plan is None:
            job.thread_context = thread_context(record, tokens)
            return rules.start(job, graph)
        job.compaction, job.thread_context = plan
        return rules.start(job, graph, at=graph.compact)
    if job.thread_busy == "refuse":
        message = (
            f"thread {job.thread!r} runs job {record.active} now; this turn was refused "
            "(thread_busy=refuse): submit it again once that one ended"
        )
        return rules.finish(job, "failed", error={"code": "thread_busy", "message": message})
    rules.event(job, "thread", thread=job.thread, waits_for=record.active)
    rules.index(job)  # listed while it waits (`rig jobs`): its status does not change
    return job


def compacted(
    rules: Rules, job: JobSnapshot, edge: Edge | None, summary: dict[str, Any] | None
) -> None:
    """The turn leaves its graph's summarising state by `edge`: with a `summary` (the
    edge's arguments), which the turn's context now carries before the newest turns (and
    the thread keeps as the turn ends); or without one (the safe edge: the model gave no
    valid summary), when the context is the newest turns alone."""
    plan = job.compaction
    assert plan is not None and job.thread is not None
    job.compaction = None
    previous = [entry for entry in job.thread_context if "summary" in entry]
    if summary:
        kept = ThreadSummary(summary=summary, through=plan.through, job_id=job.job_id)
        job.thread_summary = kept
        job.thread_context = [kept.entry(), *plan.recent]
    else:
        job.thread_context = [*previous, *plan.recent]
    rules.event(
        job,
        "compacted",
        thread=job.thread,
        edge=edge.name if edge is not None else None,
        summary=summary or None,
        through=plan.through,
        kept=len(plan.recent),
    )


def ended(rules: Rules, job: JobSnapshot) -> None:
    """A turn's last transition tells the thread (durably, in its outbox): the thread
    keeps the turn and its summary, and its next turn starts."""
    assert job.thread is not None
    turn = turn_of(job) if job.state is not None else None  # None: it never ran
    notice = ThreadEnded(
        job_id=job.job_id, thread=job.thread, turn=turn, summary=job.thread_summary
    )
    job.outbox.append(
        Outgoing(
            subject=rules.names.supervisor_for(job.thread),
            msg_id=msg_id(job.job_id, job.event_seq, "thread-ended"),
            data=encode(notice),
        )
    )


def turn_of(job: JobSnapshot) -> ThreadTurn:
    """What a thread keeps of a turn that ended: its input, answer and results, and why
    its decisions went as they did (the reasons given, a person's notes)."""
    said = [str(d["reason"]) for d in job.decisions if d.get("reason")]
    result = job.result or {}
    turn = ThreadTurn(
        job_id=job.job_id,
        status=job.status,
        input=job.input,
        output=result.get("output"),
        results=job.results,
        said=said[-8:],
    )
    if len(encode(turn)) > TURN_MAX_BYTES:
        turn.results = {"$left_out": f"{len(encode(job.results))} bytes of results"}
    return turn


def thread_ended(record: ThreadRecord, ended: ThreadEnded) -> bool:
    """Keep the ended turn and its summary (once) and hand the thread to its next
    waiting job; whether the record changed."""
    changed = False
    if ended.turn is not None and all(t.job_id != ended.job_id for t in record.turns):
        record.turns.append(ended.turn)
        over = len(record.turns) - THREAD_TURNS_KEPT
        if over > 0:
            record.turns, record.dropped = record.turns[over:], record.dropped + over
        if ended.summary is not None and ended.summary.through > record.covered():
            record.summary = ended.summary
            record.compactions += 1
        changed = True
    if ended.job_id in record.waiting:
        record.waiting.remove(ended.job_id)
        changed = True
    if record.active == ended.job_id:
        record.active = record.waiting.pop(0) if record.waiting else None
        changed = True
    return changed


def take_turn(record: ThreadRecord, job: JobSnapshot) -> bool:
    """Whether `job` runs now: the thread runs no other turn (the record now names it the
    active one). Otherwise it is queued (once), unless it refuses to wait."""
    if record.active in (None, job.job_id):
        record.active = job.job_id
        record.waiting = [w for w in record.waiting if w != job.job_id]
        return True
    if job.thread_busy != "refuse" and job.job_id not in record.waiting:
        record.waiting.append(job.job_id)
    return False


def _uncovered(record: ThreadRecord) -> list[dict[str, Any]]:
    """The kept turns after those the summary covers, oldest first, as JSON."""
    first = record.covered() - record.dropped  # where the summary's turns end in `turns`
    return [turn.model_dump(mode="json") for turn in record.turns[max(first, 0) :]]


def _size(entry: dict[str, Any]) -> int:
    return len(json.dumps(entry))


def _newest(turns: list[dict[str, Any]], room: int) -> list[dict[str, Any]]:
    """The newest of `turns` whose JSON fits `room` characters, oldest first."""
    chosen: list[dict[str, Any]] = []
    for turn in reversed(turns):
        room -= _size(turn)
        if room < 0:
            break
        chosen.append(turn)
    return chosen[::-1]


def thread_context(record: ThreadRecord, tokens: int) -> list[dict[str, Any]]:
    """What a turn's context carries of its thread: the summary of its older turns (if
    one was made), then the newest turns after it whose JSON fits `tokens` (four
    characters a token) with it, oldest first."""
    head = [record.summary.entry()] if record.summary is not None else []
    room = tokens * 4 - sum(_size(entry) for entry in head)
    return [*head, *_newest(_uncovered(record), room)]


def compaction(record: ThreadRecord, tokens: int) -> tuple[Compaction, list[dict[str, Any]]] | None:
    """None while the summary and the turns after it fit `tokens`; else the plan of a
    summarising step, and its context: the summary so far and the older turns, which the
    new summary covers (those that do not fit the budget are counted, not shown); the
    newest that fit half the budget stay as they are."""
    turns = _uncovered(record)
    head = [record.summary.entry()] if record.summary is not None else []
    room = tokens * 4
    if sum(_size(entry) for entry in [*head, *turns]) <= room:
        return None
    recent = _newest(turns, room // 2)
    older = turns[: len(turns) - len(recent)]
    through = record.dropped + len(record.turns) - len(recent)
    shown = _newest(older, room - sum(_size(entry) for entry in head))
    return Compaction(through=through, recent=recent), [*head, *shown]
