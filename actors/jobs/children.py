"""A job's children: the rules of an edge that starts child jobs of other agents.

Pure, like `actors/jobs/rules.py`, whose `Rules` calls these with itself. An edge with
`agent=` starts one child job (or, with `map=`, one per item of a list argument), an
edge with `agents=` one of each; the parent waits in phase `child` with the step's
children in `JobSnapshot.waiting`. Each child's id is the parent's id, step and index
(`child_job_id`), so a decision handled twice starts the same children once. Each gets
an equal share of what the parent had left (steps, tokens, cost) and the parent's
deadline; a child's own agent may allow less. At most `at_once` run together; the rest
wait and start as others end. The edge is done when every child ended (`join="all"`:
it succeeds if each did) or when the first succeeds (`join="first"`: the others are
cancelled). What each child spent is charged to the parent as it ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protocols import (
    Budget,
    CancelJob,
    CancelRequest,
    ChildEnded,
    Children,
    ChildSlot,
    Edge,
    Graph,
    JobSnapshot,
    Outgoing,
    ParentLink,
    StartJob,
    child_job_id,
    encode,
    msg_id,
)

if TYPE_CHECKING:
    from actors.jobs.rules import Rules


def begin(
    rules: Rules, job: JobSnapshot, graph: Graph, edge: Edge, args: dict[str, Any]
) -> JobSnapshot:
    """Take `edge`: make its children (`slots`), start as many as may run at once, and
    wait for them; or, when the parent cannot afford them, end by its budget."""
    over = rules.over_budget(job)  # a person's choice is not checked on the way here
    if over is not None:
        return rules.exhaust(job, graph, *over)
    slots = _slots(job, edge, args)
    share, short = _share(job, max(len(slots), 1))
    if short is not None:
        return rules.exhaust(job, graph, "steps" if "step" in short else "tokens", short)
    assert share is not None
    at_once = edge.at_once or max(len(slots), 1)
    job.waiting = Children(
        step=job.step, edge=edge.name, share=share, at_once=at_once, join=edge.join, slots=slots
    )
    job.phase = "child"
    job.children.extend(slot.job_id for slot in slots if slot.job_id not in job.children)
    for slot in slots[:at_once]:
        if slot.state == "waiting":
            _start(rules, job, slot, edge)
    return _join(rules, job, graph, edge)


def ended(rules: Rules, job: JobSnapshot, graph: Graph, message: ChildEnded) -> JobSnapshot | None:
    """A child of the step the parent waits in ended: charge what it spent, keep its
    end, start the next waiting child, and take the edge once its join is met. A
    parent its child brought over budget stops by its own limit (its other children
    are cancelled)."""
    waiting = job.waiting
    if job.terminal or job.phase != "child" or waiting is None or message.step != job.step:
        return None  # the parent moved on (a cancel, its deadline): the child's end is old
    slot = next((s for s in waiting.slots if s.job_id == message.child), None)
    if slot is None or slot.state != "running":
        return None  # not this step's child, or its end was counted already
    if not rules.takes_report(job, message.kind):
        return None
    assert job.state is not None and job.pending_edge is not None
    edge = graph.state(job.state).edge(job.pending_edge)
    assert edge is not None
    job.usage.add(message.usage)
    job.child_steps += message.steps
    slot.state, slot.status = "ended", message.status
    slot.result, slot.error = message.result, message.error
    rules.event(
        job,
        "child_ended",
        child=message.child,
        agent=message.agent,
        status=message.status,
        result=message.result,
        error=message.error,
        usage=message.usage.model_dump(),
        steps=message.steps,
        spent=rules.spent(job),
    )
    over = rules.over_budget(job) or handed_down(job, message)
    if over is not None:
        stop(rules, job, f"the job ran out of {over[0]}")
        job.waiting = None
        return rules.exhaust(job, graph, *over)
    return _join(rules, job, graph, edge)


def stop(rules: Rules, job: JobSnapshot, reason: str) -> None:
    """Cancel every running child of the step (a durable `CancelJob`, which the child's
    own cancel carries down to its calls and children; one whose start has not been
    handled yet is cancelled once it is)."""
    waiting = job.waiting
    if waiting is None:
        return
    for slot in waiting.slots:
        if slot.state != "running":
            continue
        command = CancelJob(
            job_id=slot.job_id,
            command_id=f"parent-{job.step}",
            request=CancelRequest(
                job_id=slot.job_id, reason=f"its parent {job.job_id}: {reason}"[:4000]
            ),
            by_parent=True,
        )
        job.outbox.append(
            Outgoing(
                subject=rules.names.supervisor_for(slot.job_id),
                msg_id=msg_id(slot.job_id, 0, f"cancel-parent-{job.step}"),
                data=encode(command),
            )
        )


def handed_down(job: JobSnapshot, message: ChildEnded) -> tuple[Any, str] | None:
    """The parent's own limit, when its child (charged already) ran out of a limit that
    was all the parent had left of it: the parent cannot go on either."""
    kind = (message.error or {}).get("exhausted")
    given, budget = message.budget, job.budget
    if given is None or kind not in ("tokens", "cost", "steps"):
        return None
    left: float
    had: float
    if kind == "tokens" and budget.max_tokens is not None and given.max_tokens is not None:
        left = budget.max_tokens - (job.usage.tokens - message.usage.tokens)
        had = given.max_tokens
    elif kind == "cost" and budget.max_cost is not None and given.max_cost is not None:
        left = budget.max_cost - (job.usage.cost - message.usage.cost)
        had = given.max_cost
    elif kind == "steps":
        left = budget.max_steps - job.step - (job.child_steps - message.steps)
        had = given.max_steps
    else:
        return None
    if had < left:
        return None  # the child's own limit, or its share, was lower: the parent has more
    return kind, (
        f"its child job {message.child} ran out of the {kind} it was given, all the job "
        f"had left ({had:g})"
    )


def _slots(job: JobSnapshot, edge: Edge, args: dict[str, Any]) -> list[ChildSlot]:
    """The edge's children, in order: one per agent of `agents`, or one of `agent` per
    item of `args[map]` (an item that is no object fails its child, which never starts),
    or the one child of `agent`."""
    if edge.map is not None:
        items = args.get(edge.map)
        if not isinstance(items, list):
            items = []  # the edge's model requires the list; a person's args may lack it
        assert edge.agent is not None
        slots = []
        for i, item in enumerate(items):
            slot = ChildSlot(job_id=child_job_id(job.job_id, job.step, i), agent=edge.agent)
            if isinstance(item, dict):
                slot.input = item
            else:
                slot.state, slot.status = "ended", "failed"
                slot.error = {
                    "code": "schema_error",
                    "message": f"item {i} of {edge.map!r} is {type(item).__name__}, not an "
                    "object: a child's input is an object",
                }
            slots.append(slot)
        return slots
    return [
        ChildSlot(job_id=child_job_id(job.job_id, job.step, i), agent=agent, input=args)
        for i, agent in enumerate(edge.starts)
    ]


def _share(job: JobSnapshot, count: int) -> tuple[Budget | None, str | None]:
    """Each of `count` children's share of what the parent has left; or why there is
    not enough for them (a step or a token each)."""
    budget, usage = job.budget, job.usage
    steps = (budget.max_steps - job.step - job.child_steps) // count
    if steps < 1:
        return None, f"no step left for {count} child job(s) (max_steps {budget.max_steps})"
    tokens = None if budget.max_tokens is None else (budget.max_tokens - usage.tokens) // count
    if tokens is not None and tokens < 1:
        return None, f"no tokens left for {count} child job(s) (max_tokens {budget.max_tokens})"
    cost = None if budget.max_cost is None else (budget.max_cost - usage.cost) / count
    return Budget(max_steps=steps, max_tokens=tokens, max_cost=cost), None


def _start(rules: Rules, job: JobSnapshot, slot: ChildSlot, edge: Edge) -> None:
    """Send the child's `StartJob` (its id names it: sent twice, it starts once)."""
    assert job.waiting is not None and slot.input is not None
    depth = job.parent.depth + 1 if job.parent is not None else 1
    start = StartJob(
        job_id=slot.job_id,
        agent=slot.agent,
        input=slot.input,
        budget=job.waiting.share,
        deadline=job.deadline,
        accepted_at=rules.now,
        sampling=job.sampling,
        trace_parent=job.trace,
        parent=ParentLink(
            job_id=job.job_id, agent=job.agent, step=job.step, edge=edge.name, depth=depth
        ),
    )
    rules.event(
        job, "child_started", child=slot.job_id, agent=slot.agent, input=slot.input, depth=depth
    )
    slot.state, slot.input = "running", None
    job.outbox.append(
        Outgoing(
            subject=rules.names.supervisor_for(slot.job_id),
            msg_id=msg_id(slot.job_id, 0, "start"),
            data=encode(start),
        )
    )


def _join(rules: Rules, job: JobSnapshot, graph: Graph, edge: Edge) -> JobSnapshot:
    """Start waiting children while there is room; take the edge once its join is met:
    its result is the child's (one child) or their ends in order (a fan-out), checked by
    the edge's verifier if it has one; a join not met takes the edge's failure path."""
    waiting = job.waiting
    assert waiting is not None and job.state is not None
    slots = waiting.slots
    won = next((s for s in slots if s.status == "succeeded"), None)
    if not (waiting.join == "first" and won is not None):
        running = sum(s.state == "running" for s in slots)
        for slot in slots:
            if running >= waiting.at_once:
                break
            if slot.state == "waiting":
                _start(rules, job, slot, edge)
                running += 1
        if any(s.state != "ended" for s in slots):
            return job  # still waiting for children
    else:
        stop(rules, job, f"child job {won.job_id} succeeded first")
    failed = [s for s in slots if s.status != "succeeded"]
    result: Any = [s.outcome() for s in slots] if edge.fans_out else slots[0].result
    job.results[edge.name if edge.fans_out else slots[0].agent] = result
    job.waiting = None
    done = won is not None if waiting.join == "first" else not failed
    if not done:
        return rules.enter(
            job, graph, graph.fail_target(job.state, edge), edge=edge.name, reason=_why(failed)
        )
    job.pending_result = result
    if edge.verifier is not None:
        return rules.verify(job, edge)
    return rules.passed(job, graph, edge)


def _why(failed: list[ChildSlot]) -> str:
    """Which children did not succeed, and why, in words."""
    ends = [
        f"child job {s.job_id} of agent {s.agent!r} ended {s.status}: "
        f"{(s.error or {}).get('code', s.status)}: {(s.error or {}).get('message', '')}"
        for s in failed
    ]
    return "; ".join(ends) if ends else "no child job ran"
