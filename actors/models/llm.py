"""What an agent asks its LLM, what comes back, and an offline stand-in that follows rules.

An LLM in Rig only routes: given the current state, its edges and the job's context,
it names one edge (and the edge's arguments) as JSON text:

    {"edge": "approve", "args": {"amount": 25.0}}

Anything else (not JSON, an edge that does not exist, args that are not an object) is
re-asked with the error in `RoutePrompt.feedback`, then replaced by the state's safe edge.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import pydantic

from protocols import Edge, JobContext, Usage, explain


@dataclass(frozen=True, slots=True)
class RoutePrompt:
    """One routing question: which edge of `state` should the job take?"""

    agent: str
    state: str
    description: str
    edges: tuple[Edge, ...]
    context: JobContext
    feedback: tuple[str, ...] = ()
    max_output_tokens: int | None = None
    deadline: float | None = None  # wall clock (epoch s): no call or retry may run past it
    job_id: str = ""
    seed: int | None = None  # the job's sampling seed (`Sampling`), sent with each call
    cache: bool = True  # false: the response cache neither answers nor keeps this call
    on_token: Callable[[str], Awaitable[None]] | None = field(default=None, compare=False)
    # The agent's own words to the model (`Agent.instructions`): after Rig's system
    # message, in the same one.
    instructions: str = ""
    # The agent's `render_prompt`, when it has one of its own.
    renderer: Callable[[RoutePrompt], str] | None = field(default=None, compare=False)

    def render(self) -> str:
        """The prompt as text, for a model that reads text: the agent's `render_prompt`
        if it has one, else `standard()`."""
        return self.renderer(self) if self.renderer is not None else self.standard()

    def standard(self) -> str:
        """Rig's own rendering: the state, its edges, the job's context, and what was
        wrong with earlier answers."""
        lines = [
            f"You are routing a job of agent {self.agent!r}. Current state: {self.state!r}.",
            self.description,
            'Pick exactly one edge and answer with JSON: {"edge": "<name>", "args": {...}}. Edges:',
        ]
        lines += [f"- {edge.name}: {edge.description}" for edge in self.edges]
        lines.append(f"Job context: {self.context.model_dump_json()}")
        lines += [f"Your previous answer was rejected: {problem}" for problem in self.feedback]
        return "\n".join(line for line in lines if line)

    def retry_with(self, problem: str) -> RoutePrompt:
        return replace(self, feedback=(*self.feedback, problem))


@dataclass(frozen=True, slots=True)
class LLMReply:
    text: str
    usage: Usage = field(default_factory=Usage)
    calls: tuple[dict[str, Any], ...] = ()  # each attempt: provider, model, ms, error
    finish: str | None = None  # why the model stopped ("length": cut at the token cap)


class LLM(Protocol):
    """Anything that answers a `RoutePrompt` with text. Raise `RetryableError` for outages.

    It may also have `estimate(prompt) -> Usage`, an upper bound of what a call will
    spend, which the agent reserves from the job's budget before calling (see
    `estimate` below for the default), and a `price` (a `Price`).
    """

    async def complete(self, prompt: RoutePrompt) -> LLMReply: ...


@dataclass(frozen=True, slots=True)
class Price:
    """What a model charges, per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


DEFAULT_MAX_OUTPUT_TOKENS = 256


def estimate(llm: LLM, prompt: RoutePrompt) -> Usage:
    """What one call may spend at most: the LLM's own `estimate`, else the prompt's length
    at four characters a token plus the output cap, priced by the LLM's `price`."""
    own = getattr(llm, "estimate", None)
    if own is not None:
        return own(prompt)  # type: ignore[no-any-return]
    input_tokens = len(prompt.render()) // 4 + 1
    output_tokens = prompt.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS
    price = getattr(llm, "price", None)
    cost = price.cost(input_tokens, output_tokens) if isinstance(price, Price) else 0.0
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, cost=cost)


Choice = tuple[str, dict[str, Any]]
Rule = Callable[[RoutePrompt], str | Choice]


class RuleLLM:
    """An offline LLM stand-in: a function picks the edge, the reply is what a model would write.

    The function gets the prompt and returns an edge name, or `(edge, args)`. Token
    usage is estimated at four characters a token, and priced with `price` if given,
    so budgets see plausible numbers.
    """

    def __init__(self, rule: Rule, *, price: Price | None = None) -> None:
        self._rule = rule
        self.price = price

    async def complete(self, prompt: RoutePrompt) -> LLMReply:
        return _written(prompt, self._rule(prompt), self.price)


def _written(prompt: RoutePrompt, answer: Any, price: Price | None) -> LLMReply:
    """The reply a model would write for `answer`: an edge name or `(edge, args)` as the
    JSON answer, `Text(...)` as it is; usage at four characters a token."""
    if isinstance(answer, Text):
        text = answer.text
    else:
        edge, args = (answer, {}) if isinstance(answer, str) else answer
        text = json.dumps({"edge": edge, "args": args})
    input_tokens, output_tokens = len(prompt.render()) // 4, len(text) // 4
    cost = price.cost(input_tokens, output_tokens) if price else 0.0
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, cost=cost)
    return LLMReply(text=text, usage=usage)


@dataclass(frozen=True, slots=True)
class Text:
    """An answer written as is, for a `ScriptedLLM` that answers badly: `Text("no")` is
    not JSON, `Text('{"edge": "approve", "args": []}')` has args that are not an object."""

    text: str


Answer = str | Choice | Text | BaseException
Script = Callable[[RoutePrompt], Answer | Awaitable[Answer]]


class ScriptExhausted(AssertionError):
    """A `ScriptedLLM` was asked more often than it has answers."""


class ScriptedLLM:
    """An LLM for tests that answers from a script: a list of answers, given in order,
    or a function of the prompt (sync or async).

    An answer is an edge name, `(edge, args)`, `Text("...")` for a reply written as is
    (not JSON, a wrong shape), or an exception to raise: `RetryableError` is an outage,
    any other a bug in the LLM's code. Asked once more than the list holds, it fails
    with `ScriptExhausted` naming the state it was asked in. Every prompt it got is in
    `prompts`, in order (with `feedback` on a re-ask).

        llm = ScriptedLLM(["lookup", Text("no idea"), ("approve", {})])
    """

    def __init__(self, script: Sequence[Answer] | Script, *, price: Price | None = None) -> None:
        self._script = script if callable(script) else list(script)
        self.price = price
        self.prompts: list[RoutePrompt] = []

    async def complete(self, prompt: RoutePrompt) -> LLMReply:
        self.prompts.append(prompt)
        if callable(self._script):
            answer = self._script(prompt)
            if inspect.isawaitable(answer):
                answer = await answer
        else:
            asked = len(self.prompts)
            if asked > len(self._script):
                raise ScriptExhausted(
                    f"the script has {len(self._script)} answer(s) and the agent asked for "
                    f"answer {asked}, in state {prompt.state!r} of job {prompt.job_id!r}"
                )
            answer = self._script[asked - 1]
        if isinstance(answer, BaseException):
            raise answer
        return _written(prompt, answer, self.price)


class InvalidAnswer(Exception):
    """The LLM's reply cannot be used; the message is fed back to it on a re-ask."""


def parse_answer(text: str, edges: tuple[Edge, ...]) -> Choice:
    """Turn a model's reply into `(edge, args)`, or raise `InvalidAnswer` saying what is wrong."""
    try:
        answer = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InvalidAnswer(f"the answer is not JSON ({exc})") from None
    if isinstance(answer, dict) and isinstance(answer.get("route"), dict):
        answer = answer["route"]  # the shape of a structured-output answer (route_schema)
    if not isinstance(answer, dict):
        raise InvalidAnswer("the answer must be a JSON object with 'edge' and 'args'")
    edge, args = answer.get("edge"), answer.get("args", {})
    names = [e.name for e in edges]
    if not isinstance(edge, str) or edge not in names:
        raise InvalidAnswer(f"edge {edge!r} is not one of {', '.join(names)}")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise InvalidAnswer("'args' must be a JSON object")
    model = next(e for e in edges if e.name == edge).args_model
    if model is not None:
        try:
            args = model.model_validate(args).model_dump(mode="json")
        except pydantic.ValidationError as exc:
            raise InvalidAnswer(f"the args of edge {edge!r} are invalid: {explain(exc)}") from None
    return edge, args
