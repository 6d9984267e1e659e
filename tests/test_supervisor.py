"""The supervisor's transitions, in process (an in-memory seam: no NATS, nothing sent)."""

from __future__ import annotations

from actors import RigConfig, Supervisor
from actors.examples.refund import RefundAgent
from protocols import Event, JobSnapshot, ToolResult, decode_as


def refunding_job() -> JobSnapshot:
    return JobSnapshot(
        job_id="j1",
        agent="refund",
        status="running",
        state="refunding",
        step=3,
        phase="tool",
        input=RefundAgent.example_input,
        path=["triage", "review", "refunding"],
        pending_edge="refund",
        pending_args={"order_id": "A-1001", "amount": 25.0},
    )


def failed(code: str, message: str) -> ToolResult:
    """The refund tool's report of a call that failed with `code`."""
    error = {"code": code, "message": message}
    return ToolResult(job_id="j1", step=3, tool="issue_refund", key="k", ok=False, error=error)


def events(job: JobSnapshot) -> list[Event]:
    return [decode_as(Event, out.data)[0] for out in job.outbox if ".events." in out.subject]


def test_an_unknown_effect_parks_the_job_for_a_person() -> None:
    """`effect_unknown` sends the job to waiting_human with the reason, and nothing runs."""
    supervisor = Supervisor(config=RigConfig())
    job = supervisor._tool_done(
        refunding_job(), RefundAgent.graph, failed("effect_unknown", "died mid-call")
    )
    assert (job.status, job.state, job.phase) == ("waiting_human", "refunding", None)
    assert job.error is not None and job.error["code"] == "effect_unknown"
    [tool_result, status] = events(job)
    assert tool_result.type == "tool_result" and status.type == "status"
    assert "not run again" in status.data["reason"]
    assert [out for out in job.outbox if ".work." in out.subject] == []  # no next command


def test_an_ordinary_tool_failure_takes_the_fail_edge() -> None:
    supervisor = Supervisor(config=RigConfig())
    job = supervisor._tool_done(
        refunding_job(), RefundAgent.graph, failed("tool_error", "bank said no")
    )
    assert (job.status, job.state) == ("waiting_human", "human")  # the state's safe edge
