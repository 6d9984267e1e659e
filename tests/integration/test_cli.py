"""The `rig` CLI contract, run as a real command against a real deployment."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from actors.examples.refund import RefundAgent
from actors.testing import Deployment, eventually
from protocols import partition_of
from tests.conftest import REFUND, ROOT

pytestmark = pytest.mark.integration

RIG = str(Path(sys.executable).parent / "rig")
EXAMPLE = json.dumps(RefundAgent.example_input)


async def run_rig(
    env: dict[str, str], *args: str | bytes, stdin: bytes | None = None
) -> tuple[int, str, str]:
    """Run the `rig` command as a user would; its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        RIG,
        *args,
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(errors="replace")


async def rig_cli(
    rig: Deployment, *args: str | bytes, stdin: bytes | None = None
) -> tuple[int, str, str]:
    return await run_rig(rig.env, *args, stdin=stdin)


async def test_agents_submit_status_watch(rig: Deployment) -> None:
    """agents, submit, status and watch print exactly the documented JSON."""
    await rig.spawn(*REFUND)
    code, out, _ = await rig_cli(rig, "agents", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"name": "refund", "example_input": RefundAgent.example_input, "live": 1}
    ]

    code, out, _ = await rig_cli(rig, "submit", "refund", "--input", EXAMPLE, "--json")
    accepted = json.loads(out)
    assert code == 0 and set(accepted) == {"job_id", "status"}
    assert accepted["status"] == "accepted"

    code, out, _ = await rig_cli(rig, "watch", accepted["job_id"])
    assert code == 0
    lines = out.strip().splitlines()
    assert "accepted" in lines[0] and "succeeded" in lines[-1]
    assert any("issue_refund [miss]" in line for line in lines)

    code, out, _ = await rig_cli(rig, "status", accepted["job_id"], "--json")
    status = json.loads(out)
    assert code == 0
    assert {k: status[k] for k in ("job_id", "agent", "status", "state", "steps")} == {
        "job_id": accepted["job_id"],
        "agent": "refund",
        "status": "succeeded",
        "state": "done",
        "steps": 3,
    }


async def test_submit_wait_and_exit_codes(rig: Deployment) -> None:
    """--wait prints the final status; exit 0 only for succeeded, 1 for another ending."""
    await rig.spawn(*REFUND)
    code, out, _ = await rig_cli(rig, "submit", "refund", "--input", EXAMPLE, "--wait", "--json")
    assert code == 0 and json.loads(out)["status"] == "succeeded"

    code, out, _ = await rig_cli(
        rig, "submit", "refund", "--input", EXAMPLE, "--max-steps", "1", "--wait", "--json"
    )
    assert code == 1 and json.loads(out)["status"] == "step_limit"
    code, out, _ = await rig_cli(rig, "watch", json.loads(out)["job_id"], "--json")
    assert code == 1 and json.loads(out.splitlines()[-1])["data"]["status"] == "step_limit"


async def test_errors_are_clear_and_exit_2(rig: Deployment) -> None:
    await rig.spawn("actors:Supervisor")
    code, out, _ = await rig_cli(rig, "status", "no-such-job", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "unknown_job"
    code, _, err = await rig_cli(rig, "submit", "refund", "--input", "{not json")
    assert code == 2 and "--input is not JSON" in err
    code, _, err = await rig_cli(rig, "submit", "nobody", "--input", "{}")
    assert code == 2 and "unknown_agent" in err
    code, _, err = await rig_cli(rig, "actor", "run", "no_such_module:Thing")
    assert code == 2 and "cannot import 'no_such_module'" in err


async def test_help_lists_the_verbs(rig: Deployment) -> None:
    code, out, _ = await rig_cli(rig, "--help")
    assert code == 0
    for verb in ("up", "actor", "agents", "submit", "status", "watch", "RIG_NATS_URL"):
        assert verb in out


async def test_graph_of_a_class_and_of_a_registered_agent(rig: Deployment) -> None:
    code, out, _ = await rig_cli(rig, "graph", "actors.examples.refund:RefundAgent")
    assert code == 0
    assert out.startswith("---\ntitle: refund\n---\nstateDiagram-v2\n")
    assert "    triage --> human : escalate (safe)\n" in out
    assert "    refunding --> done : refund [issue_refund] {refund_matches}\n" in out
    assert "    class human human\n" in out

    await rig.spawn("actors.examples.refund:RefundAgent")
    code, dot, _ = await rig_cli(rig, "graph", "refund", "--format", "dot")
    assert code == 0 and dot.startswith('digraph "refund" {')
    assert '"refunding" -> "human" [label="refund fails", style=dashed];' in dot

    code, _, err = await rig_cli(rig, "graph", "nobody")
    assert code == 2 and "no agent named 'nobody'" in err and "registered: refund" in err


async def test_an_invalid_graph_fails_at_load_naming_the_state(rig: Deployment) -> None:
    for argv in (
        ("graph", "tests.support.bad_agent:BrokenAgent"),
        ("actor", "run", "tests.support.bad_agent:BrokenAgent"),
    ):
        code, _, err = await rig_cli(rig, *argv)
        assert code == 2
        assert (
            "invalid agent graph: state 'triage': edge 'lookup' goes to unknown state 'nowhere'"
            in err
        )


async def test_dlq_ls_and_replay(rig: Deployment) -> None:
    await rig.spawn("actors:Supervisor")
    subject = rig.names.supervisor_for("a-job")
    await rig.nc.jetstream().publish(subject, b"\xc1 not a message")

    async def letters() -> list[dict[str, object]]:
        code, out, _ = await rig_cli(rig, "dlq", "ls", "--json")
        assert code == 0
        return list(json.loads(out))

    [letter] = await eventually(letters, message="a dead letter")
    assert letter["actor"] == rig.names.supervisor_durable(partition_of("a-job", 1))
    assert letter["subject"] == subject
    assert letter["error"]["code"] == "decode_error"

    code, out, _ = await rig_cli(rig, "dlq", "replay", str(letter["id"]))
    assert code == 0 and f"replayed dead letter {letter['id']}" in out
    # The message went back to the supervisor, which dead-lettered it again, once.
    [again] = await eventually(
        lambda: _other_than(letters, letter["id"]), message="the replay dead-lettered"
    )
    assert again["error"]["code"] == "decode_error"

    code, _, err = await rig_cli(rig, "dlq", "replay", str(letter["id"]))
    assert code == 2 and f"no dead letter {letter['id']}" in err


async def _other_than(letters: Any, letter_id: object) -> list[dict[str, object]]:
    found = await letters()
    assert all(item["id"] != letter_id for item in found)
    return list(found)


async def test_rig_logs_shows_each_actor_s_lines_about_a_job(rig: Deployment) -> None:
    """At the default level `rig logs JOB` has the supervisor's lines and says why the
    others are quiet; with RIG_LOG_LEVEL=debug it has every actor's lines about the job
    (each message it handled), from the files `rig up` writes, in time order."""
    rig.extra_env["RIG_LOG_LEVEL"] = "debug"
    await rig.up(*REFUND)
    job = await rig.client.submit("refund", RefundAgent.example_input)
    assert (await rig.client.wait(job.job_id, timeout=60)).status == "succeeded"
    logs = str(rig.home / "logs")

    async def every_kind_logged() -> list[dict[str, Any]]:
        code, out, err = await run_rig(rig.env, "logs", job.job_id, "--json", "--dir", logs)
        lines = [json.loads(line) for line in out.splitlines()]
        kinds = {line["file"].split(".")[-1].split("-")[0] for line in lines}
        assert code == 0 and kinds == {"Supervisor", "RefundAgent", "RefundTools", "RefundChecks"}
        assert "RIG_LOG_LEVEL" not in err  # it was debug: nothing to explain
        return lines

    lines = await eventually(every_kind_logged, timeout=30)
    assert all(line["job_id"] == job.job_id for line in lines)
    assert [line["timestamp"] for line in lines] == sorted(line["timestamp"] for line in lines)
    handled = {line["file"] for line in lines if line["event"] == "message.handled"}
    assert len(handled) == 4

    info = rig.home / "info"  # the same lines without the debug ones: a log at info
    info.mkdir()
    for path in (rig.home / "logs").glob("*.log"):
        kept = [line for line in path.read_text().splitlines() if '"level": "debug"' not in line]
        (info / path.name).write_text("".join(f"{line}\n" for line in kept))
    code, out, err = await run_rig(rig.env, "logs", job.job_id, "--json", "--dir", str(info))
    files = {json.loads(line)["file"].split(".")[-1] for line in out.splitlines()}
    assert code == 0 and files == {"Supervisor-0"}, files
    assert "RIG_LOG_LEVEL=debug has every actor log each message it handles" in err
