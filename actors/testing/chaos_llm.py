"""`rig chaos-llm`: an HTTP server that speaks the OpenAI API and misbehaves on purpose.

It answers `GET /v1/models` and `POST /v1/chat/completions` (plain or `stream: true`,
with a JSON-schema `response_format` in OpenAI's shape or llama-cpp-python's
`json_object` one, or `tools`), and Ollama's `POST /api/chat` (with `format`), like a
plausible model, and injects the
faults a real provider has, at configured rates: latency from a lognormal distribution,
429 with `Retry-After`, 5xx, hangs, malformed JSON, refusals, illegal edges, truncated
streams. Everything random comes from one seeded generator, so a run can be repeated;
except that the answer to a request that carries its own `seed` (Rig sends a job's
`Sampling` seed) is drawn from that seed and the request's messages, as a model samples:
the same seeded job takes the same path whatever else the server is doing, while the
faults stay the server's (a retry may still get through).

For a routing request (a schema whose `edge` is an enum or a set of consts) it picks a
legal edge by a simple rule: the first edge, the main path, most of the time
(`--main-path`), another at random otherwise; and it fills the edge's arguments from the
job's context in the prompt (a value of the same name in the input or in a tool's
result), else with a plausible value of the right type.

`POST /v1/embeddings` answers with deterministic embeddings: each text's words and their
three-letter pieces hashed into a unit vector, so texts that share words are near and
the same text is the same vector, on every run (what an eval's similarity check needs
in a test; no fault touches it).

With an API key (`--api-key-env VAR`: the key is the variable's value, never an argument,
which any user of the machine can read), a model request without `Authorization: Bearer
<key>` is answered 401, as OpenAI answers it.

`GET /stats` counts what it did (requests, each fault, `max_in_flight`, and `abandoned`:
requests whose client hung up before the answer, like a timed-out call or a hedge's loser);
`GET /faults` shows the fault settings and `POST /faults` changes them while it serves
(`{"rate_5xx": 1.0}` starts an outage, `{"rate_5xx": 0}` ends it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

from aiohttp import web

_Z99 = 2.3263478740408408  # the standard normal's 99th percentile
_CONTEXT = re.compile(r"^Job context: (\{.*\})\s*$", re.MULTILINE)


@dataclass
class Faults:
    """What goes wrong, and how often (rates are probabilities per request, 0 to 1)."""

    latency_p50: float = 0.0  # seconds; 0 answers at once
    latency_p99: float = 0.0
    rate_5xx: float = 0.0
    rate_429: float = 0.0
    retry_after: float = 1.0  # seconds, in the 429's Retry-After
    rate_hang: float = 0.0  # answer nothing, ever (until the client gives up)
    rate_malformed: float = 0.0  # content that is not JSON
    rate_refusal: float = 0.0  # a polite refusal instead of an answer
    rate_illegal: float = 0.0  # an edge that is not in the schema
    rate_truncate: float = 0.0  # a stream that stops mid-answer, without [DONE]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("rate_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name} must be between 0 and 1, not {value}")
        if self.latency_p99 and self.latency_p99 < self.latency_p50:
            raise ValueError("latency_p99 must be at least latency_p50")
        total = sum(getattr(self, f.name) for f in fields(self) if f.name.startswith("rate_"))
        if total > 1.0:
            raise ValueError(f"the fault rates add up to {total:.2f}, more than 1")


class ChaosLLM:
    """The server's behaviour; `app()` is the aiohttp application."""

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        seed: int = 0,
        model: str = "chaos-1",
        main_path: float = 0.9,
        api_key: str | None = None,
    ) -> None:
        self.faults = faults or Faults()
        self.api_key = api_key
        self.rng = random.Random(seed)
        self.model = model
        self.main_path = main_path
        self.stats: Counter[str] = Counter()
        self._in_flight = 0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._authorized])
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/api/chat", self.ollama_chat)
        app.router.add_get("/stats", self.show_stats)
        app.router.add_get("/faults", self.show_faults)
        app.router.add_post("/faults", self.set_faults)
        return app

    @web.middleware
    async def _authorized(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """With an API key, a model request must carry it (the stats and faults need none)."""
        wanted = f"Bearer {self.api_key}"
        if self.api_key and request.method == "POST" and request.path != "/faults":
            if not hmac.compare_digest(request.headers.get("Authorization", ""), wanted):
                self.stats["unauthorized"] += 1
                return _error(401, "invalid_request_error", "Incorrect API key provided.")
        return await handler(request)  # type: ignore[no-any-return]

    # --- endpoints ---------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "rig"}
        return web.json_response({"object": "list", "data": [model]})

    async def show_stats(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.stats))

    async def show_faults(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.faults))

    async def set_faults(self, request: web.Request) -> web.Response:
        """Change fault settings while serving (a provider's outage starts or ends)."""
        try:
            changes = await request.json()
            self.faults = Faults(**(asdict(self.faults) | dict(changes)))
        except (ValueError, TypeError) as exc:
            return _error(400, "invalid_request_error", f"bad fault settings: {exc}")
        return web.json_response(asdict(self.faults))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "the body is not JSON")
        problem = _check(body)
        if problem:
            return _error(400, "invalid_request_error", problem)
        self.stats["requests"] += 1
        self._in_flight += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self._in_flight)
        try:
            return await self._complete(request, body)
        finally:
            self._in_flight -= 1

    async def embeddings(self, request: web.Request) -> web.Response:
        """OpenAI's `/v1/embeddings`: `input` a string or a list of them; `dimensions`."""
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "the body is not JSON")
        texts = body.get("input") if isinstance(body, dict) else None
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _error(400, "invalid_request_error", "'input' must be a string or strings")
        size = body.get("dimensions", EMBEDDING_DIMENSIONS)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 4096:
            return _error(400, "invalid_request_error", "'dimensions' must be 1 to 4096")
        self.stats["embeddings"] += len(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": embed(text, size)}
            for i, text in enumerate(texts)
        ]
        tokens = sum(_tokens(text) for text in texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", self.model),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def ollama_chat(self, request: web.Request) -> web.StreamResponse:
        """Ollama's own `/api/chat`: `format` is the schema; a stream is one JSON object a
        line, the last with `done` and the token counts."""
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        problem = _check(body)
        if problem:
            return web.json_response({"error": problem}, status=400)
        schema = body.get("format")
        as_openai = {
            "model": body["model"],
            "messages": body["messages"],
            "stream": body.get("stream", True),
            "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}
            if isinstance(schema, dict)
            else None,
        }
        self.stats["requests"] += 1
        fault = self._draw()
        if fault in ("5xx", "429", "hang"):  # Ollama has no Retry-After: all are outages
            self.stats[fault] += 1
            return web.json_response({"error": "the chaos server failed on purpose"}, status=500)
        await asyncio.sleep(self._latency())
        wrong = fault if fault in ("malformed", "illegal") else None
        seeded = {"seed": (body.get("options") or {}).get("seed"), "messages": body["messages"]}
        message = self._answer(as_openai, wrong, self._sampler(seeded))
        text = message.get("content") or ""
        counts = {
            "prompt_eval_count": _tokens(json.dumps(body["messages"])),
            "eval_count": _tokens(text),
        }
        self.stats["completions"] += 1
        model = body["model"]
        if not as_openai["stream"]:
            return web.json_response(
                {
                    "model": model,
                    "message": {"role": "assistant", "content": text},
                    "done": True,
                    "done_reason": "stop",
                }
                | counts
            )
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        pieces = [text[i : i + 8] for i in range(0, len(text), 8)]
        if fault == "truncate":
            pieces = pieces[: max(1, len(pieces) // 2)]
        for piece in pieces:
            line = {"model": model, "message": {"role": "assistant", "content": piece}}
            await response.write(json.dumps(line | {"done": False}).encode() + b"\n")
        if fault != "truncate":
            last = {"model": model, "message": {"role": "assistant", "content": ""}}
            last |= {"done": True, "done_reason": "stop"} | counts
            await response.write(json.dumps(last).encode() + b"\n")
        await response.write_eof()
        return response

    async def _complete(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        fault = self._draw()
        if fault:
            self.stats[fault] += 1
        if fault == "5xx":
            status = self.rng.choice((500, 502, 503))
            return _error(status, "server_error", "the chaos server failed on purpose")
        if fault == "429":
            return _error(
                429,
                "rate_limit_exceeded",
                "slow down (chaos)",
                headers={"Retry-After": f"{self.faults.retry_after:g}"},
            )
        try:
            # A hang answers nothing, ever; the client's timeout ends it.
            await asyncio.sleep(3600 if fault == "hang" else self._latency())
        except asyncio.CancelledError:
            self.stats["abandoned"] += 1  # the client hung up (a timeout, a hedge's loser)
            raise
        message = self._answer(body, fault, self._sampler(body))
        if body.get("stream"):
            return await self._stream(request, body, message, truncate=fault == "truncate")
        return web.json_response(self._completion(body, message))

    # --- what to say -------------------------------------------------------------

    def _sampler(self, body: dict[str, Any]) -> random.Random:
        """What the answer is drawn from: the request's own generator if it carries a
        `seed`, else the server's."""
        seed = body.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            return self.rng
        messages = json.dumps(body.get("messages"), sort_keys=True)
        return random.Random(f"{seed}:{hashlib.sha256(messages.encode()).hexdigest()}")

    def _draw(self) -> str | None:
        """At most one fault per request, by the configured rates."""
        draw = self.rng.random()
        for name in ("5xx", "429", "hang", "malformed", "refusal", "illegal", "truncate"):
            rate = getattr(self.faults, f"rate_{name}")
            if draw < rate:
                return name
            draw -= rate
        return None

    def _latency(self) -> float:
        p50, p99 = self.faults.latency_p50, self.faults.latency_p99
        if p50 <= 0:
            return 0.0
        sigma = (math.log(p99) - math.log(p50)) / _Z99 if p99 > p50 else 0.0
        return self.rng.lognormvariate(math.log(p50), sigma)

    def _answer(
        self, body: dict[str, Any], fault: str | None, rng: random.Random
    ) -> dict[str, Any]:
        """The assistant message: content, or tool calls."""
        if fault == "refusal":
            return {"role": "assistant", "content": None, "refusal": "I can't help with that."}
        if fault == "malformed":
            return {"role": "assistant", "content": '{"edge": "oops", "args": {'}
        context = _context(body.get("messages", []))
        tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function"]
        if tools:
            function = self._pick_tool(tools, body.get("tool_choice"), rng)
            args = _fill(function.get("parameters") or {}, context, rng)
            call = {
                "id": f"call_{uuid.uuid4().hex[:16]}",
                "type": "function",
                "function": {"name": function["name"], "arguments": json.dumps(args)},
            }
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        schema = _schema(body.get("response_format"))
        if schema is None:
            return {"role": "assistant", "content": self._chat(body.get("messages", []))}
        wrapped = "route" in (schema.get("properties") or {})
        edges = _edges((schema.get("properties") or {}).get("route") or {} if wrapped else schema)
        if edges:
            if fault == "illegal":
                value: Any = {"edge": "invented_action", "args": {}}
            else:
                name = self._pick([name for name, _ in edges], rng)
                args = _fill(dict(edges)[name] or {}, context, rng)
                value = {"edge": name, "args": args}
            if wrapped:
                value = {"route": value}
        else:
            value = _fill(schema, context, rng)
        return {"role": "assistant", "content": json.dumps(value)}

    def _pick(self, names: list[str], rng: random.Random) -> str:
        if len(names) == 1 or rng.random() < self.main_path:
            return names[0]
        return rng.choice(names[1:])

    def _pick_tool(
        self, tools: list[dict[str, Any]], choice: Any, rng: random.Random
    ) -> dict[str, Any]:
        if isinstance(choice, dict):
            wanted = choice.get("function", {}).get("name")
            for function in tools:
                if function.get("name") == wanted:
                    return function
        by_name = {f["name"]: f for f in tools}
        return by_name[self._pick(list(by_name), rng)]

    def _chat(self, messages: list[dict[str, Any]]) -> str:
        last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        words = len(str(last).split())
        return f"This is chaos-llm ({self.model}). Your message had {words} word(s)."

    # --- how to say it -----------------------------------------------------------

    def _completion(self, body: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
        prompt_tokens = _tokens(json.dumps(body.get("messages", [])))
        completion_tokens = _tokens(json.dumps(message))
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        self.stats["completions"] += 1
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], message: dict[str, Any], *, truncate: bool
    ) -> web.StreamResponse:
        """Server-sent events as OpenAI sends them: a role chunk, content pieces, a finish
        chunk, a usage chunk if asked, then `data: [DONE]`."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        whole = self._completion(body, message)
        base = {k: whole[k] for k in ("id", "created", "model")} | {
            "object": "chat.completion.chunk"
        }

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        pieces = _pieces(message)
        if truncate:
            pieces = pieces[: max(1, len(pieces) // 2)]
        for delta in pieces:
            await send(delta)
            await asyncio.sleep(0)
        if truncate:
            return response  # the connection ends mid-answer: no finish, no [DONE]
        await send({}, whole["choices"][0]["finish_reason"])
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = base | {"choices": [], "usage": whole["usage"]}
            await response.write(f"data: {json.dumps(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _pieces(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The message cut into stream deltas of a few characters, as tokens arrive."""
    if message.get("refusal"):
        return [{"refusal": message["refusal"]}]
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        arguments = call["function"]["arguments"]
        first = {"index": 0, "id": call["id"], "type": "function"}
        head = [
            {
                "tool_calls": [
                    first | {"function": {"name": call["function"]["name"], "arguments": ""}}
                ]
            }
        ]
        return head + [
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + 8]}}]}
            for i in range(0, len(arguments), 8)
        ]
    text = message.get("content") or ""
    return [{"content": text[i : i + 8]} for i in range(0, len(text), 8)]


def _check(body: Any) -> str:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not isinstance(body.get("model"), str):
        return "'model' is required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    return ""


def _error(
    status: int, kind: str, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    error = {"message": message, "type": kind, "param": None, "code": kind}
    return web.json_response({"error": error}, status=status, headers=headers)


def _schema(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None
    if response_format.get("type") == "json_object":
        schema = response_format.get("schema")  # llama-cpp-python's shape
        return schema if isinstance(schema, dict) else {}
    return None


def _edges(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """The edges a routing schema allows, with each one's arguments schema."""
    found: list[tuple[str, dict[str, Any] | None]] = []
    for branch in schema.get("anyOf") or schema.get("oneOf") or []:
        props = branch.get("properties") or {}
        edge = props.get("edge") or {}
        if "const" in edge:
            found.append((edge["const"], props.get("args")))
        for name in edge.get("enum") or []:
            found.append((name, props.get("args")))
    props = schema.get("properties") or {}
    for name in (props.get("edge") or {}).get("enum") or []:
        found.append((name, props.get("args")))
    return found


def _context(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The job context a Rig prompt carries (`Job context: {...}`), if any."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            match = _CONTEXT.search(content)
            if match:
                try:
                    value = json.loads(match.group(1))
                except ValueError:
                    return {}
                return value if isinstance(value, dict) else {}
    return {}


def _fill(schema: dict[str, Any], context: dict[str, Any], rng: random.Random) -> Any:
    """A value for `schema`: named fields from the job's context where it has them."""
    kind = schema.get("type")
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        out = {}
        for name, sub in (schema.get("properties") or {}).items():
            known = _lookup(context, name)
            out[name] = known if known is not None else _fill(sub, context, rng)
        return out
    if kind == "array":
        return []
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(1, 100), 2)
    if kind == "boolean":
        return True
    if kind == "string":
        return "chaos"
    for option in schema.get("anyOf") or []:
        if option.get("type") != "null":
            return _fill(option, context, rng)
    return None


def _lookup(context: dict[str, Any], name: str) -> Any:
    job_input = context.get("input") or {}
    if name in job_input:
        return job_input[name]
    for result in (context.get("results") or {}).values():
        if isinstance(result, dict) and name in result:
            return result[name]
    return None


EMBEDDING_DIMENSIONS = 256


def embed(text: str, size: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A unit vector for `text`: its lowercased words (weight 1) and their three-letter
    pieces (weight 1/2), each hashed to a coordinate and a sign. Deterministic; texts
    that share words are near, and "refunded" is near "refund"."""
    vector = [0.0] * size
    for word in re.findall(r"\w+", text.lower()):
        features = [(word, 1.0)]
        padded = f"<{word}>"
        features += [(padded[i : i + 3], 0.5) for i in range(len(padded) - 2)]
        for feature, weight in features:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "big") % size
            vector[index] += weight if digest[4] & 1 else -weight
    norm = math.sqrt(sum(x * x for x in vector))
    return [round(x / norm, 6) for x in vector] if norm else vector


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


async def serve(
    chaos: ChaosLLM, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Start the server; returns its runner (to `cleanup()`) and the port it listens on."""
    # A client that hangs up cancels its handler, as it would cut a real model's work.
    runner = web.AppRunner(chaos.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, int(runner.addresses[0][1])
