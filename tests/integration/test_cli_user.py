"""The `rig` CLI as a user types it: mistakes get one typed line and exit 2, never a
traceback; reused job ids, NaN, huge and deep inputs, pipes, files and stdin."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from actors import RigClient
from actors.deploy.up import free_port
from actors.examples.refund import RefundAgent
from actors.testing import Deployment, eventually
from protocols import InvalidNameError, SchemaError, decode, encode
from tests.conftest import REFUND, ROOT
from tests.integration.test_cli import RIG, rig_cli, run_rig

pytestmark = pytest.mark.integration

EXAMPLE = json.dumps(RefundAgent.example_input)


def one_clean_line(code: int, err: str, *, contains: str) -> None:
    """A user's mistake: exit 2, one line on stderr, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert contains in err, err


async def test_a_reused_job_id_is_the_same_job_or_a_conflict(rig: Deployment) -> None:
    await rig.spawn(*REFUND)
    argv = ("submit", "refund", "--input", EXAMPLE, "--job-id", "order-77", "--json")
    code, out, _ = await rig_cli(rig, *argv)
    assert code == 0 and json.loads(out) == {"job_id": "order-77", "status": "accepted"}
    code, out, _ = await rig_cli(rig, *argv)  # the same request again: the same job
    assert code == 0 and json.loads(out) == {"job_id": "order-77", "status": "accepted"}
    other = json.dumps({"order_id": "A-1001", "amount": 30.0})
    code, _, err = await rig_cli(rig, "submit", "refund", "--input", other, "--job-id", "order-77")
    one_clean_line(
        code, err, contains="job_conflict: job id 'order-77' is taken by another request"
    )
    code, _, err = await rig_cli(
        rig, "submit", "refund", "--input", EXAMPLE, "--job-id", "order-77", "--max-steps", "3"
    )
    one_clean_line(code, err, contains="job_conflict")
    assert len(await rig.client.jobs()) == 1


async def test_user_mistakes_get_one_typed_line_and_exit_2(rig: Deployment) -> None:
    await rig.spawn("actors:Supervisor", "actors.examples.refund:RefundAgent")
    for job_id in ("a.b", "a/b", ""):
        for verb in ("status", "watch", "cancel"):
            code, _, err = await rig_cli(rig, verb, job_id)
            one_clean_line(code, err, contains="job_id")
    code, _, err = await rig_cli(rig, "submit", "refund", "--input", EXAMPLE, "--max-steps", "-1")
    one_clean_line(code, err, contains="schema_error: max_steps: Input should be greater than")
    code, _, err = await rig_cli(rig, "submit", "refund", "--input", EXAMPLE, "--max-cost", "nan")
    one_clean_line(code, err, contains="schema_error: max_cost: nan is not a finite number")
    code, _, err = await rig_cli(rig, "submit", "refund", "--input", EXAMPLE, "--deadline", "0s")
    one_clean_line(code, err, contains="is not a duration")
    deep = "[" * 10_000 + "]" * 10_000
    code, _, err = await rig_cli(rig, "submit", "refund", "--input", '{"a": ' + deep + "}")
    one_clean_line(code, err, contains="nests")
    deep100 = '{"a": ' + "[" * 100 + "]" * 100 + "}"
    code, _, err = await rig_cli(rig, "submit", "refund", "--input", deep100)
    one_clean_line(code, err, contains="input nests deeper than 64 levels")
    code, _, err = await rig_cli(rig, "submit", "refund", "--input", b'{"order_id": "\xff\xfe"}')
    one_clean_line(code, err, contains="not valid UTF-8")
    code, _, err = await rig_cli(rig, "--debug", "status", "a.b")
    assert code == 2 and "Traceback" in err  # --debug shows it


async def test_nan_and_infinity_are_refused_everywhere(rig: Deployment) -> None:
    """NaN never reaches an agent: not from the CLI, not as JSON or msgpack over NATS."""
    await rig.spawn(*REFUND)
    nan_input = '{"order_id": "A-1001", "amount": NaN}'
    code, _, err = await rig_cli(rig, "submit", "refund", "--input", nan_input)
    one_clean_line(code, err, contains="NaN is not a number JSON allows")
    body = b'{"agent": "refund", "input": {"order_id": "A-1001", "amount": Infinity}}'
    reply = await rig.nc.request(rig.names.api_submit, body, timeout=10)
    assert json.loads(reply.data)["error"]["code"] == "decode_error"
    packed = encode({"agent": "refund", "input": {"order_id": "A-1001", "amount": float("nan")}})
    reply = await rig.nc.request(rig.names.api_submit, packed, timeout=10)
    error = decode(reply.data)[0]["error"]
    assert (
        error["code"] == "schema_error"
        and "input.amount: nan is not a finite number" in error["message"]
    )
    with pytest.raises(SchemaError, match="not a finite number"):
        await rig.client.submit("refund", {"order_id": "A-1001", "amount": float("inf")})
    assert await rig.client.jobs() == []


async def test_input_from_a_file_or_stdin_beyond_the_shells_limit(rig: Deployment) -> None:
    """An input larger than one shell argument may be (128 KiB) comes from @FILE or -."""
    await rig.spawn(*REFUND)
    big = {**RefundAgent.example_input, "notes": "x" * 200_000}
    path = rig.home / "input.json"
    path.write_text(json.dumps(big))
    code, out, err = await rig_cli(
        rig, "submit", "refund", "--input", f"@{path}", "--wait", "--json"
    )
    assert code == 0 and json.loads(out)["status"] == "succeeded", err
    code, out, err = await rig_cli(
        rig, "submit", "refund", "--input", "-", "--wait", "--json", stdin=json.dumps(big).encode()
    )
    assert code == 0 and json.loads(out)["status"] == "succeeded", err
    code, _, err = await rig_cli(rig, "submit", "refund", "--input", "@/no/such/file.json")
    one_clean_line(code, err, contains="cannot read '/no/such/file.json'")


async def test_jobs_watch_version_and_pipes(rig: Deployment) -> None:
    await rig.spawn(*REFUND)
    code, out, _ = await rig_cli(rig, "--version")
    assert code == 0 and re.fullmatch(r"rig \d+\.\d+\.\d+\n", out)
    first = (await rig.client.submit("refund", RefundAgent.example_input)).job_id
    await rig.client.wait(first, timeout=30)
    big = {"order_id": "A-1001", "amount": 650.0}
    second = (await rig.client.submit("refund", big)).job_id
    await rig.client.wait(second, timeout=30)

    code, out, _ = await rig_cli(rig, "jobs", "--json")
    assert code == 0 and [j["job_id"] for j in json.loads(out)] == [second, first]
    code, out, _ = await rig_cli(rig, "jobs", "--status", "waiting_human", "--json")
    assert [j["job_id"] for j in json.loads(out)] == [second]
    code, out, _ = await rig_cli(rig, "jobs", "--status", "succeeded")
    assert code == 0 and first in out and second not in out
    code, out, _ = await rig_cli(rig, "jobs", "--agent", "nobody")
    assert code == 0 and out == "no jobs match\n"

    # watch: a timestamp on every line; it stops (exit 3, with a hint) at a person.
    code, out, err = await rig_cli(rig, "watch", second)
    assert code == 3 and "rig inbox" in err and f"rig resolve {second} --edge" in err
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3} #\d+ ", line) for line in out.splitlines())
    follow = asyncio.create_task(rig_cli(rig, "watch", second, "--follow"))
    await rig.client.resolve(second, "approve", note="ok")
    code, out, _ = await follow
    assert code == 0 and "resolved" in out and out.splitlines()[-1].endswith("succeeded in done")

    # A closed pipe ends `rig watch` quietly.
    proc = await asyncio.create_subprocess_shell(
        f"{RIG} watch {first} | head -1",
        env=rig.env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0 and len(out_b.splitlines()) == 1 and err_b == b""


async def test_the_inbox_shows_the_real_reason_and_refuses_a_loop(rig: Deployment) -> None:
    await rig.spawn(
        "actors:Supervisor",
        "tests.support.stuck:Picky",
        "tests.support.stuck:CrashyTools",
        "tests.support.stuck:PickyChecks",
    )
    job = (await rig.client.submit("picky", {"n": 7})).job_id
    info = await rig.client.wait(job, timeout=30)
    assert info.status == "waiting_human"
    code, out, _ = await rig_cli(rig, "inbox")
    assert code == 0 and "verifier picky rejected: the number 7 is unlucky" in out
    assert 'input:  {"n": 7}' in out
    code, _, err = await rig_cli(rig, "resolve", job, "--edge", "wait")
    one_clean_line(code, err, contains="leads straight back to 'human'")
    code, out, _ = await rig_cli(rig, "resolve", job, "--edge", "close", "--json")
    assert code == 0 and json.loads(out)["status"] == "failed"


async def test_rig_client_is_public_and_raises_typed_errors(rig: Deployment) -> None:
    import actors

    assert actors.RigClient is RigClient
    with pytest.raises(SchemaError, match="job_id"):
        await rig.client.status("a.b")
    with pytest.raises(InvalidNameError):
        async for _ in rig.client.events("a/b"):
            pass
    with pytest.raises(SchemaError, match="max_steps"):
        await rig.client.submit("refund", {}, max_steps=0)


async def test_submit_wait_says_when_it_loses_the_server_and_when_it_is_back(
    private_rig: Deployment,
) -> None:
    """`rig submit --wait` without a timeout does not wait in silence when the server
    goes away: it says it lost the connection and is trying again, then that it is back,
    and goes on waiting for the job."""
    rig = private_rig
    await rig.spawn(
        "actors:Supervisor", "tests.support.holding:Holder", "tests.support.holding:HoldTools"
    )
    proc = await asyncio.create_subprocess_exec(
        RIG,
        *("submit", "holder", "--input", json.dumps({"seconds": 300}), "--wait"),
        env=rig.env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        holds = rig.home / "holds"

        async def holding() -> bool:
            return await asyncio.to_thread(lambda: holds.is_dir() and any(holds.iterdir()))

        await eventually(holding, timeout=30, message="the tool holds the job")
        rig.server.kill()
        said = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert said.startswith("rig: lost the connection to NATS at ") and "Ctrl-C" in said
        rig.server.start()
        said = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert said.startswith("rig: connected to NATS at ") and said.rstrip().endswith("again")
        assert proc.returncode is None  # still waiting for the job
    finally:
        proc.terminate()
        await proc.wait()


async def test_a_verb_says_at_once_that_nothing_listens(rig: Deployment) -> None:
    """Where every connection is refused (no server on that port) the CLI says so once
    the refusals have lasted a second, rather than waiting out its whole connect timeout
    as for a server that does not answer."""
    env = rig.env | {"RIG_NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    code, out, err = await run_rig(env, "status", "some-job")
    assert (code, out) == (2, "")
    assert "nothing listens at nats://127.0.0.1:" in err
    assert "(the connection was refused)" in err and "Traceback" not in err
