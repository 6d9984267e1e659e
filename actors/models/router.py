"""`ModelRouter`, the `LLM` an agent routes with: it turns a `RoutePrompt` into a request
whose JSON schema allows only the state's edges, and wraps the providers
(actors/models/dialects.py) in the resilience policy: timeouts bounded by the job's
deadline, retries with exponential backoff and full jitter that honour `Retry-After`,
circuit breakers shared by all agent processes (`actors.models.breaker`), hedged
requests, a fallback chain, shared rate limits (`actors.models.limits`) and the
exact-match response cache. Every attempt is recorded in the reply, so the journal shows
retries, open breakers and fallbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from actors.models.breaker import Breakers
from actors.models.dialects import (
    ChatAnswer,
    ChatRequest,
    Provider,
    ProviderError,
    estimate_input_tokens,
    route_schema,
    system_message,
    with_schema_in_prompt,
)
from actors.models.limits import LimitTimeout, SharedLimits, Slot
from actors.models.llm import DEFAULT_MAX_OUTPUT_TOKENS, LLMReply, Price, RoutePrompt
from actors.runtime import tracing as tracing
from actors.runtime.nats import kv_read
from protocols import Usage, canonical

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
