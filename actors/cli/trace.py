"""`rig trace JOB`: a job's waterfall from its journal alone (no collector needed).

Each report in the journal says which process handled its command, when it began and
how long it took (`Handled`); each event says when the supervisor wrote it. Between them
they give, per step: the wait in the queue (command sent -> a process began), the work
(the model's share of a decision, a tool's own run, a verifier's check), the way back
(report sent -> the supervisor's transition), a person's wait, and each child job's
life as its parent saw it (started -> ended; `rig trace CHILD` shows its inside).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from protocols import Event

SpanKind = Literal["queue", "decide", "tool", "verify", "supervisor", "human", "child"]


@dataclass(frozen=True)
class Span:
    step: int
    kind: SpanKind
    what: str
    start: float  # seconds after the job was accepted
    ms: float
    by: str = ""  # the process, for work

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["start"], data["ms"] = round(self.start, 6), round(self.ms, 3)
        return data


@dataclass(frozen=True)
class Waterfall:
    job_id: str
    agent: str
    status: str
    seconds: float  # accepted -> the last event
    steps: int
    spans: list[Span]

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "agent": self.agent,
            "status": self.status,
            "seconds": round(self.seconds, 6),
            "steps": self.steps,
            "spans": [span.to_dict() for span in self.spans],
        }


def waterfall(events: list[Event]) -> Waterfall:
    """The spans of a job, in the order they began, from its journal's events."""
    if not events:
        raise ValueError("a job's journal has at least its `accepted` event")
    origin = events[0].ts
    spans: list[Span] = []
    sent = origin  # when the supervisor sent the command being waited on
    agent, status = "", "accepted"

    def add(step: int, kind: SpanKind, what: str, begin: float, end: float, by: str = "") -> None:
        if end > begin or kind == "child":  # a child's life is shown, however short
            spans.append(Span(step, kind, what, begin - origin, (end - begin) * 1000, by))

    def work(event: Event, kind: SpanKind, what: str, after: float) -> float:
        """The queue wait and the work of a report's command; returns when it ended."""
        handled = event.data.get("handled")
        if not isinstance(handled, dict):  # a journal from before reports said
            add(event.step, kind, what, after, event.ts)
            return event.ts
        began, by = float(handled["at"]), str(handled["by"])
        done = began + float(handled["ms"]) / 1000
        add(event.step, "queue", f"queued for {by.split('@')[0]}", after, began)
        add(event.step, kind, what, began, done, by)
        return done

    parked_at: float | None = None
    children: dict[str, float] = {}  # a child job's id: when its parent started it
    tool: tuple[int, float, float] | None = None  # a tool's step, end, and its event's time
    for event in events:
        data = event.data
        if tool is not None and event.type != "verdict":
            # The tool reported to the supervisor itself: its transition follows.
            add(tool[0], "supervisor", "transition", tool[1], tool[2])
            sent, tool = tool[2], None
        match event.type:
            case "accepted":
                agent = str(data.get("agent", ""))
            case "started":
                add(event.step, "supervisor", "start", sent, event.ts)
                sent = event.ts
            case "transition" | "resumed" | "migrated":
                sent = event.ts
            case "child_started":
                children[str(data.get("child"))] = event.ts
            case "child_ended":
                child = str(data.get("child"))
                what = f"child {child} ({data.get('agent')}): {data.get('status')}"
                add(event.step, "child", what, children.pop(child, sent), event.ts)
                sent = event.ts
            case "decision" if data.get("by") == "human":
                sent = event.ts
            case "decision":
                what = f"decide {data.get('state')} -> {data.get('edge') or 'no edge'}"
                what += f" (model {data.get('llm_ms') or 0.0:.0f} ms"
                what += f", {data['reasks']} re-ask(s))" if data.get("reasks") else ")"
                done = work(event, "decide", what, sent)
                add(event.step, "supervisor", "transition", done, event.ts)
                sent = event.ts
            case "tool_result":
                ledger = data.get("ledger", "miss")
                what = f"tool {data.get('tool')} [{ledger}] ({data.get('tool_ms', 0):.0f} ms)"
                tool = (event.step, work(event, "tool", what, sent), event.ts)
            case "verdict":
                after = sent
                if tool is not None:
                    # Through the executor (it hands a result straight to the verifier) when
                    # the verifier began before the supervisor wrote the tool's result.
                    began = float((data.get("handled") or {}).get("at", tool[2]))
                    after = tool[1] if began < tool[2] else tool[2]
                    tool = None
                verdict = "passed" if data.get("passed") else "failed"
                done = work(event, "verify", f"verify {data.get('verifier')}: {verdict}", after)
                add(event.step, "supervisor", "transition", done, event.ts)
                sent = event.ts
            case "resolved":
                if parked_at is not None:
                    add(event.step, "human", f"a person: {data.get('edge')}", parked_at, event.ts)
                    parked_at = None
                sent = event.ts
            case "status":
                status = str(data.get("status", status))
                if status == "waiting_human":
                    parked_at = event.ts
    steps = max((event.step for event in events), default=0)
    seconds = events[-1].ts - origin
    return Waterfall(events[0].job_id, agent, status, seconds, steps, spans)


def render(fall: Waterfall, *, width: int = 32) -> str:
    """The waterfall as a table with bars on one time axis."""
    total = max(fall.seconds, 1e-9)
    lines = [
        f"job {fall.job_id}  agent {fall.agent}  {fall.status}  "
        f"{fall.seconds * 1000:.1f} ms, {fall.steps} step(s)",
        f"{'start':>10} {'took':>10}  {'step':>4}  {'what':<52} {'process':<28} timeline",
    ]
    for span in fall.spans:
        left = min(width - 1, int(span.start / total * width))
        length = max(1, round(span.ms / 1000 / total * width))
        bar = " " * left + ("#" if span.kind not in ("queue", "supervisor") else ".") * min(
            length, width - left
        )
        lines.append(
            f"{span.start * 1000:>8.1f}ms {span.ms:>8.1f}ms  {span.step:>4}  "
            f"{span.what[:52]:<52} {span.by[:28]:<28} |{bar:<{width}}|"
        )
    by_kind: dict[str, float] = {}
    for span in fall.spans:
        by_kind[span.kind] = by_kind.get(span.kind, 0.0) + span.ms
    lines.append(
        "in all: "
        + ", ".join(f"{kind} {ms:.1f} ms" for kind, ms in sorted(by_kind.items()))
        + f"; the job took {fall.seconds * 1000:.1f} ms"
    )
    return "\n".join(line.rstrip() for line in lines)
