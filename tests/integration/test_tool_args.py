"""A tool call's key is its effect: validated arguments, declared key fields, NaN refused, and
a retryable failure after a possible effect never re-runs it blindly."""

from __future__ import annotations

import asyncio
import json

import pytest

from actors import ToolExecutor, tool
from actors.testing import Deployment
from protocols import ToolCall, encode
from tests.chaos.test_crash import probe, reports
from tests.integration.test_cli import rig_cli
from tests.support.crash_tools import payments

pytestmark = pytest.mark.integration


async def send(rig: Deployment, tool: str, step: int, args: dict[str, object]) -> None:
    call = ToolCall(job_id="job-1", step=step, tool=tool, args=args)
    await rig.nc.jetstream().publish(
        rig.names.tool(tool), encode(call), headers={"Nats-Msg-Id": f"call-{step}"}
    )


async def test_the_same_effect_in_another_spelling_is_the_same_key(rig: Deployment) -> None:
    """`25` and `25.0` (and `"25"`) for a float are one payment: the second and third
    calls are answered from the ledger."""
    await rig.spawn("tests.support.crash_tools:CrashTools")
    await probe(rig)
    for step, amount in ((1, 25), (2, 25.0), (3, "25")):
        await send(rig, "pay", step, {"account": "acct-1", "amount": amount})
    found = sorted(await reports(rig, 3), key=lambda r: r.step)
    assert [r.ledger for r in found] == ["miss", "hit", "hit"]
    assert len({r.key for r in found}) == 1
    assert len(payments(rig.home)) == 1


async def test_nan_or_wrong_arguments_are_invalid_args_not_dead_letters(rig: Deployment) -> None:
    await rig.spawn("tests.support.crash_tools:CrashTools")
    await probe(rig)
    await send(rig, "pay", 1, {"account": "acct-1", "amount": float("nan")})
    await send(rig, "pay", 2, {"account": "acct-1"})
    await send(rig, "pay", 3, {"account": "acct-1", "amount": 1.0, "tip": 2})
    found = sorted(await reports(rig, 3), key=lambda r: r.step)
    assert [(r.ok, (r.error or {}).get("code")) for r in found] == [(False, "invalid_args")] * 3
    assert "amount" in found[0].error["message"] and "finite" in found[0].error["message"]
    assert "amount: Field required" in found[1].error["message"]
    assert "tip: Extra inputs are not permitted" in found[2].error["message"]
    assert payments(rig.home) == []
    code, out, _ = await rig_cli(rig, "dlq", "ls", "--json")
    assert code == 0 and json.loads(out) == []


def test_key_fields_must_be_parameters() -> None:
    with pytest.raises(TypeError, match=r"names key fields \['acount'\] that are not among"):

        class Misspelt(ToolExecutor):
            name = "misspelt"

            @tool(key=("acount",))
            async def pay(self, account: str, amount: float) -> dict[str, object]:
                return {}


@pytest.mark.parametrize(
    ("tool", "outcome"),
    [("pay_then_timeout", (True, None)), ("pay_then_timeout_blind", (False, "effect_unknown"))],
)
async def test_a_retryable_failure_after_the_effect_does_not_pay_twice(
    rig: Deployment, tool: str, outcome: tuple[bool, str | None]
) -> None:
    """The tool pays, then raises `RetryableError` (a read timeout): the call is `unknown`;
    the retry reconciles it (one payment, the result found) or, without reconcile,
    reports `effect_unknown` for a person. It is never paid twice."""
    await rig.spawn("tests.support.crash_tools:FlakyPay")
    await probe(rig)
    await send(rig, tool, 1, {"account": "acct-1", "amount": 5.0})
    [result] = await reports(rig, 1)
    assert (result.ok, (result.error or {}).get("code")) == outcome
    assert len(payments(rig.home)) == 1


async def test_a_second_hosts_executor_of_a_side_effecting_tool_is_refused(
    rig: Deployment,
) -> None:
    """At most once holds within one host's ledger file: an executor on another host
    (`RIG_HOSTNAME`) of the same side-effecting tool stops with the reason, unless told
    to run without the guarantee."""
    rig.extra_env["RIG_HOSTNAME"] = "host-a"
    await rig.spawn("tests.support.crash_tools:CrashTools")
    await rig.spawn("tests.support.crash_tools:CrashTools")  # the same host may run many
    rig.extra_env["RIG_HOSTNAME"] = "host-b"
    [second] = await rig.spawn("tests.support.crash_tools:CrashTools", ready=False)
    assert await asyncio.wait_for(second.wait(), 30) == 2
    log = (rig.home / "tests.support.crash_tools.CrashTools.log").read_text()
    assert (
        "second_ledger: tool 'pay' (side effects) is already served with another ledger (on host-a)"
        in log
    )
    rig.extra_env["RIG_ALLOW_SECOND_LEDGER"] = "1"
    await rig.spawn("tests.support.crash_tools:CrashTools")  # announces itself: it runs
