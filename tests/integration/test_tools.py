"""The tool executor's ledger logic, in process: no NATS needed to run `execute`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors import Ledger, RigConfig, ToolExecutor, tool
from actors.testing import Deployment
from protocols import JobContext, NonRetryableError, ToolCall, result_ref


class Bank(ToolExecutor):
    name = "bank"
    runs: list[dict[str, Any]]

    @tool(side_effects=True, key=("invoice",))
    async def charge(self, invoice: str, amount: float) -> dict[str, Any]:
        self.runs.append({"invoice": invoice, "amount": amount})
        return {"invoice": invoice, "charged": amount}

    @tool(side_effects=True, timeout=10.0, lease=100.0)  # half its lease is well in its slack
    async def transfer(self, invoice: str, amount: float) -> dict[str, Any]:
        self.runs.append({"invoice": invoice, "amount": amount})
        return {"invoice": invoice, "transferred": amount}


@pytest.fixture
async def bank(tmp_path: Path) -> Any:
    executor = Bank(config=RigConfig(home=tmp_path))
    executor.runs = []
    executor.ledger = await Ledger.open(tmp_path / "ledger.sqlite3", owner="test")
    yield executor
    await executor.ledger.close()


def charge(step: int, **args: Any) -> ToolCall:
    return ToolCall(job_id="j1", step=step, tool="charge", args=args)


async def test_key_fields_make_the_same_effect_whatever_else_changes(bank: Bank) -> None:
    """Same invoice and amount: one charge, the repeat answered from the ledger."""
    first = await bank.execute(charge(1, invoice="inv-1", amount=10.0))
    again = await bank.execute(charge(2, invoice="inv-1", amount=10.0))
    assert (first.ledger, again.ledger) == ("miss", "hit")
    assert again.result == first.result and again.key == first.key
    assert bank.runs == [{"invoice": "inv-1", "amount": 10.0}]


async def test_same_key_other_arguments_is_refused(bank: Bank) -> None:
    """The same invoice with another amount is a typed error, and the tool does not run."""
    await bank.execute(charge(1, invoice="inv-1", amount=10.0))
    other = await bank.execute(charge(2, invoice="inv-1", amount=99.0))
    assert not other.ok and other.error is not None
    assert other.error["code"] == "key_conflict"
    assert len(bank.runs) == 1


async def test_invalid_arguments_fail_without_an_effect(bank: Bank) -> None:
    result = await bank.execute(charge(1, invoice="inv-2", amount="lots"))
    assert not result.ok and result.error is not None
    assert result.error["code"] == "invalid_args" and "amount" in result.error["message"]
    assert bank.runs == []


def test_reconcile_must_name_a_method() -> None:
    with pytest.raises(TypeError, match="reconcile='nowhere'"):

        class Broken(ToolExecutor):
            name = "broken"

            @tool(reconcile="nowhere")
            async def act(self) -> None: ...


async def test_a_call_it_was_told_to_stop_is_not_started(bank: Bank) -> None:
    """A `ToolCancel` that comes before its call (still queued): the call is refused
    as `cancelled`, with no ledger record and no effect; other calls run."""
    assert not bank.stop_call("j1", 1, "charge", "the job was cancelled: no longer wanted")
    refused = await bank.execute(charge(1, invoice="inv-3", amount=5.0))
    assert refused.error == {
        "code": "cancelled",
        "message": "the job was cancelled: no longer wanted",
        "started": False,
    }
    assert bank.runs == [] and await bank.ledger.get(refused.key) is None
    assert (await bank.execute(charge(2, invoice="inv-3", amount=5.0))).ok


async def test_a_call_past_its_jobs_deadline_is_not_started(bank: Bank) -> None:
    late = ToolCall(
        job_id="j1", step=1, tool="charge", args={"invoice": "i", "amount": 1.0}, deadline=1.0
    )
    refused = await bank.execute(late)
    assert refused.error is not None and refused.error["deadline"] == 1.0
    assert refused.error["code"] == "cancelled" and refused.error["started"] is False
    assert bank.runs == [] and await bank.ledger.get(refused.key) is None


async def test_a_context_that_cannot_be_read_is_a_call_not_started(
    bank: Bank, rig: Deployment
) -> None:
    """The job's context is read before the claim: a result it holds by reference that
    is gone makes the call a dead letter (not started), with no ledger record and no
    effect, so that once the context can be read the same call runs, and pays once."""
    bank._js, bank.names = rig.nc.jetstream(), rig.names
    gone = JobContext(input={}, results={"lookup": result_ref("gone", 10, "0" * 64)})
    call = charge(1, invoice="inv-3", amount=5.0).model_copy(update={"context": gone})
    with pytest.raises(NonRetryableError, match="is gone"):
        await bank.execute(call)
    assert bank.runs == []
    ran = await bank.execute(charge(1, invoice="inv-3", amount=5.0))
    assert ran.ok and ran.ledger == "miss"  # nothing was claimed before
    assert bank.runs == [{"invoice": "inv-3", "amount": 5.0}]


async def test_a_claim_paused_past_its_lease_is_not_acted_on_whatever_the_wall_clock_says(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor measures its own claim's lease on its monotonic clock: paused past
    the lease between the claim and the tool (the monotonic clock moves an hour) while
    the wall clock was stepped back an hour (the record's lease looks live by it), it
    does not act on the old claim."""
    import time as real

    from actors.tools.executor import _Fenced

    class Paused:
        """`time` for the executor: an hour passes after the claim's first reading."""

        readings = 0

        @classmethod
        def monotonic(cls) -> float:
            cls.readings += 1
            return real.monotonic() + (3600.0 if cls.readings > 1 else 0.0)

        time = staticmethod(lambda: real.time() - 3600.0)
        perf_counter = staticmethod(real.perf_counter)

    monkeypatch.setattr("actors.tools.executor.time", Paused)
    with pytest.raises(_Fenced):
        await bank.execute(charge(1, invoice="inv-9", amount=5.0))
    assert bank.runs == []


async def test_a_claim_whose_lease_ends_while_it_is_checked_is_not_acted_on(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past half its lease before the tool starts, the executor reads its claim back;
    on a slow network that read takes seconds, and the lease may end while it is under
    way (the Jepsen harness, 10 minutes at nats-server's default sync, seed 10: another
    executor took the call over, reconciled, and the bank was paid twice). The lease is
    judged once the read is back: the tool does not run, and the call is asked again."""
    import time as real

    from actors.tools.executor import _Fenced

    spec = Bank.tools["transfer"].spec
    clock = {"offset": 0.0}

    class Slow:
        """`time` for the executor: its monotonic clock moves as the test says."""

        monotonic = staticmethod(lambda: real.monotonic() + clock["offset"])
        time = staticmethod(real.time)
        perf_counter = staticmethod(real.perf_counter)

    told, read = bank._told_to_stop, bank.ledger.get

    async def slow_told(call: ToolCall) -> str | None:
        clock["offset"] = 0.6 * spec.lease  # past half the lease once the claim is checked
        return await told(call)

    async def slow_read(key: str) -> Any:
        record = await read(key)
        clock["offset"] = spec.lease  # and past its end once the record is back
        return record

    monkeypatch.setattr("actors.tools.executor.time", Slow)
    monkeypatch.setattr(bank, "_told_to_stop", slow_told)
    monkeypatch.setattr(bank.ledger, "get", slow_read)
    transfer = ToolCall(job_id="j1", step=1, tool="transfer", args={"invoice": "i", "amount": 5.0})
    with pytest.raises(_Fenced):
        await bank.execute(transfer)
    assert bank.runs == []
    monkeypatch.undo()
    assert (await bank.execute(transfer)).ok  # asked again: it runs, once
    assert bank.runs == [{"invoice": "i", "amount": 5.0}]


async def test_a_tool_starts_only_while_its_whole_timeout_fits_in_its_lease(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that took longer than its lease's slack (the lease less the timeout; not
    yet half the lease, so it is not read back) is not acted on: a run as long as the
    tool's timeout could outlast the lease, and another executor take the call over
    while it runs. The call is asked again and runs then, once."""
    import time as real

    from actors.tools.executor import _Fenced

    spec = Bank.tools["charge"].spec
    late = spec.lease - spec.timeout + 1.0  # past the slack
    assert late < spec.lease / 2
    readings = {"n": 0}

    class Late:
        """`time` for the executor: `late` seconds pass between the claim and the run."""

        @staticmethod
        def monotonic() -> float:
            readings["n"] += 1
            return real.monotonic() + (late if readings["n"] > 1 else 0.0)

        time = staticmethod(real.time)
        perf_counter = staticmethod(real.perf_counter)

    monkeypatch.setattr("actors.tools.executor.time", Late)
    with pytest.raises(_Fenced):
        await bank.execute(charge(1, invoice="inv-11", amount=5.0))
    assert bank.runs == []
    monkeypatch.undo()
    assert (await bank.execute(charge(2, invoice="inv-11", amount=5.0))).ok
    assert bank.runs == [{"invoice": "inv-11", "amount": 5.0}]


def test_a_lease_is_never_shorter_than_the_timeout_and_its_slack() -> None:
    """A lease shorter than the tool's timeout plus `LEASE_SLACK_S` is lengthened to it:
    with less, the tool could never start (or could outlast its lease)."""
    from actors.tools.executor import LEASE_SLACK_S, lease_of

    assert lease_of(10.0, 10.0) == 10.0 + LEASE_SLACK_S
    assert lease_of(10.0, 2.0) == 10.0 + LEASE_SLACK_S
    assert lease_of(10.0, 60.0) == 60.0
    assert lease_of(10.0, None) == 40.0
