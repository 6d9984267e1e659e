"""A Rig agent delegating to another Rig deployment's agent over A2A (tests/support/delegation.py):
the remote task is a tool step through the ledger, created once however the local
deployment's processes die."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.gateway.keys import add_key
from actors.testing import Deployment, NatsServer
from actors.testing.harness import deployment
from tests.conftest import REFUND, ROOT
from tests.integration.test_gateway import start_gateway

pytestmark = pytest.mark.integration

ORDER = {"order_id": "A-1001", "amount": 25.0, "reason": "arrived damaged"}
LOCAL = ("tests.support.delegation:Delegator", "tests.support.delegation:Partners")


@pytest.fixture
async def partner(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Deployment]:
    """A second deployment on the server: the partner whose `gated` agent is called."""
    async with deployment(nats_server, tmp_path / "partner", cwd=ROOT) as found:
        yield found


async def serve_partner(rig: Deployment, partner: Deployment) -> None:
    """The partner's gated refund agent behind its gateway; the local deployment is
    told where and with which key."""
    await partner.spawn("actors:Supervisor", "tests.support.gated:GatedAgent", *REFUND[2:])
    key = add_key(partner.home / "gateway-keys", "partner")
    base, _ = await start_gateway(partner)
    rig.extra_env |= {"RIG_TEST_REMOTE": base, "RIG_TEST_REMOTE_KEY": key}


async def test_a_job_delegates_to_another_deployment_s_agent_over_a2a(
    rig: Deployment, partner: Deployment
) -> None:
    await serve_partner(rig, partner)
    await rig.spawn("actors:Supervisor", *LOCAL)
    gate = f"{partner.names.prefix}.test.gate"
    thinking = await partner.nc.subscribe(f"{partner.names.prefix}.test.thinking")
    job = await rig.client.submit("delegator", ORDER)
    await thinking.next_msg(timeout=rig.within(30))
    await partner.nc.publish(gate, b"go")
    info = await rig.client.wait(job.job_id, timeout=rig.within())
    assert info.status == "succeeded", info.error
    assert info.result is not None
    found = info.result["results"]["partner_refund"]
    assert found["state"] == "completed"
    [remote] = await partner.client.jobs(agent="gated")
    assert found["task_id"] == remote.job_id and remote.status == "succeeded"
    assert (await partner.client.status(remote.job_id)).labels is not None


async def test_the_remote_task_is_created_once_while_the_local_executor_and_supervisor_die(
    rig: Deployment, partner: Deployment
) -> None:
    """The local executor and supervisor are SIGKILLed while the remote task runs: the
    call comes back (its claim's holder is gone: `unknown`), its reconcile sends the same
    message again, which is the same remote task, and the job ends with its result."""
    await serve_partner(rig, partner)
    [supervisor, _, executor] = await rig.spawn("actors:Supervisor", *LOCAL)
    gate = f"{partner.names.prefix}.test.gate"
    thinking = await partner.nc.subscribe(f"{partner.names.prefix}.test.thinking")
    job = await rig.client.submit("delegator", ORDER)
    await thinking.next_msg(timeout=rig.within(30))  # the remote task runs; the call waits
    for proc in (executor, supervisor):
        proc.kill()
        await proc.wait()
    await rig.spawn("actors:Supervisor", "tests.support.delegation:Partners")
    await partner.nc.publish(gate, b"go")  # the remote task ends; the new call asks for it
    info = await rig.client.wait(job.job_id, timeout=rig.within(60))
    assert info.status == "succeeded", info.error
    remotes = await partner.client.jobs(agent="gated")
    assert len(remotes) == 1  # created once, on the partner's side
    assert info.result is not None
    assert info.result["results"]["partner_refund"]["task_id"] == remotes[0].job_id
    # The call came back to a claim whose holder was gone, and its reconcile found the task.
    [result] = [e for e in await rig.client.journal(job.job_id) if e.type == "tool_result"]
    assert result.data["ok"] and result.data["ledger"] == "hit", result.data


async def test_a_remote_task_that_asks_for_input_brings_the_job_to_a_person(
    rig: Deployment, partner: Deployment
) -> None:
    await serve_partner(rig, partner)
    await rig.spawn("actors:Supervisor", *LOCAL)
    thinking = await partner.nc.subscribe(f"{partner.names.prefix}.test.thinking")
    big = {"order_id": "A-1000", "amount": 600.0, "reason": "arrived damaged"}  # a person's
    job = await rig.client.submit("delegator", big)
    await thinking.next_msg(timeout=rig.within(30))
    await partner.nc.publish(f"{partner.names.prefix}.test.gate", b"go")
    info = await rig.client.wait(job.job_id, timeout=rig.within())
    assert (info.status, info.state) == ("waiting_human", "person")
    assert info.waiting is not None and "asks for input" in info.waiting.reason
    [remote] = await partner.client.jobs(agent="gated")
    assert remote.status == "waiting_human" and remote.job_id in info.waiting.reason
