"""Real LLMs behind the agent: an OpenAI-compatible provider and the policies around it.

A `Provider` sends one chat request and returns one answer, or raises a
`ProviderError` that says whether trying again may help. `ModelRouter` is the `LLM` an
agent uses: it turns a `RoutePrompt` into a request whose JSON schema allows only the
state's edges, and wraps the providers in the resilience policy (timeouts bounded by
the job's deadline, retries with exponential backoff and full jitter that honour
`Retry-After`, circuit breakers shared by all agent processes (`actors._breaker`), a
fallback chain). Every attempt is recorded in the reply, so the journal shows retries,
open breakers and fallbacks.

    [providers.local]                  # an LLM config file (see `load_llm_config`)
    base_url = "http://127.0.0.1:8400/v1"
    model = "chaos-1"
    api_key_env = "OPENAI_API_KEY"     # optional: the variable holding the key
    price = { input_per_mtok = 0.15, output_per_mtok = 0.60 }
    max_concurrency = 8                # shared by every agent process (NATS KV)
    requests_per_minute = 600          # shared token buckets
    tokens_per_minute = 200000

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
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
import tomllib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from nats.js.kv import KeyValue

from actors._breaker import BreakerPolicy, Breakers
from actors._limits import LimitTimeout, ProviderLimits, SharedLimits, Slot
from actors._llm import LLMReply, Price, RoutePrompt
from actors._nats import kv_read
from protocols import Usage, canonical

TokenSink = Callable[[str], Awaitable[None]]


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


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    text: str
    usage: Usage


class Provider(Protocol):
    name: str
    model: str
    price: Price | None
    limits: ProviderLimits

    async def chat(
        self, request: ChatRequest, *, timeout: float, on_token: TokenSink | None = None
    ) -> ChatAnswer: ...


@dataclass
class OpenAICompatible:
    """Chat completions over HTTP: OpenAI, vLLM, Ollama, llama.cpp's server, LM Studio."""

    name: str
    base_url: str
    model: str
    api_key: str | None = None
    price: Price | None = None
    stream: bool = False
    limits: ProviderLimits = field(default_factory=ProviderLimits)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    async def chat(
        self, request: ChatRequest, *, timeout: float, on_token: TokenSink | None = None
    ) -> ChatAnswer:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "temperature": request.temperature,
        }
        if request.max_tokens:
            body["max_tokens"] = request.max_tokens
        if request.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "route", "schema": request.schema, "strict": True},
            }
        stream = self.stream and on_token is not None
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with asyncio.timeout(timeout):
                async with self.session.post(
                    f"{self.base_url.rstrip('/')}/chat/completions", json=body, headers=headers
                ) as response:
                    if response.status != 200:
                        raise _http_error(response.status, response.headers, await response.text())
                    if stream:
                        assert on_token is not None
                        return await self._read_stream(response, on_token)
                    return _answer(await response.json())
        except TimeoutError:
            raise ProviderError(
                f"{self.name}: no answer within {timeout:.2f} s", kind="timeout", retryable=True
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(
                f"{self.name}: {type(exc).__name__}: {exc}", kind="connection", retryable=True
            ) from None

    async def _read_stream(
        self, response: aiohttp.ClientResponse, on_token: TokenSink
    ) -> ChatAnswer:
        text: list[str] = []
        usage = Usage()
        done = False
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
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
                    text.append(piece)
                    await on_token(piece)
        if not done:
            raise ProviderError(
                f"{self.name}: the stream ended before [DONE]", kind="truncated", retryable=True
            )
        return ChatAnswer(text="".join(text), usage=usage)

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


def _http_error(status: int, headers: Any, text: str) -> ProviderError:
    detail = text[:300]
    if status == 429:
        return ProviderError(
            f"429 rate limited: {detail}",
            kind="rate_limited",
            retryable=True,
            status=status,
            retry_after=_retry_after(headers.get("Retry-After")),
        )
    if status >= 500:
        return ProviderError(
            f"{status}: {detail}", kind="server_error", retryable=True, status=status
        )
    # Any other 4xx: the request itself is wrong; trying again cannot help.
    return ProviderError(f"{status}: {detail}", kind="rejected", retryable=False, status=status)


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


def _answer(data: dict[str, Any]) -> ChatAnswer:
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise ProviderError("the reply has no message", kind="bad_reply", retryable=True) from None
    if message.get("refusal"):
        raise ProviderError(f"refused: {message['refusal']}", kind="refusal", retryable=False)
    return ChatAnswer(text=message.get("content") or "", usage=_usage(data.get("usage") or {}))


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
    ) -> None:
        if not providers:
            raise ValueError("a ModelRouter needs at least one provider")
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
        per_provider = policy.max_attempts * policy.timeout
        per_provider += (policy.max_attempts - 1) * policy.max_backoff
        return len(self.providers) * per_provider

    async def complete(self, prompt: RoutePrompt) -> LLMReply:
        request = ChatRequest(
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt.render()},
            ],
            schema=route_schema(prompt),
            max_tokens=prompt.max_output_tokens,
        )
        calls: list[dict[str, Any]] = []
        key = None
        if self.cache is not None and request.temperature == 0:
            key = cache_key(self.providers[0].model, request)
            hit = await self.cache.get(key)
            if hit is not None:
                calls.append({"cache": "hit", "provider": hit.provider, "model": hit.model})
                return LLMReply(text=hit.text, usage=Usage(), calls=tuple(calls))
        last: ProviderError | None = None
        breakers = self.breakers
        for provider in self.providers:
            for attempt in range(self.policy.max_attempts):
                if breakers is not None and not await breakers.admit(provider.name, provider.model):
                    last = ProviderError(
                        f"{provider.name}: circuit open", kind="breaker_open", retryable=False
                    )
                    calls.append(_call(provider, time.perf_counter(), error=last))
                    break  # to the next provider of the chain
                timeout = self.policy.timeout
                if prompt.deadline is not None:
                    timeout = min(timeout, prompt.deadline - time.time())
                    if timeout <= 0:
                        raise TimeoutError("the job's deadline passed while retrying the LLM")
                started = time.perf_counter()
                slot: Slot | None = None
                try:
                    slot, waited = await self._within_limits(provider, request, timeout)
                    answer = await self._attempt(provider, request, timeout - waited, prompt, calls)
                except ProviderError as exc:
                    last = exc
                    calls.append(_call(provider, started, error=exc))
                    if breakers is not None:
                        await breakers.record(
                            provider.name, provider.model, ok=False, kind=exc.kind
                        )
                    if not exc.retryable or attempt == self.policy.max_attempts - 1:
                        break  # to the next provider of the chain
                    await asyncio.sleep(self.policy.delay(attempt, exc.retry_after, self._rng))
                    continue
                finally:
                    if slot is not None and self.shared is not None:
                        await self.shared.release(slot)
                calls.append(_call(provider, started, waited=waited))
                self._latencies.setdefault(provider.name, deque(maxlen=200)).append(
                    time.perf_counter() - started
                )
                if breakers is not None:
                    await breakers.record(provider.name, provider.model, ok=True)
                if key is not None and self.cache is not None:
                    await self.cache.put(key, answer.text, provider.name, provider.model)
                usage = answer.usage
                if provider.price is not None:
                    usage = usage.model_copy(
                        update={
                            "cost": provider.price.cost(usage.input_tokens, usage.output_tokens)
                        }
                    )
                return LLMReply(text=answer.text, usage=usage, calls=tuple(calls))
        assert last is not None
        raise ProvidersFailed(f"every provider failed; last: {last}", calls=calls, last=last)

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
                    provider.model,
                    "rpm",
                    limits.requests_per_minute,
                    1,
                    deadline=deadline,
                )
            if limits.tokens_per_minute:
                tokens = len(json.dumps(request.messages)) // 4 + (request.max_tokens or 256)
                await shared.take(
                    provider.name,
                    provider.model,
                    "tpm",
                    limits.tokens_per_minute,
                    tokens,
                    deadline=deadline,
                )
            slot = None
            if limits.max_concurrency:
                slot = await shared.slot(
                    provider.name,
                    provider.model,
                    limits.max_concurrency,
                    lease=timeout + 5.0,
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


class ProvidersFailed(Exception):
    """No provider of the chain answered within its attempts."""

    def __init__(self, message: str, *, calls: list[dict[str, Any]], last: ProviderError) -> None:
        super().__init__(message)
        self.calls, self.last = calls, last


def _call(
    provider: Provider, started: float, *, error: ProviderError | None = None, waited: float = 0.0
) -> dict[str, Any]:
    call: dict[str, Any] = {
        "provider": provider.name,
        "model": provider.model,
        "ms": round((time.perf_counter() - started) * 1000, 1),
        "ok": error is None,
    }
    if waited >= 0.001:
        call["waited_ms"] = round(waited * 1000, 1)  # held back by the shared limits
    if error is not None:
        call |= {"error": error.kind, "status": error.status, "message": str(error)[:200]}
        if error.retry_after is not None:
            call["retry_after"] = error.retry_after
    return call


SYSTEM = (
    "You route jobs through a state machine. Answer only with a JSON object "
    '{"edge": <one of the allowed edges>, "args": {...}} that matches the schema.'
)


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
    shared by every agent process; an entry lives `ttl` seconds."""

    def __init__(self, kv: KeyValue, *, ttl: float) -> None:
        self._kv, self.ttl = kv, ttl

    async def get(self, key: str) -> CachedAnswer | None:
        value, _revision = await kv_read(self._kv, key)
        if not value:
            return None
        data = json.loads(value)
        if data["expires_at"] < time.time():
            return None
        return CachedAnswer(data["text"], data["provider"], data["model"])

    async def put(self, key: str, text: str, provider: str, model: str) -> None:
        value = {
            "text": text,
            "provider": provider,
            "model": model,
            "expires_at": time.time() + self.ttl,
        }
        await self._kv.put(key, json.dumps(value).encode())


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


@dataclass(frozen=True, slots=True)
class AgentLLMConfig:
    providers: list[Provider]
    policy: RetryPolicy
    breaker: BreakerPolicy
    stream: bool
    cache_ttl: float | None  # None: no response cache


def load_llm_config(path: Path, agent: str) -> AgentLLMConfig | None:
    """The configured model of `agent` in the TOML file at `path`; None if it has none."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    section = (data.get("agents") or {}).get(agent)
    if section is None:
        return None
    stream = bool(section.get("stream", False))
    providers: list[Provider] = []
    for name in section.get("providers") or []:
        spec = (data.get("providers") or {}).get(name)
        if spec is None:
            raise ValueError(
                f"{path}: agent {agent!r} names provider {name!r}, which is not defined"
            )
        providers.append(_provider(name, spec, stream=stream, path=path))
    if not providers:
        raise ValueError(f"{path}: agent {agent!r} lists no providers")
    fields = (
        "timeout",
        "max_attempts",
        "backoff",
        "max_backoff",
        "hedge_after",
        "hedge_percentile",
    )
    policy = RetryPolicy(**{k: section[k] for k in fields if k in section})
    breaker = BreakerPolicy(
        **{key: section[f"breaker_{key}"] for key in _BREAKER_KEYS if f"breaker_{key}" in section}
    )
    cache_ttl = float(section.get("cache_ttl", 3600.0)) if section.get("cache", False) else None
    return AgentLLMConfig(
        providers=providers, policy=policy, breaker=breaker, stream=stream, cache_ttl=cache_ttl
    )


_BREAKER_KEYS = ("failure_rate", "window", "min_calls", "cooldown")


def _provider(name: str, spec: dict[str, Any], *, stream: bool, path: Path) -> Provider:
    kind = spec.get("kind", "openai")
    if kind != "openai":
        raise ValueError(f"{path}: provider {name!r} has kind {kind!r}; supported: openai")
    missing = [k for k in ("base_url", "model") if k not in spec]
    if missing:
        raise ValueError(f"{path}: provider {name!r} needs {', '.join(missing)}")
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
    )
