"""`rig eval`: an agent's suite of cases, each run as N real jobs, scored, and gated on a
confidence bound (`actors.evals.stats`).

A suite is a TOML file (or a Python module with a `SUITE` dict of the same shape):

    agent = "refund"
    trials = 20            # per case (the command line may change it)
    target = 0.9           # the gate: the Wilson lower bound must reach it

    [[case]]
    name = "a small refund"
    input = {order_id = "A-1001", amount = 25}
    limits = {max_steps = 10}
    [case.expect]
    status = "succeeded"
    state = "done"
    path_contains = ["refunding"]
    path_avoids = ["human"]
    edges_contain = ["refund"]
    tools_called = [{tool = "issue_refund", args = {amount = 25.0}}]
    tools_not_called = ["issue_refund"]
    result = [{path = "$.results.issue_refund.amount", equals = 25.0}]
    verdicts = [{verifier = "refund_matches", passed = true}]
    similar = [{path = "$.results.write_reply.text", reference = "Refunded 25", threshold = 0.8}]
    judge = "the reply tells the customer the amount refunded"

    [embeddings]           # for `similar`: any OpenAI-compatible /v1/embeddings
    base_url = "http://127.0.0.1:8400/v1"
    model = "text-embedding-3-small"

    [judge]                # for `judge`: a chat model asked k times, its spread reported
    base_url = "http://127.0.0.1:8400/v1"
    model = "gpt-4o-mini"
    k = 3

Trials are independent: each is submitted with its own seed (from the run's seed, which
the record keeps; `rig submit --seed` replays one) and past the response cache.

A trial is an infrastructure failure, counted apart and never as the agent's, when a
model provider did not answer (a step's safe edge taken for an outage), a message was
dead-lettered or the job stalled, a provider refused its configuration, or the job did
not settle within the eval's timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import math
import os
import re
import secrets
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import aiohttp
import jsonpath
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from actors.evals.stats import Gate, fisher_exact, gate, pass_hat_curve, sign_test, wilson
from actors.models.dialects import Dialect, OpenAICompatible
from actors.models.llm import InvalidAnswer, RoutePrompt, parse_answer
from actors.models.router import ModelRouter, ProvidersFailed, RetryPolicy
from actors.runtime.client import RigClient
from actors.runtime.settings import DIALECTS
from protocols import BudgetOverride, ConfigError, Edge, Event, JobContext, JobInfo, SchemaError

Outcome = Literal["pass", "fail", "infra"]
INFRA_KINDS = frozenset({"dead_letter", "stalled", "config_error"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolCallExpect(_Strict):
    tool: str
    args: dict[str, Any] = Field(default_factory=dict, description="a subset of the arguments")


class ResultExpect(_Strict):
    path: str = Field(description="a JSONPath into the job's result ({state, results})")
    equals: Any = None
    regex: str | None = None
    min: float | None = None
    max: float | None = None


class VerdictExpect(_Strict):
    verifier: str
    passed: bool = True


class SimilarExpect(_Strict):
    path: str = Field(description="a JSONPath into the job's result; its text is compared")
    reference: str = Field(min_length=1)
    threshold: float = Field(default=0.8, ge=-1, le=1, description="the least cosine similarity")


class EmbeddingsConfig(_Strict):
    """An OpenAI-compatible `/v1/embeddings` endpoint, for `similar` expectations."""

    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_key_env: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)


class JudgeConfig(_Strict):
    """A chat model that reads a case's rubric and the job, and answers pass or fail, `k`
    times per trial (each with its own seed); the majority is the judgement, and the
    spread of the votes is reported, so a judge that cannot make up its mind shows."""

    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_key_env: str | None = None
    dialect: Dialect = "openai"
    k: int = Field(default=3, ge=1, le=25)
    temperature: float = Field(default=1.0, ge=0, le=2)
    timeout_s: float = Field(default=60.0, gt=0, description="per call")
    max_attempts: int = Field(default=3, ge=1, le=10, description="per call, on an outage")

    @field_validator("dialect")
    @classmethod
    def _known_dialect(cls, dialect: str) -> str:
        if dialect not in DIALECTS:
            raise ValueError(f"dialect {dialect!r} is not one of {', '.join(DIALECTS)}")
        return dialect


class Expect(_Strict):
    status: str | None = "succeeded"
    state: str | None = None
    path_contains: list[str] = Field(default_factory=list)
    path_avoids: list[str] = Field(default_factory=list)
    edges_contain: list[str] = Field(default_factory=list)
    edges_avoid: list[str] = Field(default_factory=list)
    tools_called: list[ToolCallExpect] = Field(default_factory=list)
    tools_not_called: list[str] = Field(default_factory=list)
    result: list[ResultExpect] = Field(default_factory=list)
    verdicts: list[VerdictExpect] = Field(default_factory=list)
    similar: list[SimilarExpect] = Field(default_factory=list)
    judge: str | None = Field(
        default=None, min_length=1, description="a rubric the suite's judge applies"
    )
    scorer: str | None = Field(
        default=None,
        description="`module:function`, called with (JobInfo, events); returns True, or a "
        "string saying what is wrong",
    )


class Case(_Strict):
    name: str
    input: dict[str, Any]
    limits: BudgetOverride = Field(default_factory=BudgetOverride)
    expect: Expect = Field(default_factory=Expect)


class Suite(_Strict):
    agent: str
    trials: int = Field(default=10, ge=1, le=100_000)
    target: float | None = Field(default=None, gt=0, lt=1)
    concurrency: int = Field(default=8, ge=1, le=10_000)
    timeout_s: float = Field(default=300.0, gt=0, description="per trial, submit to settled")
    seed: int | None = Field(
        default=None, ge=0, description="the run's seed (default: a new one, recorded)"
    )
    embeddings: EmbeddingsConfig | None = None
    judge: JudgeConfig | None = None
    case: list[Case] = Field(min_length=1)

    @model_validator(mode="after")
    def _instruments(self) -> Suite:
        for case in self.case:
            if case.expect.similar and self.embeddings is None:
                raise ValueError(f"case {case.name!r} expects similar text: add [embeddings]")
            if case.expect.judge is not None and self.judge is None:
                raise ValueError(f"case {case.name!r} has a judge rubric: add [judge]")
        return self


def load_suite(where: str) -> Suite:
    """A suite from a TOML file, or from `module` / `module:ATTR` (default `SUITE`)."""
    path = Path(where)
    try:
        if path.suffix == ".toml" or path.exists():
            data: Any = tomllib.loads(path.read_text())
        else:
            module_name, _, attr = where.partition(":")
            data = getattr(importlib.import_module(module_name), attr or "SUITE")
    except (OSError, tomllib.TOMLDecodeError, ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot read the suite {where!r}: {exc}") from None
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise SchemaError(f"the suite {where!r} is not valid: {exc}") from None
    names = [case.name for case in suite.case]
    if len(set(names)) != len(names):
        raise SchemaError(f"the suite {where!r} has two cases of one name")
    return suite


# --- scoring ---------------------------------------------------------------------


def score(expect: Expect, info: JobInfo, events: list[Event]) -> tuple[Outcome, list[str]]:
    """A settled job against what its case expects: the outcome, and what was wrong."""
    infra = infrastructure_failure(info, events)
    if infra is not None:
        return "infra", [infra]
    wrong: list[str] = []
    if expect.status is not None and info.status != expect.status:
        wrong.append(f"status {info.status}, expected {expect.status}")
    if expect.state is not None and info.state != expect.state:
        wrong.append(f"state {info.state!r}, expected {expect.state!r}")
    wrong += [f"never entered {s!r}" for s in expect.path_contains if s not in info.path]
    wrong += [f"entered {s!r}" for s in expect.path_avoids if s in info.path]
    decisions = [event.data for event in events if event.type == "decision"]
    edges = [decision.get("edge") for decision in decisions]
    wrong += [f"never took edge {e!r}" for e in expect.edges_contain if e not in edges]
    wrong += [f"took edge {e!r}" for e in expect.edges_avoid if e in edges]
    calls = [(d.get("tool"), d.get("args") or {}) for d in decisions if d.get("tool")]
    for want in expect.tools_called:
        if not any(tool == want.tool and _subset(want.args, args) for tool, args in calls):
            wrong.append(f"no call of {want.tool} with {want.args}")
    wrong += [f"called {t}" for t in expect.tools_not_called if any(c == t for c, _ in calls)]
    result = info.result or {}
    for check in expect.result:
        wrong += _check_result(check, result)
    verdicts = [event.data for event in events if event.type == "verdict"]
    for want_verdict in expect.verdicts:
        seen = [v for v in verdicts if v.get("verifier") == want_verdict.verifier]
        if not any(bool(v.get("passed")) == want_verdict.passed for v in seen):
            wrong.append(f"no verdict of {want_verdict.verifier} with passed={want_verdict.passed}")
    if expect.scorer is not None:
        scorer = _scorer(expect.scorer)
        try:
            said = scorer(info, events)
        except Exception as exc:  # the user's scorer failed: that trial fails, saying why
            said = f"raised {type(exc).__name__}: {exc}"
        if said is not True:
            wrong.append(f"{expect.scorer}: {said or 'failed'}")
    return ("pass" if not wrong else "fail"), wrong


def infrastructure_failure(info: JobInfo, events: list[Event]) -> str | None:
    """Why the trial says nothing about the agent, or None."""
    for event in events:
        if event.type == "decision" and event.data.get("outage"):
            return f"model outage at step {event.step}: {event.data.get('reason', '')}"
    waiting = info.waiting
    if info.status == "waiting_human" and waiting is not None and waiting.kind in INFRA_KINDS:
        return f"{waiting.kind}: {waiting.reason}"
    return None


def _subset(want: dict[str, Any], got: dict[str, Any]) -> bool:
    return all(key in got and got[key] == value for key, value in want.items())


def _check_result(check: ResultExpect, result: dict[str, Any]) -> list[str]:
    try:
        found = jsonpath.findall(check.path, result)
    except jsonpath.JSONPathError as exc:
        return [f"{check.path}: not a JSONPath ({exc})"]
    if not found:
        return [f"{check.path}: nothing there"]
    value = found[0]
    wrong = []
    if check.equals is not None and value != check.equals:
        wrong.append(f"{check.path} = {value!r}, expected {check.equals!r}")
    if check.regex is not None and not re.search(check.regex, str(value)):
        wrong.append(f"{check.path} = {value!r} does not match {check.regex!r}")
    if check.min is not None or check.max is not None:
        if not isinstance(value, int | float):
            wrong.append(f"{check.path} = {value!r} is not a number")
        elif (check.min is not None and value < check.min) or (
            check.max is not None and value > check.max
        ):
            wrong.append(f"{check.path} = {value!r} outside [{check.min}, {check.max}]")
    return wrong


def _scorer(target: str) -> Callable[[JobInfo, list[Event]], Any]:
    module_name, _, name = target.partition(":")
    try:
        scorer = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot load the scorer {target!r}: {exc}") from None
    return scorer  # type: ignore[no-any-return]


# --- the instruments: embeddings and a judge ------------------------------------------


class InstrumentError(Exception):
    """An embeddings endpoint or a judge did not answer: the trial says nothing about the
    agent (an infrastructure failure)."""


class Embedder:
    """Cosine similarity of texts by an OpenAI-compatible `/v1/embeddings` endpoint. A
    reference is embedded once per run."""

    def __init__(self, config: EmbeddingsConfig) -> None:
        self.config = config
        key = os.environ.get(config.api_key_env) if config.api_key_env else None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._session: aiohttp.ClientSession | None = None
        self._references: dict[str, list[float]] = {}

    async def similarity(self, text: str, reference: str) -> float:
        known = self._references.get(reference)
        if known is None:
            known = self._references[reference] = (await self._embed([reference]))[0]
        if not text.strip():
            return 0.0
        (vector,) = await self._embed([text])
        return _cosine(vector, known)

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, headers=self._headers)
        url = f"{self.config.base_url.rstrip('/')}/embeddings"
        body = {"model": self.config.model, "input": texts}
        problem = ""
        for attempt in range(3):
            if attempt:
                await asyncio.sleep(0.5 * 2**attempt)
            try:
                async with self._session.post(url, json=body) as response:
                    if response.status == 200:
                        data = await response.json()
                        return [item["embedding"] for item in data["data"]]
                    problem = f"HTTP {response.status}: {(await response.text())[:200]}"
                    if response.status < 500 and response.status != 429:
                        break  # the request is wrong: asking again will not help
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
        raise InstrumentError(f"the embeddings endpoint {url} failed: {problem}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


class _FailArgs(BaseModel):
    reason: str = ""


_VERDICTS = (
    Edge(name="pass", to="pass", description="the run meets the rubric"),
    Edge(
        name="fail",
        to="fail",
        description="the run does not meet the rubric",
        args=_FailArgs,
    ),
)


class Judge:
    """A chat model asked, `k` times with `k` seeds, whether a run meets a rubric. It
    answers as an agent routes: by picking one of two edges, `pass` or `fail`."""

    def __init__(self, config: JudgeConfig, agent: str) -> None:
        self.config, self.agent = config, agent
        provider = OpenAICompatible(
            name="judge",
            base_url=config.base_url,
            model=config.model,
            api_key=os.environ.get(config.api_key_env) if config.api_key_env else None,
            dialect=config.dialect,
        )
        policy = RetryPolicy(timeout=config.timeout_s, max_attempts=config.max_attempts)
        self.provider = provider
        self.router = ModelRouter([provider], policy, temperature=config.temperature)

    async def votes(
        self, rubric: str, info: JobInfo, events: list[Event], seed: int
    ) -> list[bool | None]:
        """One vote per call: True pass, False fail, None an answer that was neither."""
        accepted = next((e.data for e in events if e.type == "accepted"), {})
        result = info.result or {}
        description = (
            f"You are judging one finished run of agent {self.agent!r}, not routing it. "
            f"Rubric: {rubric}\nThe run ended {info.status} in state {info.state!r} after "
            f"the states {' -> '.join(info.path)}; its input and its tools' results are "
            "the job context below. Take edge pass if the run meets the rubric, else fail."
        )
        prompt = RoutePrompt(
            agent=self.agent,
            state="judging",
            description=description,
            edges=_VERDICTS,
            context=JobContext(
                input=accepted.get("input") or {},
                results=result.get("results") or {},
                path=list(info.path),
            ),
            max_output_tokens=256,
        )
        out: list[bool | None] = []
        for vote in range(self.config.k):
            asked = replace(prompt, seed=(seed + vote + 1) % 2**31)
            try:
                reply = await self.router.complete(asked)
            except ProvidersFailed as exc:
                raise InstrumentError(f"the judge did not answer: {exc}") from None
            try:
                edge, _args = parse_answer(reply.text, _VERDICTS)
            except InvalidAnswer:
                out.append(None)
            else:
                out.append(edge == "pass")
        return out

    async def close(self) -> None:
        await self.provider.close()


def judged(votes: list[bool | None]) -> bool | None:
    """The majority of the votes that were answers (a tie fails); None if there were none."""
    answers = [vote for vote in votes if vote is not None]
    if not answers:
        return None
    return sum(answers) * 2 > len(answers)


async def score_trial(
    expect: Expect,
    info: JobInfo,
    events: list[Event],
    *,
    seed: int,
    embedder: Embedder | None = None,
    judge: Judge | None = None,
) -> tuple[Outcome, list[str], dict[str, Any]]:
    """`score`, then the instruments' checks (similarity, the judge): the outcome, what
    was wrong, and the scores they gave."""
    outcome, wrong = score(expect, info, events)
    scores: dict[str, Any] = {}
    if outcome == "infra":
        return outcome, wrong, scores
    result = info.result or {}
    try:
        for check in expect.similar:
            assert embedder is not None  # the suite's validator saw to it
            found = _find(check.path, result)
            text = "" if found is None else found if isinstance(found, str) else json.dumps(found)
            similarity = await embedder.similarity(text, check.reference)
            scores[f"similar {check.path}"] = round(similarity, 4)
            if similarity < check.threshold:
                wrong.append(
                    f"{check.path}: similarity {similarity:.3f} to the reference, below "
                    f"{check.threshold}"
                )
        if expect.judge is not None:
            assert judge is not None
            votes = await judge.votes(expect.judge, info, events, seed)
            scores["judge"] = votes
            verdict = judged(votes)
            if verdict is None:
                return "infra", [f"the judge gave no usable answer in {len(votes)} call(s)"], scores
            if not verdict:
                passed = sum(vote is True for vote in votes)
                wrong.append(f"the judge failed it ({passed} of {len(votes)} votes pass)")
    except InstrumentError as exc:
        return "infra", [str(exc)], scores
    return ("pass" if not wrong else "fail"), wrong, scores


def _find(path: str, result: dict[str, Any]) -> Any:
    try:
        found = jsonpath.findall(path, result)
    except jsonpath.JSONPathError:
        return None
    return found[0] if found else None


def trial_seed(run_seed: int, case: str, index: int) -> int:
    """A trial's seed, from the run's: different for every trial, the same on a rerun."""
    digest = hashlib.sha256(f"{run_seed}:{case}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def run_seed(suite: Suite, given: int | None = None) -> int:
    """The run's seed: the one given, else the suite's, else a new one (the record keeps it)."""
    if given is not None:
        return given
    return suite.seed if suite.seed is not None else secrets.randbelow(2**31)


# --- running ---------------------------------------------------------------------


@dataclass
class Trial:
    case: str
    index: int
    job_id: str = ""
    outcome: Outcome = "infra"
    status: str = ""
    path: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seed: int = 0
    scores: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "index": self.index,
            "seed": self.seed,
            "job_id": self.job_id,
            "outcome": self.outcome,
            "status": self.status,
            "path": self.path,
            "wrong": self.wrong,
            "scores": self.scores,
            "seconds": round(self.seconds, 3),
        }


async def run_trials(
    rig: RigClient,
    suite: Suite,
    *,
    trials: int,
    concurrency: int,
    seed: int,
    on_trial: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """Every case `trials` times as real jobs, `concurrency` at a time; each scored. Each
    job gets its own seed (`trial_seed`) and bypasses the response cache."""
    gate_ = asyncio.Semaphore(concurrency)
    embedder = Embedder(suite.embeddings) if suite.embeddings is not None else None
    judge = Judge(suite.judge, suite.agent) if suite.judge is not None else None

    async def one(case: Case, index: int) -> Trial:
        trial = Trial(case.name, index, seed=trial_seed(seed, case.name, index))
        async with gate_:
            started = time.monotonic()
            try:
                limits = case.limits.model_dump(exclude_none=True)
                reply = await rig.submit(
                    suite.agent, case.input, seed=trial.seed, cache=False, **limits
                )
                trial.job_id = reply.job_id
                info = await rig.wait(reply.job_id, timeout=suite.timeout_s)
                events = [e async for e in rig.events(reply.job_id, timeout=30, until_parked=True)]
                trial.status, trial.path = info.status, list(info.path)
                trial.outcome, trial.wrong, trial.scores = await score_trial(
                    case.expect, info, events, seed=trial.seed, embedder=embedder, judge=judge
                )
            except TimeoutError:
                trial.outcome, trial.wrong = "infra", [f"not settled in {suite.timeout_s:g} s"]
            trial.seconds = time.monotonic() - started
        if on_trial is not None:
            on_trial(trial)
        return trial

    try:
        work = [one(case, i) for case in suite.case for i in range(trials)]
        return list(await asyncio.gather(*work))
    finally:
        for instrument in (embedder, judge):
            if instrument is not None:
                await instrument.close()


# --- the report ------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeSpread:
    """How much a judge agreed with itself over a case's trials."""

    trials: int  # trials it voted on
    votes: int  # calls in all
    split: int  # trials whose answers were not unanimous
    abstained: int  # calls whose answer was neither pass nor fail
    agreement: float  # the mean, over trials, of the majority's share of the answers

    @classmethod
    def of(cls, trials: list[Trial]) -> JudgeSpread | None:
        ballots = [t.scores["judge"] for t in trials if isinstance(t.scores.get("judge"), list)]
        if not ballots:
            return None
        shares, split = [], 0
        for votes in ballots:
            answers = [vote for vote in votes if vote is not None]
            if answers:
                yes = sum(answers)
                shares.append(max(yes, len(answers) - yes) / len(answers))
                split += 0 < yes < len(answers)
        return cls(
            trials=len(ballots),
            votes=sum(len(votes) for votes in ballots),
            split=split,
            abstained=sum(vote is None for votes in ballots for vote in votes),
            agreement=sum(shares) / len(shares) if shares else 0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "votes": self.votes,
            "split": self.split,
            "abstained": self.abstained,
            "agreement": round(self.agreement, 4),
        }


@dataclass(frozen=True)
class CaseReport:
    name: str
    passed: int
    scored: int  # trials that said something about the agent (infrastructure apart)
    infra: int
    low: float
    high: float
    pass_k: list[float]
    judge: JudgeSpread | None = None

    @property
    def flaky(self) -> bool:
        return 0 < self.passed < self.scored

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.name,
            "passed": self.passed,
            "scored": self.scored,
            "infra": self.infra,
            "rate": self.passed / self.scored if self.scored else None,
            "wilson95": [round(self.low, 4), round(self.high, 4)],
            "pass_k": [round(p, 4) for p in self.pass_k],
            "flaky": self.flaky,
            "judge": self.judge.to_dict() if self.judge else None,
        }


@dataclass(frozen=True)
class Report:
    agent: str
    cases: list[CaseReport]
    trials: list[Trial]
    target: float | None
    gate: Gate | None
    seed: int | None = None

    @property
    def passed(self) -> int:
        return sum(case.passed for case in self.cases)

    @property
    def scored(self) -> int:
        return sum(case.scored for case in self.cases)

    @property
    def infra(self) -> int:
        return sum(case.infra for case in self.cases)

    def exit_code(self) -> int:
        return 0 if self.gate is None else self.gate.exit_code()

    def to_dict(self) -> dict[str, Any]:
        low, high = wilson(self.passed, self.scored)
        return {
            "agent": self.agent,
            "seed": self.seed,
            "passed": self.passed,
            "scored": self.scored,
            "infra": self.infra,
            "wilson95": [round(low, 4), round(high, 4)],
            "target": self.target,
            "verdict": self.gate.verdict if self.gate else None,
            "trials_to_decide": self.gate.trials_to_decide if self.gate else None,
            "cases": [case.to_dict() for case in self.cases],
            "trials": [trial.to_dict() for trial in self.trials],
        }


def report(
    suite: Suite, trials: list[Trial], target: float | None, *, seed: int | None = None
) -> Report:
    cases = []
    for case in suite.case:
        mine = [trial for trial in trials if trial.case == case.name]
        passed = sum(trial.outcome == "pass" for trial in mine)
        scored = sum(trial.outcome != "infra" for trial in mine)
        low, high = wilson(passed, scored)
        curve = pass_hat_curve(passed, scored) if scored else []
        cases.append(
            CaseReport(
                case.name,
                passed,
                scored,
                len(mine) - scored,
                low,
                high,
                curve,
                JudgeSpread.of(mine),
            )
        )
    passed = sum(case.passed for case in cases)
    scored = sum(case.scored for case in cases)
    verdict = gate(passed, scored, target) if target is not None else None
    return Report(suite.agent, cases, trials, target, verdict, seed)


def render(result: Report) -> str:
    """The terminal table and the verdict, in words that agree with the exit code."""
    width = min(60, max(len("case"), *(len(case.name) for case in result.cases)))
    lines = [
        f"{'case':<{width}} {'passed':>9} {'rate':>6}  {'95% interval':<15} {'infra':>5}  flaky"
    ]
    for case in result.cases:
        rate = f"{case.passed / case.scored:.0%}" if case.scored else "-"
        lines.append(
            f"{case.name[:width]:<{width}} {f'{case.passed}/{case.scored}':>9} {rate:>6}  "
            f"[{case.low:.3f}, {case.high:.3f}]  {case.infra:>5}  {'yes' if case.flaky else ''}"
        )
    low, high = wilson(result.passed, result.scored)
    lines.append(
        f"{'all':<{width}} {f'{result.passed}/{result.scored}':>9} "
        f"{(result.passed / result.scored if result.scored else 0):>6.0%}  "
        f"[{low:.3f}, {high:.3f}]  {result.infra:>5}"
    )
    if result.infra:
        lines.append(
            f"{result.infra} trial(s) were infrastructure failures (outage, dead letter, "
            "stall, configuration, timeout): not counted for or against the agent"
        )
    for case in result.cases:
        spread = case.judge
        if spread is not None:
            lines.append(
                f"judge on {case.name!r}: {spread.votes} votes on {spread.trials} trials, "
                f"split on {spread.split}, agreement {spread.agreement:.2f}"
                + (f", {spread.abstained} unusable answer(s)" if spread.abstained else "")
            )
    if result.seed is not None:
        lines.append(f"seed {result.seed} (rerun the same trials' seeds with --seed {result.seed})")
    if result.gate is not None and result.target is not None:
        g, target = result.gate, result.target
        if g.verdict == "pass":
            lines.append(
                f"PASS: the lower bound {g.low:.3f} is at or above the target {result.target}"
            )
        elif g.verdict == "fail":
            lines.append(f"FAIL: the upper bound {g.high:.3f} is below the target {result.target}")
        else:
            more = (
                f"; about {g.trials_to_decide} trials in all would decide at this rate"
                if g.trials_to_decide
                else "; at this rate no number of trials would decide"
            )
            lines.append(
                f"INCONCLUSIVE: [{g.low:.3f}, {g.high:.3f}] straddles the target {target}{more}"
            )
    return "\n".join(line.rstrip() for line in lines)


# --- against a baseline -------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    case: str
    before: tuple[int, int]  # passed, scored
    after: tuple[int, int]
    p_value: float
    direction: Literal["regression", "improvement", "same"]
    # "mcnemar": trials paired by seed (the exact McNemar test of the discordant pairs);
    # "fisher": no pairs (other seeds), the two rates compared as independent samples.
    test: Literal["mcnemar", "fisher"] = "fisher"
    pairs: int = 0  # trials of this case run with the same seed in both
    broke: int = 0  # of those: passed before, fail now
    fixed: int = 0  # failed before, pass now

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "before": list(self.before),
            "after": list(self.after),
            "test": self.test,
            "pairs": self.pairs,
            "broke": self.broke,
            "fixed": self.fixed,
            "p_value": round(self.p_value, 6),
            "direction": self.direction,
        }


@dataclass(frozen=True)
class Comparison:
    changes: list[Change]
    p_value: float  # the sign test over the cases whose rate moved, paired by case
    alpha: float

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.direction == "regression" and c.p_value < self.alpha]

    @property
    def improvements(self) -> list[Change]:
        return [c for c in self.changes if c.direction == "improvement" and c.p_value < self.alpha]

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "sign_test_p": round(self.p_value, 6),
            "regressions": [c.case for c in self.regressions],
            "improvements": [c.case for c in self.improvements],
            "cases": [c.to_dict() for c in self.changes],
        }


def compare(result: Report, baseline: dict[str, Any], *, alpha: float = 0.05) -> Comparison:
    """This run against an earlier one's `--json` record, case by case, and over the
    suite (the sign test of the cases that moved).

    Trials run with the same seed in both (the same `--seed`, the same case and index)
    are pairs: the model sampled alike, so a pair that passed before and fails now is the
    change's doing, and the case is tested with the exact McNemar test of its discordant
    pairs. Without pairs, the two rates are compared with Fisher's exact test."""
    before = {case["case"]: case for case in baseline.get("cases", [])}
    earlier = {
        (t.get("case"), t.get("index"), t.get("seed")): t.get("outcome")
        for t in baseline.get("trials", [])
    }
    changes, better, worse = [], 0, 0
    for case in result.cases:
        old = before.get(case.name)
        if old is None or not old["scored"] or not case.scored:
            continue
        broke = fixed = pairs = 0
        for trial in result.trials:
            then = earlier.get((trial.case, trial.index, trial.seed))
            if trial.case != case.name or then in (None, "infra") or trial.outcome == "infra":
                continue
            pairs += 1
            broke += then == "pass" and trial.outcome == "fail"
            fixed += then == "fail" and trial.outcome == "pass"
        now, was = case.passed / case.scored, old["passed"] / old["scored"]
        if pairs:
            test: Literal["mcnemar", "fisher"] = "mcnemar"
            p = sign_test(fixed, broke)  # exact McNemar: a binomial test of the discordant
            moved = fixed - broke
        else:
            test = "fisher"
            p = fisher_exact(case.passed, case.scored, old["passed"], old["scored"])
            moved = (now > was) - (now < was)
        direction: Literal["regression", "improvement", "same"] = (
            "regression" if moved < 0 else "improvement" if moved > 0 else "same"
        )
        better += direction == "improvement"
        worse += direction == "regression"
        changes.append(
            Change(
                case.name,
                (old["passed"], old["scored"]),
                (case.passed, case.scored),
                p,
                direction,
                test,
                pairs,
                broke,
                fixed,
            )
        )
    return Comparison(changes, sign_test(better, worse), alpha)


def render_comparison(comparison: Comparison) -> str:
    lines = []
    for change in comparison.changes:
        if change.direction == "same":
            continue
        significant = change.p_value < comparison.alpha
        how = (
            f"McNemar p = {change.p_value:.4f}; of {change.pairs} trials paired by seed, "
            f"{change.broke} broke and {change.fixed} were fixed"
            if change.test == "mcnemar"
            else f"Fisher p = {change.p_value:.4f}"
        )
        lines.append(
            f"{change.direction.upper() if significant else change.direction}: "
            f"{change.case}: {change.before[0]}/{change.before[1]} -> "
            f"{change.after[0]}/{change.after[1]} ({how}"
            f"{'' if significant else ', not significant'})"
        )
    regressions = len(comparison.regressions)
    lines.append(
        f"against the baseline: {regressions} regression(s), "
        f"{len(comparison.improvements)} improvement(s) at p < {comparison.alpha}; "
        f"sign test over the cases that moved p = {comparison.p_value:.4f}"
    )
    return "\n".join(lines)


# --- JUnit XML ------------------------------------------------------------------------


def junit_xml(result: Report) -> str:
    """One testsuite, one testcase per case (failed when the case's trials did not all
    pass; its statistics in the message), and one for the gate."""
    from xml.etree import ElementTree as ET

    failures = sum(1 for case in result.cases if case.passed < case.scored)
    gate_failed = result.gate is not None and result.gate.verdict != "pass"
    suite = ET.Element(
        "testsuite",
        name=f"rig eval {result.agent}",
        tests=str(len(result.cases) + (result.gate is not None)),
        failures=str(failures + gate_failed),
        skipped="0",
    )
    for case in result.cases:
        element = ET.SubElement(suite, "testcase", classname=result.agent, name=case.name)
        summary = (
            f"{case.passed}/{case.scored} passed, Wilson 95% [{case.low:.3f}, {case.high:.3f}], "
            f"{case.infra} infrastructure failure(s)"
        )
        if case.passed < case.scored:
            wrong = sorted(
                {
                    w
                    for t in result.trials
                    if t.case == case.name and t.outcome == "fail"
                    for w in t.wrong
                }
            )
            failure = ET.SubElement(element, "failure", message=summary)
            failure.text = "\n".join(wrong)
        else:
            ET.SubElement(element, "system-out").text = summary
    if result.gate is not None:
        element = ET.SubElement(suite, "testcase", classname=result.agent, name="gate")
        text = render(result).splitlines()[-1]
        if gate_failed:
            ET.SubElement(element, "failure", message=text)
        else:
            ET.SubElement(element, "system-out").text = text
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)
