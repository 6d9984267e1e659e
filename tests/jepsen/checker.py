"""The checker: Rig's promises, verified on what a run saved (pure: no I/O but reading).

A run folder holds `history.jsonl` (every client operation and fault, with times),
`jobs.json` (each submitted job's status after the faults stopped, or null where the
cluster does not know it), `journals.json` (each job's events) and `bank.jsonl` (every
request the tools made of the effects sink). The promises:

- `lost`: a job whose submit was answered `ok` exists; `phantom`: a job whose every
  submit was refused (`fail`) does not. A submit with no answer (`info`: a timeout,
  `unavailable`) may have made the job, once, under its id.
- `stuck`: every job that exists is terminal, or waits for a person with a stated reason.
- `journal`: each journal is numbered 1..n with no gap or repeat, holds one `accepted`,
  and at most one terminal status, after which no other status comes; a job that ended
  (or waits for a person) says so last in its journal.
- `effects`: the bank was asked at most once per idempotency key and per job (the
  workload pays once per job), and every call the journal says succeeded reached it.
- `resolve` / `signal`: each resolve (signal) id was applied at most once, to the job it
  was sent to and, for a resolve, at the step the person was shown; one answered `ok`
  was applied; one refused every time was not.
- `cancel`: a cancel answered `ok` left its job `cancelled`.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols import TERMINAL_STATUSES

PROMISES = ("lost", "phantom", "stuck", "journal", "effects", "resolve", "signal", "cancel")


@dataclass
class Verdict:
    problems: dict[str, list[str]] = field(default_factory=lambda: {p: [] for p in PROMISES})
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not any(self.problems.values())

    def add(self, promise: str, problem: str) -> None:
        self.problems[promise].append(problem)

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        if self.valid:
            return f"valid: every promise held ({counts})"
        broken = "; ".join(
            f"{p}: {len(found)} ({found[0]}{' ...' if len(found) > 1 else ''})"
            for p, found in self.problems.items()
            if found
        )
        return f"INVALID: {broken} ({counts})"

    def as_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "counts": self.counts, "problems": self.problems}


def check_folder(folder: Path) -> Verdict:
    """Check a saved run."""

    def lines(name: str) -> list[dict[str, Any]]:
        text = (folder / name).read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    verdict = check(
        lines("history.jsonl"),
        json.loads((folder / "jobs.json").read_text()),
        json.loads((folder / "journals.json").read_text()),
        lines("bank.jsonl"),
    )
    times = folder / "times.json"
    if times.exists():  # how long the jobs took to settle once the faults stopped
        verdict.counts["settled_s"] = json.loads(times.read_text()).get("settled_s", -1)
    # The timers the servers lost that a supervisor's sweep sent again (a count to read,
    # not a verdict: a late timer is sent again too).
    sweeps = ('"timers.resent"', '"schedule.tick_resent"')
    verdict.counts["timers resent"] = sum(
        any(said in line for said in sweeps)
        for path in folder.glob("work/h*/supervisor.log")
        for line in path.read_text(errors="replace").splitlines()
    )
    return verdict


def check(
    history: list[dict[str, Any]],
    jobs: dict[str, dict[str, Any] | None],
    journals: dict[str, list[dict[str, Any]]],
    bank: list[dict[str, Any]],
) -> Verdict:
    verdict = Verdict()
    ops = _completed(history)
    _submits(verdict, ops, jobs)
    _liveness(verdict, jobs)
    for job_id, job in jobs.items():
        events = journals.get(job_id, [])
        if job is not None:
            _journal(verdict, job_id, events)
            _ends_as_the_job(verdict, job_id, job, events)
        elif events:
            verdict.add("journal", f"{job_id}: {len(events)} events of a job that does not exist")
    _effects(verdict, journals, bank)
    _applied_once(verdict, ops, journals, "resolve", "resolved", "resolve_id")
    _applied_once(verdict, ops, journals, "signal", "signal", "signal_id")
    for op in ops:
        if op["f"] == "cancel" and op["type"] == "ok":
            status = (jobs.get(op["job"]) or {}).get("status")
            if status != "cancelled":
                verdict.add("cancel", f"{op['job']}: cancel answered ok, but it ended {status}")
    types = Counter(f"{op['f']} {op['type']}" for op in ops)
    verdict.counts = {
        "jobs": sum(1 for job in jobs.values() if job is not None),
        "payments": len(bank),
        "faults": sum(1 for op in history if op["process"] == "nemesis" and op["type"] == "invoke"),
        **{name: n for name, n in sorted(types.items())},
    }
    return verdict


def _completed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each client operation once, as it completed (with what it was invoked with); one
    still open at the end counts as `info` (it may have happened)."""
    invoked: dict[int, dict[str, Any]] = {}
    done = []
    for op in history:
        if op["process"] == "nemesis":
            continue
        if op["type"] == "invoke":
            invoked[op["index"]] = op
        else:
            done.append(invoked.pop(op["index"]) | {"type": op["type"], "error": op.get("error")})
    return done + [op | {"type": "info", "error": "no answer"} for op in invoked.values()]


def _submits(
    verdict: Verdict, ops: list[dict[str, Any]], jobs: dict[str, dict[str, Any] | None]
) -> None:
    answers: dict[str, set[str]] = defaultdict(set)
    for op in ops:
        if op["f"] == "submit":
            answers[op["job"]].add(op["type"])
    for job_id, said in answers.items():
        exists = jobs.get(job_id) is not None
        if "ok" in said and not exists:
            verdict.add(
                "lost", f"{job_id}: its submit was answered ok; the cluster has no such job"
            )
        if said == {"fail"} and exists:
            verdict.add("phantom", f"{job_id}: every submit was refused, yet the job exists")


def _liveness(verdict: Verdict, jobs: dict[str, dict[str, Any] | None]) -> None:
    for job_id, job in jobs.items():
        if job is None or job["status"] in TERMINAL_STATUSES:
            continue
        if job["status"] == "waiting_human" and job.get("reason"):
            continue
        if job["status"] == "unanswered":
            verdict.add("stuck", f"{job_id}: the cluster did not answer for it ({job['reason']})")
        else:
            verdict.add(
                "stuck", f"{job_id}: {job['status']} in {job.get('state')} after the faults"
            )


def _journal(verdict: Verdict, job_id: str, events: list[dict[str, Any]]) -> None:
    seqs = [event["seq"] for event in events]
    if seqs != list(range(1, len(seqs) + 1)):
        verdict.add("journal", f"{job_id}: events numbered {_gaps(seqs)}")
    accepted = sum(1 for event in events if event["type"] == "accepted")
    if accepted != 1:
        verdict.add("journal", f"{job_id}: {accepted} `accepted` events")
    statuses = [event["data"].get("status") for event in events if event["type"] == "status"]
    ends = [n for n, status in enumerate(statuses) if status in TERMINAL_STATUSES]
    if len(ends) > 1:
        verdict.add("journal", f"{job_id}: ended {len(ends)} times ({statuses})")
    elif ends and ends[0] != len(statuses) - 1:
        verdict.add("journal", f"{job_id}: a status after its end ({statuses})")


def _ends_as_the_job(
    verdict: Verdict, job_id: str, job: dict[str, Any], events: list[dict[str, Any]]
) -> None:
    """A job that ended, or waits for a person, says so last in its journal."""
    if job["status"] not in (*TERMINAL_STATUSES, "waiting_human"):
        return
    said = [event["data"].get("status") for event in events if event["type"] == "status"]
    if not said or said[-1] != job["status"]:
        last = said[-1] if said else None
        verdict.add("journal", f"{job_id}: is {job['status']}, its journal says {last} last")


def _gaps(seqs: list[int]) -> str:
    repeated = sorted(n for n, count in Counter(seqs).items() if count > 1)
    missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
    return f"with {len(seqs)} events, repeated {repeated[:5]}, missing {missing[:5]}"


def _effects(
    verdict: Verdict, journals: dict[str, list[dict[str, Any]]], bank: list[dict[str, Any]]
) -> None:
    for key, asked in Counter(request["key"] for request in bank).items():
        if asked > 1:
            verdict.add("effects", f"the bank was asked {asked} times under key {key}")
    keys_of: dict[str, set[str]] = defaultdict(set)
    for request in bank:
        keys_of[request["job"]].add(request["key"])
    asked_by = Counter(request["job"] for request in bank)
    for job_id, keys in keys_of.items():
        if len(keys) > 1:
            verdict.add(
                "effects", f"{job_id}: paid {asked_by[job_id]} times under {len(keys)} keys"
            )
    reached = {request["key"] for request in bank}
    for job_id, events in journals.items():
        for event in events:
            data = event["data"]
            if event["type"] == "tool_result" and data.get("ok") and data.get("key") not in reached:
                verdict.add(
                    "effects",
                    f"{job_id}: step {event['step']} paid per its journal, not per the bank",
                )


def _applied_once(
    verdict: Verdict,
    ops: list[dict[str, Any]],
    journals: dict[str, list[dict[str, Any]]],
    f: str,
    event_type: str,
    id_field: str,
) -> None:
    """Each resolve (signal) id applied at most once, where it was meant to be."""
    applied: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for job_id, events in journals.items():
        for event in events:
            if event["type"] == event_type and event["data"].get(id_field):
                applied[event["data"][id_field]].append((job_id, event))
    sent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for op in ops:
        if op["f"] == f:
            sent[op["value"][id_field]].append(op)
    for op_id, attempts in sent.items():
        found = applied.get(op_id, [])
        answers = {op["type"] for op in attempts}
        meant = attempts[0]
        if len(found) > 1:
            verdict.add(f, f"{op_id}: applied {len(found)} times")
        for job_id, event in found:
            if job_id != meant["job"]:
                verdict.add(f, f"{op_id}: sent to {meant['job']}, applied to {job_id}")
            step = meant["value"].get("step")
            if step is not None and event["step"] != step:
                verdict.add(f, f"{op_id}: meant for step {step}, applied at step {event['step']}")
        if "ok" in answers and not found:
            verdict.add(f, f"{op_id}: answered ok, never applied")
        if answers == {"fail"} and found:
            verdict.add(f, f"{op_id}: refused every time ({attempts[-1]['error']}), yet applied")
