"""What the Jepsen harness saves about a job that did not settle (`stuck.json`), against a
real nats-server: the stored snapshot's wait and the work stream's consumers."""

from __future__ import annotations

import pytest

from actors import Supervisor
from actors.testing import Deployment
from protocols import Budget, StartJob, SubmitRequest
from tests.conftest import delivered
from tests.jepsen.run import _read_again, _stuck_state

pytestmark = pytest.mark.integration

INPUT = {"order_id": "A-1001", "amount": 25.0}


async def test_a_job_that_did_not_settle_is_saved_with_what_it_waits_for(
    rig: Deployment, pair: tuple[Supervisor, Supervisor]
) -> None:
    a, b = pair
    await a.submit(SubmitRequest(agent="refund", input=INPUT, job_id="job-s"))
    start = StartJob(job_id="job-s", agent="refund", input=INPUT, budget=Budget())
    await b.on_message(start, delivered(b.names.supervisor_for("job-s")))
    settled = {"status": "succeeded", "state": "done", "reason": None}
    waiting = {"status": "running", "state": "start", "reason": None}
    found = await _stuck_state(rig.client, {"job-s": waiting, "job-done": settled})
    assert list(found["jobs"]) == ["job-s"]  # a settled job is not a suspect
    job = found["jobs"]["job-s"]
    assert (job["status"], job["phase"], job["step"], job["cause"]) == (
        "running",
        "decide",
        1,
        "start",
    )
    assert "job-s:1:step" in job["outbox"]  # the step it asked its agent for
    assert "error" not in found["consumers"]
    assert await _stuck_state(rig.client, {"job-done": settled}) == {}


async def test_a_journal_that_does_not_end_as_its_job_is_read_again(
    rig: Deployment, pair: tuple[Supervisor, Supervisor]
) -> None:
    """`suspects.json`: for a job said to have ended whose journal, as read, does not say
    so, its last event from the stream's leader and its stored snapshot."""
    a, b = pair
    await a.submit(SubmitRequest(agent="refund", input=INPUT, job_id="job-r"))
    start = StartJob(job_id="job-r", agent="refund", input=INPUT, budget=Budget())
    await b.on_message(start, delivered(b.names.supervisor_for("job-r")))
    ended = {"status": "succeeded", "state": "done", "reason": None}
    found = await _read_again(rig.client, {"job-r": ended}, {"job-r": []})
    suspect = found["job-r"]
    assert suspect["journal_read"] == 0
    assert (suspect["last"]["type"], suspect["last"]["seq_in_stream"] > 0) == ("started", True)
    assert suspect["snapshot"]["cause"] == "start" and suspect["snapshot"]["revision"] > 0
