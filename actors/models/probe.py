"""What a model server really does with Rig's requests: `rig models probe`, and the check
an agent makes of each provider when it starts.

Servers that speak "the OpenAI API" differ where Rig depends on them most: how a JSON
schema is asked for (and whether it is then enforced), whether a stream reports usage,
and whether a stream says why it finished. The probe asks, in each dialect, a question
whose honest answer the schema forbids (say "red"; the schema allows only "blue"), so an
answer of "blue" proves the schema was enforced, any other answer proves it was not, and
an HTTP error says the server refuses that shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from actors.models.dialects import ChatRequest, OpenAICompatible, ProviderError
from actors.runtime.settings import DIALECTS

Outcome = Literal["enforced", "ignored", "rejected", "accepted", "unreachable"]

PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["blue"]}},
    "required": ["answer"],
    "additionalProperties": False,
}
PROBE_MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You answer with one JSON object and nothing else."},
    {"role": "user", "content": 'Reply with exactly this JSON object: {"answer": "red"}'},
]
_TRIES = 3  # answers asked for before a shape is judged `ignored` (a model may slip)

# The escapes llama-cpp-python's grammar (0.3.x) takes in a JSON schema's `pattern`: its
# GBNF parser knows these and nothing else. Any other (`\d`, `\w`, `\s`, `\b`, `\.`,
# `\-`, `\/`, a backreference), inside a class or out, makes its server crash (a
# segfault) when it compiles the schema. docs/guide/models.md's "Dialects" lists what each takes.
LLAMA_CPP_ESCAPES = frozenset('\\"nrtxu[]')
_INSTEAD = {
    "d": "[0-9]",
    "w": "[A-Za-z0-9_]",
    "s": "[ \\t\\n]",
    ".": "[.]",
    "-": "a - first or last in a class",
}


@dataclass(frozen=True, slots=True)
class ShapeResult:
    dialect: str
    outcome: Outcome
    detail: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamResult:
    usage: bool  # the stream reported token usage
    finish: bool  # the stream said why it finished
    detail: str = ""


@dataclass(slots=True)
class ProbeReport:
    provider: str
    model: str
    base_url: str
    dialect: str  # the configured one
    shapes: list[ShapeResult] = field(default_factory=list)
    stream: StreamResult | None = None

    def shape(self, dialect: str) -> ShapeResult | None:
        return next((s for s in self.shapes if s.dialect == dialect), None)

    @property
    def configured(self) -> ShapeResult | None:
        return self.shape(self.dialect)

    @property
    def recommended(self) -> str | None:
        """The dialect to use: the configured one if the server enforces it, else the
        first that it enforces."""
        enforced = [s.dialect for s in self.shapes if s.outcome == "enforced"]
        if self.dialect in enforced:
            return self.dialect
        return enforced[0] if enforced else None

    def verdict(self, *, require_schema: bool) -> tuple[bool, str]:
        """May an agent route with this provider as configured? And a sentence why."""
        result = self.configured
        if self.dialect == "prompt_only":
            return True, "dialect prompt_only: every answer is validated and re-asked"
        if result is None or result.outcome == "unreachable":
            detail = result.detail if result is not None else "not probed"
            return True, f"could not probe ({detail}); starting, the breaker will judge it"
        if result.outcome == "enforced":
            return True, f"dialect {self.dialect}: the schema is enforced"
        hint = self.hint()
        if result.outcome == "rejected":
            return False, f"the server rejects dialect {self.dialect}: {result.detail}{hint}"
        if require_schema:
            return False, (
                f"the server accepts dialect {self.dialect} but does not enforce the schema "
                f"({result.detail}){hint}; or set require_schema = false to rely on "
                "validation and re-asks"
            )
        return True, f"dialect {self.dialect}: not enforced; relying on validation and re-asks"

    def hint(self) -> str:
        better = self.recommended
        if better is not None and better != self.dialect:
            return f"; set dialect = {better!r} for provider {self.provider!r}, which it enforces"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "dialect": self.dialect,
            "recommended": self.recommended,
            "shapes": [
                {
                    "dialect": s.dialect,
                    "outcome": s.outcome,
                    "detail": s.detail,
                    "seconds": round(s.seconds, 3),
                }
                for s in self.shapes
            ],
            "stream": None
            if self.stream is None
            else {
                "usage": self.stream.usage,
                "finish": self.stream.finish,
                "detail": self.stream.detail,
            },
        }

    def render(self) -> str:
        lines = [f"provider {self.provider} ({self.model} at {self.base_url})"]
        for s in self.shapes:
            mark = " (configured)" if s.dialect == self.dialect else ""
            detail = f": {_short(s.detail)}" if s.detail else ""
            lines.append(f"  {s.dialect:<12} {s.outcome:<11} {s.seconds:6.2f} s{mark}{detail}")
        if self.stream is not None:
            usage = "reports usage" if self.stream.usage else "no usage (Rig counts tokens)"
            finish = "says why it finished" if self.stream.finish else "no finish reason"
            detail = f" ({_short(self.stream.detail)})" if self.stream.detail else ""
            lines.append(f"  stream       {usage}; {finish}{detail}")
        better = self.recommended
        if better is None:
            lines.append("  no dialect is enforced: use prompt_only, or require_schema = false")
        elif better != self.dialect:
            lines.append(f"  recommended: dialect = {better!r}")
        else:
            lines.append(f"  ok: dialect {better!r} is enforced")
        return "\n".join(lines)


async def probe_shape(
    provider: OpenAICompatible, dialect: str, *, timeout: float = 60.0, tries: int = _TRIES
) -> ShapeResult:
    """Ask `provider` in `dialect`; judge whether the schema was enforced."""
    asking = replace(provider, dialect=dialect, stream=False)
    request = probe_request()
    started = time.perf_counter()
    said = ""
    try:
        for _ in range(tries):
            answer = await asking.chat(request, timeout=timeout)
            said = answer.text
            if _answer_of(said) == "blue":
                return ShapeResult(dialect, "enforced", "", time.perf_counter() - started)
            if dialect == "prompt_only":
                break  # nothing was enforced; that it answers is all there is to know
    except ProviderError as exc:
        outcome: Outcome = "rejected" if exc.kind == "rejected" else "unreachable"
        detail = str(exc).removeprefix(provider.name).lstrip(": ")
        if exc.status is not None:  # "HTTP 500: <what the server said>"
            detail = f"HTTP {exc.status}: {detail.split(': ', 1)[-1]}"
        return ShapeResult(dialect, outcome, detail[:500], time.perf_counter() - started)
    finally:
        await asking.close()
    seconds = time.perf_counter() - started
    if dialect == "prompt_only":
        return ShapeResult(dialect, "accepted", f"said {said[:60]!r}", seconds)
    return ShapeResult(dialect, "ignored", f"said {said[:60]!r}", seconds)


async def probe_stream(provider: OpenAICompatible, *, timeout: float = 60.0) -> StreamResult:
    """A streamed request in the provider's dialect: does it report usage and finish?"""
    asking = replace(provider, stream=True)
    schema = PROBE_SCHEMA if provider.dialect != "prompt_only" else None
    request = ChatRequest(messages=PROBE_MESSAGES, schema=schema, max_tokens=24)

    async def ignore(_: str) -> None:
        return None

    try:
        answer = await asking.chat(request, timeout=timeout, on_token=ignore)
    except ProviderError as exc:
        finish = exc.kind != "truncated"
        return StreamResult(usage=False, finish=finish, detail=str(exc)[:300])
    finally:
        await asking.close()
    return StreamResult(usage=answer.reported, finish=answer.finish is not None)


async def probe(
    provider: OpenAICompatible,
    *,
    dialects: tuple[str, ...] | None = None,
    stream: bool = True,
    timeout: float = 60.0,
) -> ProbeReport:
    """The full report: every dialect (the configured one first), then a stream."""
    order = dialects or (provider.dialect, *(d for d in DIALECTS if d != provider.dialect))
    report = ProbeReport(provider.name, provider.model, provider.base_url, provider.dialect)
    for dialect in order:
        report.shapes.append(await probe_shape(provider, dialect, timeout=timeout))
    if stream:
        # In the dialect that works, so the stream's own behaviour is what is seen.
        dialect = report.recommended or provider.dialect
        report.stream = await probe_stream(replace(provider, dialect=dialect), timeout=timeout)
    return report


def probe_request() -> ChatRequest:
    return ChatRequest(messages=PROBE_MESSAGES, schema=PROBE_SCHEMA, max_tokens=24)


async def check_at_start(
    provider: OpenAICompatible,
    *,
    require_schema: bool,
    timeout: float = 30.0,
    within: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    stream: bool = False,
) -> tuple[bool, ProbeReport, str]:
    """The check an agent makes of a provider when it starts: the configured dialect
    (and, for an agent that streams, one stream); if the dialect fails, every dialect,
    so that the refusal says which one would work. `within` holds the provider's shared
    limits around each request the agent would make anyway."""
    report = ProbeReport(provider.name, provider.model, provider.base_url, provider.dialect)
    hold = within if within is not None else contextlib.nullcontext
    try:
        if provider.dialect != "prompt_only":
            async with hold():
                report.shapes.append(await probe_shape(provider, provider.dialect, timeout=timeout))
        answered = all(shape.outcome != "unreachable" for shape in report.shapes)
        if stream and answered:
            async with hold():
                report.stream = await probe_stream(provider, timeout=timeout)
    except ProviderError as exc:  # the shared limits kept it back: judge nothing
        if not report.shapes and provider.dialect != "prompt_only":
            report.shapes.append(ShapeResult(provider.dialect, "unreachable", str(exc)[:300]))
    ok, why = report.verdict(require_schema=require_schema)
    if not ok:
        others = tuple(d for d in DIALECTS if d != provider.dialect)
        for dialect in others:
            report.shapes.append(await probe_shape(provider, dialect, timeout=timeout))
        ok, why = report.verdict(require_schema=require_schema)
    if ok and report.stream is not None and not report.stream.usage:
        why += "; its streams report no usage, so Rig counts the tokens"
    return ok, report, why


def pattern_problems(where: str, schema: Any, dialect: str) -> list[str]:
    """What in `schema` (an edge's arguments, `where` names it) the dialect's grammar
    cannot take, a sentence each; today only llama-cpp-python's escapes are known."""
    if dialect != "llama_cpp":
        return []
    found: list[str] = []

    def walk(node: Any, field: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, field)
            return
        if not isinstance(node, dict):
            return
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            bad = sorted(set(_escapes(pattern)) - LLAMA_CPP_ESCAPES)
            if bad:
                said = ", ".join(f"\\{c}" for c in bad)
                instead = "; ".join(f"\\{c}: {_INSTEAD[c]}" for c in bad if c in _INSTEAD)
                found.append(
                    f"{where}{field}: pattern {pattern!r} uses {said}, which llama-cpp-python's "
                    "grammar cannot take (its server crashes compiling it)"
                    + (f"; write instead {instead}" if instead else "")
                )
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for name, sub in value.items():
                    walk(sub, f"{field} field {name!r}" if not field else f"{field}.{name}")
            elif key != "pattern":
                walk(value, field)

    walk(schema, "")
    return found


def _escapes(pattern: str) -> list[str]:
    """The characters after each backslash of a regex (`\\\\` counts once)."""
    found, i = [], 0
    while i < len(pattern) - 1:
        if pattern[i] == "\\":
            found.append(pattern[i + 1])
            i += 2
        else:
            i += 1
    return found


async def probe_schemas(
    provider: OpenAICompatible,
    schemas: dict[str, dict[str, Any]],
    *,
    timeout: float = 60.0,
    tries: int = _TRIES,
) -> tuple[bool, str]:
    """Send each routing schema (by state) for one token: does the server take it? A
    refusal says which state's schema it was; so does a server that stops answering at
    it and stays away for `tries` asks (it crashed compiling the grammar). Other
    failures (a 503, a timeout: a flaky provider) judge nothing: the agent starts."""
    asking = replace(provider, stream=False)
    try:
        for state, schema in schemas.items():
            request = ChatRequest(messages=PROBE_MESSAGES, schema=schema, max_tokens=1)
            failures: list[ProviderError] = []
            for attempt in range(tries):
                try:
                    await asking.chat(request, timeout=timeout)
                    break
                except ProviderError as exc:
                    if exc.kind == "rejected":
                        return False, (
                            f"the server refuses the routing schema of state {state!r}: {exc}"
                        )
                    failures.append(exc)
                    await asyncio.sleep(0.5 * (attempt + 1))  # a flaky server's pause
            else:
                if all(exc.kind == "connection" for exc in failures):
                    return False, (
                        f"the server stopped answering when asked with the routing schema "
                        f"of state {state!r} ({failures[-1]}): it may have crashed compiling "
                        "it into a grammar"
                    )
                return True, (
                    f"could not check the routing schema of state {state!r} "
                    f"({failures[-1]}); starting, the breaker will judge the provider"
                )
    finally:
        await asking.close()
    return True, f"the {len(schemas)} routing schema(s) compile"


def _answer_of(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value.get("answer") if isinstance(value, dict) else None


def _short(text: str, limit: int = 200) -> str:
    """One line of a report (`--json` has the whole of it)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
