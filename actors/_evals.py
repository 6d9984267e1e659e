"""`rig eval`: an agent's suite of cases, each run as N real jobs, scored, and gated on a
confidence bound (`actors._evalstats`).

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

A trial is an infrastructure failure, counted apart and never as the agent's, when a
model provider did not answer (a step's safe edge taken for an outage), a message was
dead-lettered or the job stalled, a provider refused its configuration, or the job did
not settle within the eval's timeout.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonpath
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors._client import RigClient
from actors._evalstats import Gate, fisher_exact, gate, pass_hat_curve, sign_test, wilson
from protocols import BudgetOverride, ConfigError, Event, JobInfo, SchemaError

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
    case: list[Case] = Field(min_length=1)


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "index": self.index,
            "job_id": self.job_id,
            "outcome": self.outcome,
            "status": self.status,
            "path": self.path,
            "wrong": self.wrong,
            "seconds": round(self.seconds, 3),
        }


async def run_trials(
    rig: RigClient,
    suite: Suite,
    *,
    trials: int,
    concurrency: int,
    on_trial: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """Every case `trials` times as real jobs, `concurrency` at a time; each scored."""
    gate_ = asyncio.Semaphore(concurrency)

    async def one(case: Case, index: int) -> Trial:
        trial = Trial(case.name, index)
        async with gate_:
            started = time.monotonic()
            try:
                limits = case.limits.model_dump(exclude_none=True)
                reply = await rig.submit(suite.agent, case.input, **limits)
                trial.job_id = reply.job_id
                info = await rig.wait(reply.job_id, timeout=suite.timeout_s)
                events = [e async for e in rig.events(reply.job_id, timeout=30, until_parked=True)]
                trial.status, trial.path = info.status, list(info.path)
                trial.outcome, trial.wrong = score(case.expect, info, events)
            except TimeoutError:
                trial.outcome, trial.wrong = "infra", [f"not settled in {suite.timeout_s:g} s"]
            trial.seconds = time.monotonic() - started
        if on_trial is not None:
            on_trial(trial)
        return trial

    work = [one(case, i) for case in suite.case for i in range(trials)]
    return list(await asyncio.gather(*work))


# --- the report ------------------------------------------------------------------


@dataclass(frozen=True)
class CaseReport:
    name: str
    passed: int
    scored: int  # trials that said something about the agent (infrastructure apart)
    infra: int
    low: float
    high: float
    pass_k: list[float]

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
        }


@dataclass(frozen=True)
class Report:
    agent: str
    cases: list[CaseReport]
    trials: list[Trial]
    target: float | None
    gate: Gate | None

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


def report(suite: Suite, trials: list[Trial], target: float | None) -> Report:
    cases = []
    for case in suite.case:
        mine = [trial for trial in trials if trial.case == case.name]
        passed = sum(trial.outcome == "pass" for trial in mine)
        scored = sum(trial.outcome != "infra" for trial in mine)
        low, high = wilson(passed, scored)
        curve = pass_hat_curve(passed, scored) if scored else []
        cases.append(CaseReport(case.name, passed, scored, len(mine) - scored, low, high, curve))
    passed = sum(case.passed for case in cases)
    scored = sum(case.scored for case in cases)
    verdict = gate(passed, scored, target) if target is not None else None
    return Report(suite.agent, cases, trials, target, verdict)


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "before": list(self.before),
            "after": list(self.after),
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
    """This run against an earlier one's `--json` record, case by case (Fisher's exact
    test of the two rates) and over the suite (the sign test of the cases that moved)."""
    before = {case["case"]: case for case in baseline.get("cases", [])}
    changes, better, worse = [], 0, 0
    for case in result.cases:
        old = before.get(case.name)
        if old is None or not old["scored"] or not case.scored:
            continue
        p = fisher_exact(case.passed, case.scored, old["passed"], old["scored"])
        now, then = case.passed / case.scored, old["passed"] / old["scored"]
        direction: Literal["regression", "improvement", "same"] = (
            "regression" if now < then else "improvement" if now > then else "same"
        )
        better += direction == "improvement"
        worse += direction == "regression"
        changes.append(
            Change(
                case.name, (old["passed"], old["scored"]), (case.passed, case.scored), p, direction
            )
        )
    return Comparison(changes, sign_test(better, worse), alpha)


def render_comparison(comparison: Comparison) -> str:
    lines = []
    for change in comparison.changes:
        if change.direction == "same":
            continue
        significant = change.p_value < comparison.alpha
        lines.append(
            f"{change.direction.upper() if significant else change.direction}: "
            f"{change.case}: {change.before[0]}/{change.before[1]} -> "
            f"{change.after[0]}/{change.after[1]} (Fisher p = {change.p_value:.4f}"
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
