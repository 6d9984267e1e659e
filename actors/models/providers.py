"""Real LLMs behind the agent: an OpenAI-compatible provider and the policies around it.

A `Provider` sends one chat request and returns one answer, or raises a
`ProviderError` that says whether trying again may help. `ModelRouter` is the `LLM` an
agent uses: it turns a `RoutePrompt` into a request whose JSON schema allows only the
state's edges, and wraps the providers in the resilience policy (timeouts bounded by
the job's deadline, retries with exponential backoff and full jitter that honour
`Retry-After`, circuit breakers shared by all agent processes (`actors.models.breaker`), a
fallback chain). Every attempt is recorded in the reply, so the journal shows retries,
open breakers and fallbacks.

    [providers.local]                  # an LLM config file (see `load_llm_config`)
    base_url = "http://127.0.0.1:8400/v1"
    model = "chaos-1"
    dialect = "openai"                 # how the schema is asked for (`DIALECTS`)
    api_key_env = "OPENAI_API_KEY"     # optional: the variable holding the key
    price = { input_per_mtok = 0.15, output_per_mtok = 0.60 }
    max_concurrency = 8                # slots shared by every agent process, in turn
    requests_per_minute = 600          # shared token buckets
    tokens_per_minute = 200000
    require_schema = true              # refuse to start if the schema is not enforced
    probe = true                       # check the provider when an agent starts
    server_tokenizer = false           # count unreported usage with the server's tokenizer

    [agents.refund]
    providers = ["local"]              # tried in order: a fallback chain
    timeout = 30.0                     # per attempt, never past the job's deadline
    max_attempts = 4                   # per provider
    backoff = 0.2                      # first retry waits up to this (full jitter)
    max_backoff = 5.0
    stream = true                      # stream tokens to rig.tokens.<job_id>
    breaker_failure_rate = 0.5         # a provider's breaker opens when this share of a
    breaker_window = 50                #   process's last `window` calls (at least
    breaker_min_calls = 20             #   `min_calls`) were outages (5xx, timeouts)
    breaker_cooldown = 30.0            # seconds open before one probe is let through
    hedge_after = 5.0                  # a second request if the first takes longer (off
    hedge_percentile = 95              #   by default; or past this latency percentile)
    cache = false                      # exact-match response cache (temperature 0) in
    cache_ttl = 3600.0                 #   the KV bucket RIG_LLM_CACHE, per agent
    temperature = 0.0                  # above 0 the model samples; a job's seed
                                       #   (`Sampling`, set per eval trial) replays it
    queue_timeout = 60.0               # longest wait for a slot; `timeout` starts after
"""

# Long: the providers, their dialects, the router (retries, hedging, the cache) and the
# LLM config file; issue 31 splits them into dialects / router / config.

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import time
import tomllib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from actors.models.breaker import BreakerPolicy, Breakers
from actors.models.limits import LimitTimeout, ProviderLimits, SharedLimits, Slot
from actors.models.llm import DEFAULT_MAX_OUTPUT_TOKENS, LLMReply, Price, RoutePrompt
from actors.runtime import tracing as tracing
from actors.runtime.lazy import lazy
from actors.runtime.nats import kv_read
from actors.runtime.settings import DIALECTS
from protocols import ConfigError, Usage, breaker_key, canonical

TokenSink = Callable[[str], Awaitable[None]]

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy("aiohttp")  # loaded by the first request (actors.runtime.lazy)


class ProviderError(Exception):
    """A call that produced no answer. `retryable` says whether another try may help."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind, self.retryable = kind, retryable
        self.status, self.retry_after = status, retry_after


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    schema: dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    seed: int | None = None  # for reproducible sampling, where the server supports it


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    text: str
    usage: Usage
    finish: str | None = None  # why generation stopped: "stop", "length", ...
    pieces: int = 0  # stream deltas received (about one token each)
    reported: bool = True  # False: the server reported no usage, so Rig counted it


class Provider(Protocol):
    name: str
    model: str
    price: Price | None
    limits: ProviderLimits
    dialect: str

    @property
    def key(self) -> str: ...

    async def chat(
        self, request: ChatRequest, *, timeout: float, on_token: TokenSink | None = None
    ) -> ChatAnswer: ...


# How each kind of server is asked for output that matches a JSON schema.
Dialect = str  # one of DIALECTS

# When a server reports no usage (llama-cpp-python's streams), Rig counts: a UTF-8 byte
# count divided by this, plus a few tokens a message. Today's tokenizers take 3.5 to 5
# bytes a token of English or JSON; 3 over-counts on purpose, so budgets stop early rather
# than late.
ESTIMATE_BYTES_PER_TOKEN = 3
_MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """A conservative token count of `text` (see `ESTIMATE_BYTES_PER_TOKEN`)."""
    return -(-len(text.encode()) // ESTIMATE_BYTES_PER_TOKEN)


def estimate_input_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(
        estimate_tokens(str(m.get("content") or "")) + _MESSAGE_OVERHEAD_TOKENS for m in messages
    )


@dataclass
class OpenAICompatible:
    """Chat completions over HTTP, in the provider's dialect (`DIALECTS`): OpenAI, vLLM,
    llama.cpp's servers, LM Studio on `/v1/chat/completions`; Ollama on `/api/chat`."""

    name: str
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)  # never in a log line or error
    price: Price | None = None
    stream: bool = False
    limits: ProviderLimits = field(default_factory=ProviderLimits)
    dialect: Dialect = "openai"
    # Count tokens with llama-cpp-python's /extras/tokenize/count when a stream reports no
    # usage (off by default: on that server a count request interrupts running streams).
    server_tokenizer: bool = False
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ValueError(
                f"provider {self.name!r}: dialect {self.dialect!r} is not one of "
                f"{', '.join(DIALECTS)}"
            )

    @property
    def key(self) -> str:
        """The provider's identity for shared state (breaker, slots, rate buckets): its
        name and model, and a hash of what it is, so that a changed config starts fresh."""
        shape = {
            "base_url": self.base_url,
            "model": self.model,
            "dialect": self.dialect,
            "limits": [
                self.limits.max_concurrency,
                self.limits.requests_per_minute,
                self.limits.tokens_per_minute,
            ],
        }
        digest = hashlib.sha256(canonical(shape)).hexdigest()[:10]
        return f"{breaker_key(self.name, self.model)}.{digest}"

    @property
    def root(self) -> str:
        """The server's address without the API's `/v1`."""
        return self.base_url.rstrip("/").removesuffix("/v1")

    def body(self, request: ChatRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
        """The URL and JSON body of `request` in this provider's dialect."""
        messages = request.messages
        if request.schema is not None and self.dialect == "prompt_only":
            messages = with_schema_in_prompt(messages, request.schema)
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.dialect == "ollama":
            options: dict[str, Any] = {"temperature": request.temperature}
            if request.max_tokens:
                options["num_predict"] = request.max_tokens
            if request.seed is not None:
                options["seed"] = request.seed
            body |= {"stream": stream, "options": options}
            if request.schema is not None:
                body["format"] = request.schema
            return f"{self.root}/api/chat", body
        body["temperature"] = request.temperature
        if request.max_tokens:
            body["max_tokens"] = request.max_tokens
        if request.seed is not None:
            body["seed"] = request.seed
        if request.schema is not None:
            if self.dialect == "openai":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "route", "schema": request.schema, "strict": True},
                }
            elif self.dialect == "llama_cpp":
                body["response_format"] = {"type": "json_object", "schema": request.schema}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return f"{self.base_url.rstrip('/')}/chat/completions", body

    async def chat(
        self, request: ChatRequest, *, timeout: float, on_token: TokenSink | None = None
    ) -> ChatAnswer:
        stream = self.stream and on_token is not None
        url, body = self.body(request, stream=stream)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with asyncio.timeout(timeout):
                async with self.session.post(url, json=body, headers=headers) as response:
                    if response.status != 200:
                        raise _http_error(
                            self.name, response.status, response.headers, await response.text()
                        )
                    if stream:
                        assert on_token is not None
                        if self.dialect == "ollama":
                            answer = await self._read_ollama_stream(response, on_token)
                        else:
                            answer = await self._read_stream(response, on_token)
                    elif self.dialect == "ollama":
                        answer = _ollama_answer(self.name, await response.json(content_type=None))
                    else:
                        answer = _answer(self.name, await response.json(content_type=None))
                if not answer.reported:
                    answer = await self._counted(request, answer)
                return answer
        except TimeoutError:
            raise ProviderError(
                f"{self.name}: no answer within {timeout:.2f} s", kind="timeout", retryable=True
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(
                f"{self.name}: {type(exc).__name__}: {exc}", kind="connection", retryable=True
            ) from None
        except ValueError as exc:  # a body that is not JSON
            raise ProviderError(
                f"{self.name}: the reply is not JSON: {exc}", kind="bad_reply", retryable=True
            ) from None

    async def _counted(self, request: ChatRequest, answer: ChatAnswer) -> ChatAnswer:
        """`answer` with the usage Rig counted itself, as the server reported none: by the
        server's tokenizer if `server_tokenizer`, else the conservative estimate (never
        more output than `max_tokens`, which the server keeps to whatever the text)."""
        messages = self.body(request, stream=False)[1].get("messages") or request.messages
        inputs = outputs = None
        if self.server_tokenizer:
            prompt = "\n".join(str(m.get("content") or "") for m in messages)
            inputs = await self._server_count(prompt)
            if inputs is not None:  # the chat template's own tokens, a few a message
                inputs += _MESSAGE_OVERHEAD_TOKENS * len(messages)
            outputs = await self._server_count(answer.text)
        if inputs is None:
            inputs = estimate_input_tokens(messages)
        if outputs is None:
            outputs = max(answer.pieces, estimate_tokens(answer.text))
            if request.max_tokens:
                outputs = min(outputs, request.max_tokens)
        usage = Usage(input_tokens=inputs, output_tokens=outputs)
        return ChatAnswer(answer.text, usage, finish=answer.finish, reported=False)

    async def _server_count(self, text: str) -> int | None:
        try:
            async with self.session.post(
                f"{self.root}/extras/tokenize/count", json={"input": text}
            ) as response:
                if response.status != 200:
                    return None
                return int((await response.json())["count"])
        except (aiohttp.ClientError, ValueError, KeyError, TypeError):
            return None

    async def _read_stream(
        self, response: aiohttp.ClientResponse, on_token: TokenSink
    ) -> ChatAnswer:
        """Server-sent events; an answer only if the stream said why it finished and then
        `[DONE]`: anything less was cut short, and is retried, never taken as an answer."""
        text: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        done = False
        pieces = 0
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if isinstance(chunk, dict) and chunk.get("error"):
                raise _stream_error(self.name, chunk["error"])
            if chunk.get("usage"):
                usage = _usage(chunk["usage"])
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("refusal"):
                    raise ProviderError(
                        f"{self.name} refused: {delta['refusal']}", kind="refusal", retryable=False
                    )
                piece = delta.get("content")
                if piece:
                    pieces += 1
                    text.append(piece)
                    await on_token(piece)
                finish = choice.get("finish_reason") or finish
        if not done:
            raise ProviderError(
                f"{self.name}: the stream ended before [DONE]", kind="truncated", retryable=True
            )
        if finish is None:
            raise ProviderError(
                f"{self.name}: the stream sent [DONE] without a finish reason: it was cut "
                "short (llama-cpp-python does this to a stream when another request arrives, "
                "unless started with --interrupt_requests False)",
                kind="truncated",
                retryable=True,
            )
        return ChatAnswer(
            "".join(text), usage or Usage(), finish=finish, pieces=pieces, reported=bool(usage)
        )

    async def _read_ollama_stream(
        self, response: aiohttp.ClientResponse, on_token: TokenSink
    ) -> ChatAnswer:
        """Ollama's stream: one JSON object a line; the last says `done` and counts."""
        text: list[str] = []
        pieces = 0
        async for raw in response.content:
            line = raw.decode().strip()
            if not line:
                continue
            chunk = json.loads(line)
            if chunk.get("error"):
                raise _stream_error(self.name, chunk["error"])
            piece = (chunk.get("message") or {}).get("content")
            if piece:
                pieces += 1
                text.append(piece)
                await on_token(piece)
            if chunk.get("done"):
                answer = _ollama_answer(self.name, chunk, text="".join(text))
                return ChatAnswer(
                    answer.text,
                    answer.usage,
                    finish=answer.finish,
                    pieces=pieces,
                    reported=answer.reported,
                )
        raise ProviderError(
            f"{self.name}: the stream ended before its last (done) line",
            kind="truncated",
            retryable=True,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=None)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def with_schema_in_prompt(
    messages: list[dict[str, Any]], schema: dict[str, Any]
) -> list[dict[str, Any]]:
    """The messages of a `prompt_only` provider: the schema, as text, ends the system
    message (or starts the conversation), since the server will not enforce it."""
    note = f"Answer with one JSON object that matches this JSON schema: {json.dumps(schema)}"
    if messages and messages[0].get("role") == "system":
        first = messages[0] | {"content": f"{messages[0].get('content') or ''}\n{note}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


# A 500 that is really the server refusing the request: FastAPI/pydantic servers (such as
# llama-cpp-python's) answer a body they cannot validate with one of these.
_VALIDATION_MARKERS = (
    "validation error",
    "validationerror",
    "input should be",
    "field required",
    "extra inputs are not permitted",
    "unrecognized request argument",
    "invalid_request_error",
)


def server_message(text: str) -> str:
    """What the server said, from an error body (OpenAI's, Ollama's, FastAPI's shapes),
    on one line, without the server's own traceback."""
    said: Any = text
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message") or error
        if error is not None:
            said = error
    said = str(said).split('\n  File "')[0]  # a Python traceback the server appended
    return " ".join(said.split())[:500]


def _http_error(provider: str, status: int, headers: Any, text: str) -> ProviderError:
    detail = server_message(text)
    if status == 429:
        return ProviderError(
            f"{provider}: 429 rate limited: {detail}",
            kind="rate_limited",
            retryable=True,
            status=status,
            retry_after=_retry_after(headers.get("Retry-After")),
        )
    lowered = text.lower()
    invalid = any(marker in lowered for marker in _VALIDATION_MARKERS)
    if status in (408, 409) or (status >= 500 and not invalid):
        return ProviderError(
            f"{provider}: {status}: {detail}", kind="server_error", retryable=True, status=status
        )
    # The server refused the request itself (any other 4xx, or a 500 that is a validation
    # error): the config is wrong, and trying again cannot help.
    return ProviderError(
        f"{provider} rejected the request ({status}): {detail}",
        kind="rejected",
        retryable=False,
        status=status,
    )


def _stream_error(provider: str, error: Any) -> ProviderError:
    message = error.get("message", error) if isinstance(error, dict) else error
    return ProviderError(
        f"{provider}: error in the stream: {message}", kind="server_error", retryable=True
    )


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from LLM providers; fall back to backoff


def _usage(data: dict[str, Any]) -> Usage:
    return Usage(
        input_tokens=int(data.get("prompt_tokens") or 0),
        output_tokens=int(data.get("completion_tokens") or 0),
    )


def _answer(provider: str, data: Any) -> ChatAnswer:
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise ProviderError(
            f"{provider}: the reply has no message", kind="bad_reply", retryable=True
        ) from None
    if message.get("refusal"):
        raise ProviderError(
            f"{provider} refused: {message['refusal']}", kind="refusal", retryable=False
        )
    usage = data.get("usage")
    return ChatAnswer(
        text=message.get("content") or "",
        usage=_usage(usage) if usage else Usage(),
        finish=choice.get("finish_reason"),
        reported=bool(usage),
    )


def _ollama_answer(provider: str, data: Any, *, text: str | None = None) -> ChatAnswer:
    if not isinstance(data, dict) or (not isinstance(data.get("message"), dict) and text is None):
        raise ProviderError(
            f"{provider}: the reply has no message", kind="bad_reply", retryable=True
        )
    content = text if text is not None else str(data["message"].get("content") or "")
    reported = "prompt_eval_count" in data or "eval_count" in data
    usage = Usage(
        input_tokens=int(data.get("prompt_eval_count") or 0),
        output_tokens=int(data.get("eval_count") or 0),
    )
    return ChatAnswer(content, usage, finish=data.get("done_reason") or "stop", reported=reported)


# --- the policy ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    timeout: float = 30.0
    max_attempts: int = 4
    backoff: float = 0.2
    max_backoff: float = 5.0
    # Hedging: a second request once the first has run this long (seconds), or past this
    # percentile of the provider's recent latencies once 20 are known; the first answer
    # wins and the other request is cancelled. Off unless one is set.
    hedge_after: float | None = None
    hedge_percentile: float | None = None
    # The longest a call waits for the provider's shared limits (a concurrency slot, the
    # rate buckets) before its own `timeout` starts; the job's deadline bounds both.
    queue_timeout: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Exponential backoff with full jitter; a server's Retry-After is a floor."""
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        wait = rng.uniform(0, ceiling)
        return max(wait, retry_after) if retry_after is not None else wait


class ModelRouter:
    """The `LLM` of an agent whose model is configured: constrained routing over a fallback
    chain of providers, each call under the retry policy."""

    def __init__(
        self,
        providers: list[Provider],
        policy: RetryPolicy,
        *,
        breakers: Breakers | None = None,
        cache: ResponseCache | None = None,
        shared: SharedLimits | None = None,
        seed: int | None = None,
        temperature: float = 0.0,
    ) -> None:
        if not providers:
            raise ValueError("a ModelRouter needs at least one provider")
        self.temperature = temperature
        self.providers = providers
        self.policy = policy
        self.breakers = breakers
        self.cache = cache
        self.shared = shared
        self._rng = random.Random(seed)
        self._latencies: dict[str, deque[float]] = {}

    @property
    def price(self) -> Price | None:
        return self.providers[0].price

    @property
    def total_timeout(self) -> float:
        """The longest one `complete` may take under the policy: every attempt at every
        provider of the chain timing out, with the longest waits between attempts. The
        agent waits at least this long, so its own timeout never cuts the policy short."""
        policy = self.policy
        limited = any(provider.limits.any for provider in self.providers)
        per_attempt = policy.timeout + (policy.queue_timeout if limited else 0.0)
        per_provider = policy.max_attempts * per_attempt
        per_provider += (policy.max_attempts - 1) * policy.max_backoff
        return len(self.providers) * per_provider

    @staticmethod
    def request(prompt: RoutePrompt, temperature: float = 0.0) -> ChatRequest:
        return ChatRequest(
            messages=[
                {"role": "system", "content": system_message(prompt)},
                {"role": "user", "content": prompt.render()},
            ],
            schema=route_schema(prompt),
            max_tokens=prompt.max_output_tokens,
            temperature=temperature,
            seed=prompt.seed,
        )

    def estimate(self, prompt: RoutePrompt) -> Usage:
        """The most one call may spend, counted as Rig counts a server that reports no
        usage (`estimate_input_tokens`), which is more than any tokenizer counts."""
        request = self.request(prompt, self.temperature)
        messages = request.messages
        if any(p.dialect == "prompt_only" for p in self.providers) and request.schema:
            messages = with_schema_in_prompt(messages, request.schema)
        inputs = estimate_input_tokens(messages)
        outputs = prompt.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS
        price = self.price
        cost = price.cost(inputs, outputs) if price is not None else 0.0
        return Usage(input_tokens=inputs, output_tokens=outputs, cost=cost)

    async def complete(self, prompt: RoutePrompt) -> LLMReply:
        request = self.request(prompt, self.temperature)
        calls: list[dict[str, Any]] = []
        key = None
        if self.cache is not None and prompt.cache and request.temperature == 0:
            key = cache_key(self.providers[0].model, request)
            hit = await self.cache.get(key)
            if hit is not None:
                calls.append({"cache": "hit", "provider": hit.provider, "model": hit.model})
                trace.get_current_span().add_event(
                    "rig.llm.cache_hit", {"gen_ai.request.model": hit.model}
                )
                return LLMReply(text=hit.text, usage=Usage(), calls=tuple(calls))
        last: ProviderError | None = None
        finals: list[ProviderError] = []  # each provider's last error
        breakers = self.breakers
        for provider in self.providers:
            if last is not None:
                finals.append(last)
            for attempt in range(self.policy.max_attempts):
                if breakers is not None and not await breakers.admit(provider.key):
                    last = ProviderError(
                        f"{provider.name}: circuit open", kind="breaker_open", retryable=False
                    )
                    trace.get_current_span().add_event(
                        "rig.llm.breaker_open", {"gen_ai.provider.name": provider.name}
                    )
                    calls.append(_call(provider, time.perf_counter(), error=last))
                    break  # to the next provider of the chain
                started = time.perf_counter()
                slot: Slot | None = None
                try:
                    # The wait for a slot has its own bound; the call's timeout starts after.
                    queue = min(self.policy.queue_timeout, _left(prompt.deadline))
                    slot, waited = await self._within_limits(provider, request, queue)
                    timeout = min(self.policy.timeout, _left(prompt.deadline))
                    with chat_span(provider, request, attempt) as span:
                        answer = await self._attempt(provider, request, timeout, prompt, calls)
                        if span is not None:
                            _answered(span, answer)
                except ProviderError as exc:
                    last = exc
                    calls.append(_call(provider, started, error=exc))
                    if breakers is not None:
                        await breakers.record(provider.key, ok=False, kind=exc.kind)
                    if not exc.retryable or attempt == self.policy.max_attempts - 1:
                        break  # to the next provider of the chain
                    await asyncio.sleep(self.policy.delay(attempt, exc.retry_after, self._rng))
                    continue
                finally:
                    if slot is not None and self.shared is not None:
                        await self.shared.release(slot)
                calls.append(_call(provider, started, waited=waited, counted=not answer.reported))
                self._latencies.setdefault(provider.name, deque(maxlen=200)).append(
                    time.perf_counter() - started
                )
                if breakers is not None:
                    await breakers.record(provider.key, ok=True)
                if key is not None and self.cache is not None:
                    await self.cache.put(key, answer.text, provider.name, provider.model)
                usage = answer.usage
                if provider.price is not None:
                    usage = usage.model_copy(
                        update={
                            "cost": provider.price.cost(usage.input_tokens, usage.output_tokens)
                        }
                    )
                return LLMReply(
                    text=answer.text, usage=usage, calls=tuple(calls), finish=answer.finish
                )
        assert last is not None
        finals.append(last)
        raise ProvidersFailed(
            f"every provider failed; last: {last}", calls=calls, last=last, finals=finals
        )

    @contextlib.asynccontextmanager
    async def limited(self, provider: Provider, request: ChatRequest) -> AsyncIterator[None]:
        """Hold what one call to `provider` needs of its shared limits (a slot, the rate
        buckets) while the body runs: for calls made outside `complete`, like a probe."""
        slot, _waited = await self._within_limits(provider, request, self.policy.queue_timeout)
        try:
            yield
        finally:
            if slot is not None and self.shared is not None:
                await self.shared.release(slot)

    async def _within_limits(
        self, provider: Provider, request: ChatRequest, timeout: float
    ) -> tuple[Slot | None, float]:
        """Wait for the provider's shared rate limits and take a concurrency slot; return
        the slot (release it after the call) and the seconds waited."""
        limits, shared = provider.limits, self.shared
        if shared is None or not limits.any:
            return None, 0.0
        started = time.time()
        deadline = started + timeout
        try:
            if limits.requests_per_minute:
                await shared.take(
                    provider.name,
                    provider.key,
                    "rpm",
                    limits.requests_per_minute,
                    1,
                    deadline=deadline,
                )
            if limits.tokens_per_minute:
                tokens = len(json.dumps(request.messages)) // 4 + (request.max_tokens or 256)
                await shared.take(
                    provider.name,
                    provider.key,
                    "tpm",
                    limits.tokens_per_minute,
                    tokens,
                    deadline=deadline,
                )
            slot = None
            if limits.max_concurrency:
                slot = await shared.slot(
                    provider.name,
                    provider.key,
                    limits.max_concurrency,
                    deadline=deadline,
                )
        except LimitTimeout as exc:
            raise ProviderError(str(exc), kind="limited", retryable=False) from None
        return slot, time.time() - started

    def _hedge_delay(self, provider: Provider) -> float | None:
        policy = self.policy
        seen = self._latencies.get(provider.name)
        if policy.hedge_percentile is not None and seen is not None and len(seen) >= 20:
            ordered = sorted(seen)
            index = min(len(ordered) - 1, int(len(ordered) * policy.hedge_percentile / 100))
            return ordered[index]
        return policy.hedge_after

    async def _attempt(
        self,
        provider: Provider,
        request: ChatRequest,
        timeout: float,
        prompt: RoutePrompt,
        calls: list[dict[str, Any]],
    ) -> ChatAnswer:
        """One call, hedged if the policy says so: after the hedge delay a second request
        races the first; the first answer wins and the loser is cancelled."""
        hedge = self._hedge_delay(provider)
        if hedge is None or hedge >= timeout:
            return await provider.chat(request, timeout=timeout, on_token=prompt.on_token)
        first: asyncio.Future[ChatAnswer] = asyncio.ensure_future(
            provider.chat(request, timeout=timeout, on_token=prompt.on_token)
        )
        early, _ = await asyncio.wait({first}, timeout=hedge)
        if early:
            return first.result()
        second: asyncio.Future[ChatAnswer] = asyncio.ensure_future(
            provider.chat(request, timeout=timeout - hedge)
        )
        pending = {first, second}
        try:
            while pending:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    if task.exception() is None:
                        trace.get_current_span().add_event(
                            "rig.llm.hedge",
                            {"rig.hedge.winner": "second" if task is second else "first"},
                        )
                        calls.append(
                            {
                                "hedge": "second" if task is second else "first",
                                "provider": provider.name,
                                "after_ms": round(hedge * 1000, 1),
                                "cancelled": len(pending),
                            }
                        )
                        return task.result()
            raise first.exception() or ProviderError(  # both failed: the first's reason
                "both hedged requests failed", kind="hedge_failed", retryable=True
            )
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def chat_span(
    provider: Provider, request: ChatRequest, attempt: int
) -> contextlib.AbstractContextManager[Any]:
    """A CLIENT span per model request, by the GenAI conventions (nothing when off)."""
    if not tracing.enabled():
        return contextlib.nullcontext()
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider.name,
        "gen_ai.request.model": provider.model,
        "gen_ai.request.temperature": request.temperature,
        "rig.llm.attempt": attempt + 1,
    }
    if request.max_tokens:
        attributes["gen_ai.request.max_tokens"] = request.max_tokens
    if request.seed is not None:
        attributes["gen_ai.request.seed"] = request.seed
    base_url = getattr(provider, "base_url", "")
    if base_url:
        attributes["server.address"] = base_url.split("//", 1)[-1].split("/", 1)[0]
    if tracing.capture_content():
        attributes["gen_ai.input.messages"] = json.dumps(request.messages)
    return tracing.span(f"chat {provider.model}", kind=SpanKind.CLIENT, attributes=attributes)


def _answered(span: Any, answer: ChatAnswer) -> None:
    span.set_attribute("gen_ai.usage.input_tokens", answer.usage.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", answer.usage.output_tokens)
    if answer.finish:
        span.set_attribute("gen_ai.response.finish_reasons", [answer.finish])
    if tracing.capture_content():
        span.set_attribute(
            "gen_ai.output.messages", json.dumps([{"role": "assistant", "content": answer.text}])
        )


def _left(deadline: float | None) -> float:
    """Seconds until the job's deadline (inf without one); `TimeoutError` once it passed."""
    if deadline is None:
        return float("inf")
    left = deadline - time.time()
    if left <= 0:
        raise TimeoutError("the job's deadline passed while calling the LLM")
    return left


class ProvidersFailed(Exception):
    """No provider of the chain answered within its attempts."""

    def __init__(
        self,
        message: str,
        *,
        calls: list[dict[str, Any]],
        last: ProviderError,
        finals: list[ProviderError] | None = None,
    ) -> None:
        super().__init__(message)
        self.calls, self.last = calls, last
        self.finals = finals if finals is not None else [last]

    @property
    def rejected(self) -> list[ProviderError]:
        """The providers that refused the request itself (a config error)."""
        return [error for error in self.finals if error.kind == "rejected"]

    @property
    def config_error(self) -> bool:
        """Every provider refused the request: no retry can help until the config changes."""
        return len(self.rejected) == len(self.finals)


def _call(
    provider: Provider,
    started: float,
    *,
    error: ProviderError | None = None,
    waited: float = 0.0,
    counted: bool = False,
) -> dict[str, Any]:
    call: dict[str, Any] = {
        "provider": provider.name,
        "model": provider.model,
        "ms": round((time.perf_counter() - started) * 1000, 1),
        "ok": error is None,
    }
    if waited >= 0.001:
        call["waited_ms"] = round(waited * 1000, 1)  # held back by the shared limits
    if counted:
        call["usage"] = "counted"  # the server reported none; Rig counted the tokens
    if error is not None:
        call |= {"error": error.kind, "status": error.status, "message": str(error)[:200]}
        if error.retry_after is not None:
            call["retry_after"] = error.retry_after
    return call


SYSTEM = (
    "You route jobs through a state machine. Answer only with a JSON object "
    '{"edge": <one of the allowed edges>, "args": {...}} that matches the schema.'
)


def system_message(prompt: RoutePrompt) -> str:
    """Rig's rule for the answer, then the agent's own instructions, if it has any."""
    return f"{SYSTEM}\n\n{prompt.instructions}" if prompt.instructions else SYSTEM


def route_schema(prompt: RoutePrompt) -> dict[str, Any]:
    """A JSON schema that allows exactly one of the state's edges, with its arguments.

    The answer is `{"route": {"edge": ..., "args": {...}}}`: OpenAI's strict structured
    outputs want an object at the root, every property required and no others, so the
    choice of edge (one branch per edge) sits one level down.
    """
    branches = [
        {
            "type": "object",
            "properties": {
                "edge": {"type": "string", "enum": [edge.name]},
                "args": strict_schema(edge.args or {"type": "object", "properties": {}}),
            },
            "required": ["edge", "args"],
            "additionalProperties": False,
        }
        for edge in prompt.edges
    ]
    return {
        "type": "object",
        "properties": {"route": {"anyOf": branches}},
        "required": ["route"],
        "additionalProperties": False,
    }


def strict_schema(schema: Any) -> Any:
    """`schema` as strict structured outputs want it: every object closed, all required."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict_schema(value) for key, value in schema.items()}
    if out.get("type") == "object" or "properties" in out:
        out["type"] = "object"
        out.setdefault("properties", {})
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
        out.pop("default", None)
    return out


# --- the response cache ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    text: str
    provider: str
    model: str


class ResponseCache:
    """Exact-match answers (model, messages, schema, temperature 0) in a NATS KV bucket,
    shared by the processes of one agent (`scope`: its name, the first token of its
    keys, the only ones its NATS user may write); an entry lives `ttl` seconds, and an
    entry that says it lives longer than this reader's `ttl` is not believed."""

    def __init__(self, kv: KeyValue, *, ttl: float, scope: str) -> None:
        self._kv, self.ttl, self.scope = kv, ttl, scope

    async def get(self, key: str) -> CachedAnswer | None:
        value, _revision = await kv_read(self._kv, f"{self.scope}.{key}")
        if not value:
            return None
        try:
            data = json.loads(value)
            now = time.time()
            if not now <= float(data["expires_at"]) <= now + self.ttl:
                return None
            return CachedAnswer(str(data["text"]), str(data["provider"]), str(data["model"]))
        except (ValueError, KeyError, TypeError):
            return None  # not an entry this cache wrote: a miss

    async def put(self, key: str, text: str, provider: str, model: str) -> None:
        value = {
            "text": text,
            "provider": provider,
            "model": model,
            "expires_at": time.time() + self.ttl,
        }
        # The server deletes it when it expires. One there already is another process's
        # answer to the same question, or one from before entries expired: replaced.
        name, data, ttl = f"{self.scope}.{key}", json.dumps(value).encode(), max(1.0, self.ttl)
        try:
            await self._kv.create(name, data, msg_ttl=ttl)
        except KeyWrongLastSequenceError:
            await self._kv.purge(name)
            with contextlib.suppress(KeyWrongLastSequenceError):
                await self._kv.create(name, data, msg_ttl=ttl)


def cache_key(model: str, request: ChatRequest) -> str:
    """The exact-match key of a request: a hash of everything that shapes the answer."""
    shape = {
        "model": model,
        "messages": request.messages,
        "schema": request.schema,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    return hashlib.sha256(canonical(shape)).hexdigest()


# --- configuration -----------------------------------------------------------------

_PROVIDER_KEYS = frozenset(
    {
        "kind",
        "base_url",
        "model",
        "api_key_env",
        "price",
        "max_concurrency",
        "requests_per_minute",
        "tokens_per_minute",
        "dialect",
        "server_tokenizer",
        "require_schema",
        "probe",
    }
)
_POLICY_KEYS = (
    "timeout",
    "max_attempts",
    "backoff",
    "max_backoff",
    "hedge_after",
    "hedge_percentile",
    "queue_timeout",
)
_BREAKER_KEYS = ("failure_rate", "window", "min_calls", "cooldown")
_AGENT_KEYS = frozenset(
    {"providers", "stream", "cache", "cache_ttl", "temperature", *_POLICY_KEYS}
    | {f"breaker_{key}" for key in _BREAKER_KEYS}
)


@dataclass(frozen=True, slots=True)
class AgentLLMConfig:
    providers: list[Provider]
    policy: RetryPolicy
    breaker: BreakerPolicy
    stream: bool
    cache_ttl: float | None  # None: no response cache
    temperature: float = 0.0
    # Per provider name: probe it when the agent starts, and refuse to start if it does
    # not enforce the schema (False: rely on validation and re-asks).
    probe: dict[str, bool] = field(default_factory=dict)
    require_schema: dict[str, bool] = field(default_factory=dict)


def load_llm_config(path: Path, agent: str) -> AgentLLMConfig | None:
    """The configured model of `agent` in the TOML file at `path`; None if it has none.
    A file that cannot work raises `ConfigError` saying where and why."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", path=str(path)) from None
    section = (data.get("agents") or {}).get(agent)
    if section is None:
        return None
    _known(path, f"agents.{agent}", section, _AGENT_KEYS)
    stream = bool(section.get("stream", False))
    providers: list[Provider] = []
    probe: dict[str, bool] = {}
    require: dict[str, bool] = {}
    for name in section.get("providers") or []:
        spec = (data.get("providers") or {}).get(name)
        if spec is None:
            raise ConfigError(
                f"{path}: agent {agent!r} names provider {name!r}, which is not defined",
                path=str(path),
            )
        providers.append(_provider(name, spec, stream=stream, path=path))
        probe[name] = bool(spec.get("probe", True))
        require[name] = bool(spec.get("require_schema", True))
    if not providers:
        raise ConfigError(f"{path}: agent {agent!r} lists no providers", path=str(path))
    try:
        policy = RetryPolicy(**{k: section[k] for k in _POLICY_KEYS if k in section})
        breaker = BreakerPolicy(
            **{k: section[f"breaker_{k}"] for k in _BREAKER_KEYS if f"breaker_{k}" in section}
        )
    except TypeError as exc:
        raise ConfigError(f"{path}: [agents.{agent}]: {exc}", path=str(path)) from None
    cache_ttl = float(section.get("cache_ttl", 3600.0)) if section.get("cache", False) else None
    temperature = section.get("temperature", 0.0)
    number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not number or not 0 <= temperature <= 2:
        raise ConfigError(
            f"{path}: [agents.{agent}] temperature must be a number from 0 to 2, "
            f"not {temperature!r}",
            path=str(path),
        )
    return AgentLLMConfig(
        providers=providers,
        policy=policy,
        breaker=breaker,
        stream=stream,
        cache_ttl=cache_ttl,
        temperature=float(temperature),
        probe=probe,
        require_schema=require,
    )


def load_providers(path: Path) -> dict[str, OpenAICompatible]:
    """Every provider the LLM config file at `path` defines, by name."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such LLM config file", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", path=str(path)) from None
    specs = data.get("providers") or {}
    return {name: _provider(name, spec, stream=False, path=path) for name, spec in specs.items()}


def _known(path: Path, where: str, section: dict[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(
            f"{path}: [{where}] has unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}",
            path=str(path),
        )


def _provider(name: str, spec: dict[str, Any], *, stream: bool, path: Path) -> OpenAICompatible:
    _known(path, f"providers.{name}", spec, _PROVIDER_KEYS)
    kind = spec.get("kind", "openai")
    if kind != "openai":
        raise ConfigError(
            f"{path}: provider {name!r} has kind {kind!r}; supported: openai "
            "(choose how structured output is asked for with `dialect`)",
            path=str(path),
        )
    missing = [k for k in ("base_url", "model") if k not in spec]
    if missing:
        raise ConfigError(f"{path}: provider {name!r} needs {', '.join(missing)}", path=str(path))
    dialect = spec.get("dialect", "openai")
    if dialect not in DIALECTS:
        choices = "; ".join(f"{k}: {v}" for k, v in DIALECTS.items())
        raise ConfigError(
            f"{path}: provider {name!r} has dialect {dialect!r}; choose one of: {choices}",
            path=str(path),
        )
    key_env = spec.get("api_key_env")
    price = spec.get("price")
    limits = ProviderLimits(
        **{
            k: spec[k]
            for k in ("max_concurrency", "requests_per_minute", "tokens_per_minute")
            if k in spec
        }
    )
    return OpenAICompatible(
        limits=limits,
        name=name,
        base_url=os.path.expandvars(spec["base_url"]),
        model=spec["model"],
        api_key=os.environ.get(key_env) if key_env else None,
        price=Price(**price) if price else None,
        stream=stream,
        dialect=dialect,
        server_tokenizer=bool(spec.get("server_tokenizer", False)),
    )
