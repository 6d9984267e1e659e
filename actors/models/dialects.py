"""What Rig sends a model and how it reads the answer: one OpenAI-compatible `Provider`
in each dialect (`DIALECTS`: how a JSON schema is asked for), the routing prompt and its
schema, and the errors a provider raises (`ProviderError`, saying whether trying again
may help). The router (actors/models/router.py) wraps providers in Rig's policies; the
LLM config file (actors/models/config.py) names them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from actors.models.limits import ProviderLimits
from actors.models.llm import Price, RoutePrompt
from actors.runtime import tracing as tracing
from actors.runtime.lazy import lazy
from actors.runtime.settings import DIALECTS
from protocols import Usage, breaker_key, canonical

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
