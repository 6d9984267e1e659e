"""A person's resolve names the wait it was shown: one for a step the job has left is
refused (`job_moved`), and one asked again (a retry after a lost answer) is answered
again, never applied to the job's next wait. Over NATS, HTTP and the CLI, against a job
that waits for a person twice in a row."""

from __future__ import annotations

import json

import aiohttp
import pytest

from actors.testing import Deployment
from protocols import Event, JobInfo, JobMovedError, SchemaError
from tests.conftest import REFUND
from tests.integration.test_cli import rig_cli
from tests.integration.test_gateway import OVER_LIMIT, start_gateway

pytestmark = pytest.mark.integration

TWICE = ("actors:Supervisor", "tests.support.twice:TwiceAgent")


def resolved(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type == "resolved"]


async def parked(rig: Deployment, job_id: str, state: str) -> int:
    """The step of the job's wait in `state`."""
    info = await rig.client.wait(job_id, timeout=rig.within(30))
    assert (info.status, info.state) == ("waiting_human", state), info
    return info.steps


async def test_a_resolve_asked_again_never_takes_the_next_wait(rig: Deployment) -> None:
    """Over NATS: the first review's resolve, sent again under its id once the job waits
    for the sign-off, is answered again and not applied; sent anew for the step it was
    shown, it is refused `job_moved`; the sign-off still waits for its own person."""
    await rig.spawn(*TWICE)
    job = await rig.client.submit("twice", {})
    review = await parked(rig, job.job_id, "review")
    first = await rig.client.resolve(
        job.job_id, "approve", step=review, resolve_id="click-1", note="looks fine", by="ada"
    )
    assert first.state == "sign_off"
    sign_off = await parked(rig, job.job_id, "sign_off")
    assert sign_off > review

    again = await rig.client.resolve(
        job.job_id, "approve", step=review, resolve_id="click-1", note="looks fine", by="ada"
    )
    assert (again.status, again.state) == ("waiting_human", "sign_off")
    with pytest.raises(JobMovedError, match=f"has left step {review}"):
        await rig.client.resolve(job.job_id, "approve", step=review, by="ada")
    assert len(resolved(await rig.client.journal(job.job_id))) == 1

    done = await rig.client.resolve(job.job_id, "approve", step=sign_off, by="grace")
    assert done.status == "succeeded"
    assert [e.data["by"] for e in resolved(await rig.client.journal(job.job_id))] == [
        "ada",
        "grace",
    ]


async def test_over_http_and_the_cli_a_stale_resolve_is_refused(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    """Over HTTP: a resolve sent twice under one Idempotency-Key is carried out once and
    answered twice; one naming a step the job has left is 409 `job_moved`. The CLI's
    `--step` the same (exit 2, the reason said), and without `--step` it resolves the
    wait the job is in when the command starts."""
    await rig.spawn(*TWICE)
    base, _ = await start_gateway(rig)
    job = await rig.client.submit("twice", {})
    review = await parked(rig, job.job_id, "review")
    url = f"{base}/v1/jobs/{job.job_id}/resolve"
    body = {"edge": "approve", "step": review, "by": "ada"}
    for _ in range(2):
        async with http.post(url, json=body, headers={"Idempotency-Key": "k-1"}) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["state"] == "sign_off"
    await parked(rig, job.job_id, "sign_off")
    async with http.post(url, json=body) as response:
        assert response.status == 409
        assert (await response.json())["code"] == "job_moved"
    assert len(resolved(await rig.client.journal(job.job_id))) == 1

    code, _, err = await rig_cli(
        rig, "resolve", job.job_id, "--edge", "approve", "--step", str(review)
    )
    assert code == 2 and "job_moved" in err and f"has left step {review}" in err
    code, out, err = await rig_cli(rig, "resolve", job.job_id, "--edge", "approve", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "succeeded"
    assert len(resolved(await rig.client.journal(job.job_id))) == 2


async def test_a_person_s_arguments_that_do_not_fit_the_edge_are_refused(
    rig: Deployment, http: aiohttp.ClientSession
) -> None:
    """A person's arguments are checked against the edge's model when they resolve, over
    NATS, HTTP and the CLI (`schema_error`, naming the field), before a step is spent;
    arguments that fit are taken."""
    await rig.spawn(*TWICE)
    base, _ = await start_gateway(rig)
    job = await rig.client.submit("twice", {})
    review = await parked(rig, job.job_id, "review")
    with pytest.raises(SchemaError, match="do not fit edge 'adjust'"):
        await rig.client.resolve(job.job_id, "adjust", args={"amount": "five"})
    with pytest.raises(SchemaError, match="amount"):
        await rig.client.resolve(job.job_id, "adjust")  # none given: it is required
    url = f"{base}/v1/jobs/{job.job_id}/resolve"
    async with http.post(url, json={"edge": "adjust", "args": {"amount": []}}) as response:
        assert response.status == 400
        assert (await response.json())["code"] == "schema_error"
    code, _, err = await rig_cli(
        rig, "resolve", job.job_id, "--edge", "adjust", "--args", '{"amount": "x"}'
    )
    assert code == 2 and "schema_error" in err and "adjust" in err
    assert await parked(rig, job.job_id, "review") == review  # no step spent
    taken = await rig.client.resolve(job.job_id, "adjust", args={"amount": 12.5}, step=review)
    assert taken.state == "sign_off"


async def test_a_wait_that_meets_a_resolve_follows_the_journal_not_a_loop(
    rig: Deployment,
) -> None:
    """`wait` stops at the job's wait for a person; when a person resolves it just then
    (here: as `wait` asks for the status) and the job runs on (a refund being issued),
    `wait` follows the journal to the job's end rather than asking for the status in a
    loop (a handful of requests, not hundreds)."""
    await rig.spawn(*REFUND)
    job = await rig.client.submit("refund", OVER_LIMIT)
    info = await rig.client.wait(job.job_id, timeout=rig.within(30))
    assert info.status == "waiting_human"
    asked = 0
    status = rig.client.status

    async def counted(job_id: str) -> JobInfo:
        nonlocal asked
        asked += 1
        if asked == 1:  # the person is quicker than the caller
            await rig.client.resolve(job_id, "approve", step=info.steps)
        return await status(job_id)

    rig.client.status = counted  # type: ignore[method-assign]
    try:
        ended = await rig.client.wait(job.job_id, timeout=rig.within(30))
    finally:
        del rig.client.status
    assert ended.status == "succeeded"
    assert asked <= 4, asked
