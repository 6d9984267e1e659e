"""`rig new agent|tool|verifier NAME`: a module to start from, with a test that passes.

Each module is small and complete: an agent's graph with a tool, a verifier and a person
in it; a tool with the arguments that identify its effect (`key=`) and a `reconcile` that
finds an effect made before a crash; a verifier with a reason for each verdict. The test
beside it uses `actors.testing` and passes as written; both pass ruff and mypy.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path

from protocols import InvalidNameError, check_token

KINDS = ("agent", "tool", "verifier")
# A name becomes a module, classes, a tool and a check: longer ones would not fit the
# generated code's lines.
MAX_NAME = 24


@dataclass(frozen=True)
class Scaffold:
    """What `rig new` writes: file names and their text."""

    files: dict[str, str]
    next_steps: list[str]


def scaffold(kind: str, name: str) -> Scaffold:
    """The files for a new `kind` called `name` (a subject token that is also a module
    name once `-` becomes `_`)."""
    check_token(name, what=f"{kind} name")
    if len(name) > MAX_NAME:
        raise InvalidNameError(
            f"{kind} name {name!r} is {len(name)} characters; keep it to {MAX_NAME} (it names "
            "a module, classes and subjects)"
        )
    module = name.replace("-", "_")
    if not module.isidentifier() or keyword.iskeyword(module) or not module[0].isalpha():
        raise InvalidNameError(
            f"{kind} name {name!r} must start with a letter and hold only letters, digits, "
            "- and _ (it names the Python module too)"
        )
    camel = "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", module) if part)
    fill = {"name": name, "module": module, "Camel": camel}
    if kind == "agent":
        files = {
            f"{module}.py": _AGENT.format(**fill),
            f"test_{module}.py": _AGENT_TEST.format(**fill),
            f"{module}.toml": _UP_CONFIG.format(**fill),
        }
        steps = [
            f"pytest test_{module}.py",
            f"rig up --config {module}.toml",
            f'rig submit {name} --input \'{{"text": "hello"}}\' --wait',
        ]
    elif kind == "tool":
        files = {
            f"{module}.py": _TOOL.format(**fill),
            f"test_{module}.py": _TOOL_TEST.format(**fill),
        }
        steps = [f"pytest test_{module}.py", f"name tool {module!r} on an edge of your agent"]
    else:
        files = {
            f"{module}.py": _VERIFIER.format(**fill),
            f"test_{module}.py": _VERIFIER_TEST.format(**fill),
        }
        steps = [f"pytest test_{module}.py", f"name verifier {module!r} on an edge of your agent"]
    return Scaffold(files, steps)


def write(made: Scaffold, where: Path, *, force: bool = False) -> list[Path]:
    """Write the files into `where`; refuse to overwrite one unless `force`."""
    paths = [where / name for name in made.files]
    existing = [str(path) for path in paths if path.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} "
            "(--force overwrites)"
        )
    where.mkdir(parents=True, exist_ok=True)
    for path in paths:
        path.write_text(made.files[path.name])
    return paths


_AGENT = '''\
"""The agent {name}: it records a request, checks the record, and asks a
person when there is nothing to record. Written by `rig new agent`; make it yours.

    start --record--> done
      '---escalate--> human --record--> done
                         '---close---> closed

Edge `record` calls the tool of {Camel}Tools; {Camel}Checks checks
what it returned.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from actors import Agent, RoutePrompt, RuleLLM, ToolExecutor, Verifier, tool, tool_context, verifier
from protocols import Edge, Graph, State, VerifyRequest
from pydantic import BaseModel, Field

RECORDS = "{module}-records"  # under $RIG_HOME: where the tool writes


class RecordArgs(BaseModel):
    """What the model must give to record a request: validated before any tool runs."""

    text: str = Field(min_length=1, max_length=2000)


def route(prompt: RoutePrompt) -> str | tuple[str, dict[str, Any]]:
    """Stands in for a model until you configure one for this agent (RIG_LLM_CONFIG)."""
    text = prompt.context.input.get("text")
    return ("record", {{"text": text}}) if isinstance(text, str) and text else "escalate"


class {Camel}Agent(Agent):
    """Records a request and checks the record."""

    name = "{name}"
    graph = Graph(
        initial="start",
        states={{
            "start": State(
                description="A request came in. Record it if it says something.",
                edges=(
                    Edge(
                        name="record",
                        to="done",
                        tool="record_{module}",
                        verifier="{module}_recorded",
                        args=RecordArgs,
                        description="Record the request's text.",
                    ),
                    Edge(name="escalate", to="human", description="Unclear: ask a person."),
                ),
                safe_edge="escalate",  # where an answer that is no edge goes
            ),
            "human": State(
                human=True,
                description="A person decides.",
                edges=(
                    Edge(
                        name="record",
                        to="done",
                        tool="record_{module}",
                        args=RecordArgs,
                    ),
                    Edge(name="close", to="closed", description="Nothing to do."),
                ),
            ),
            "done": State(terminal="succeeded", description="Recorded and checked."),
            "closed": State(terminal="failed", description="Closed without a record."),
        }},
    )
    example_input = {{"text": "hello"}}  # an input that runs it to `succeeded`
    llm = RuleLLM(route)


class {Camel}Tools(ToolExecutor):
    """The side effect: a record in a file under $RIG_HOME, once per job and text."""

    name = "{name}-tools"

    # `key`: the arguments that identify the effect. A second call with them (a
    # redelivery, a crash and restart) gets the first call's result from the ledger.
    @tool(side_effects=True, timeout=10.0, key=("text",), reconcile="find_record")
    async def record_{module}(self, text: str) -> dict[str, Any]:
        call = tool_context()
        record = {{"job_id": call.job_id, "text": text, "key": call.key}}
        # A real service would get `call.key` as its Idempotency-Key; here the file's
        # name is the key, so a repeat writes the same record again.
        path = self.config.home / RECORDS / f"{{call.key}}.json"
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(path.write_text, json.dumps(record))
        return record

    async def find_record(self, text: str) -> dict[str, Any] | None:
        """After a crash mid-call: was the record made? (None: no; run it again.)"""
        path = self.config.home / RECORDS / f"{{tool_context().key}}.json"
        if not await asyncio.to_thread(path.exists):
            return None
        found: dict[str, Any] = json.loads(await asyncio.to_thread(path.read_text))
        return found


class {Camel}Checks(Verifier):
    """Checks the record holds what was asked."""

    name = "{name}-checks"

    @verifier
    async def {module}_recorded(self, request: VerifyRequest) -> tuple[bool, str]:
        same = request.result.get("text") == request.args.get("text")
        return same, "the record holds the request" if same else "the record differs"
'''

_AGENT_TEST = '''\
"""Tests of the agent in {module}.py. The first three run a whole job in this
process, with no server (actors.testing); the last runs one as processes on
a real nats-server (the `rig` fixture of Rig's pytest plugin).
"""

from __future__ import annotations

import pytest
from actors.testing import Deployment, ScriptedLLM, Text, assert_path, run_job

from {module} import (
    {Camel}Agent,
    {Camel}Checks,
    {Camel}Tools,
)

pytestmark = pytest.mark.asyncio
TOOLS, CHECKS = [{Camel}Tools], [{Camel}Checks]


async def test_a_request_is_recorded_and_checked() -> None:
    run = await run_job(
        {Camel}Agent,
        {{"text": "hello"}},
        tools=TOOLS,
        verifiers=CHECKS,
    )
    assert_path(run, ["start", "done"])
    assert run.status == "succeeded"
    [verdict] = run.events("verdict")
    assert verdict.data["passed"]


async def test_an_empty_request_goes_to_a_person_who_closes_it() -> None:
    run = await run_job(
        {Camel}Agent,
        {{"text": ""}},
        tools=TOOLS,
        verifiers=CHECKS,
    )
    assert run.status == "waiting_human"
    await run.resolve("close", note="nothing to record")
    assert_path(run, ["start", "human", "closed"])


async def test_a_model_that_answers_badly_takes_the_safe_edge() -> None:
    model = ScriptedLLM([Text("I am not sure"), "shrug"])
    run = await run_job(
        {Camel}Agent,
        {{"text": "hello"}},
        llm=model,
        tools=TOOLS,
        verifiers=CHECKS,
    )
    assert_path(run, ["start", "human"])
    [decision] = run.events("decision")
    assert decision.data["fallback"]


async def test_it_runs_as_processes_on_a_real_server(rig: Deployment) -> None:
    # `rig up` with these classes and a supervisor, each a process of its own.
    await rig.up({Camel}Agent, {Camel}Tools, {Camel}Checks)
    job = await rig.client.submit("{name}", {{"text": "hello"}})
    info = await rig.client.wait(job.job_id, timeout=60)
    assert info.status == "succeeded"
    assert_path(await rig.client.journal(job.job_id), ["start", "done"])
'''

_UP_CONFIG = """\
# `rig up --config {module}.toml`: a supervisor and the actors of agent {name}.
[[actor]]
class = "actors:Supervisor"

[[actor]]
class = "{module}:{Camel}Agent"

[[actor]]
class = "{module}:{Camel}Tools"

[[actor]]
class = "{module}:{Camel}Checks"
"""

_TOOL = '''\
"""A tool executor, written by `rig new tool`: one tool, named as the module.
Name it on an agent's edge (`Edge(..., tool=...)`) and run this class beside it.
"""

from __future__ import annotations

from typing import Any

from actors import ToolExecutor, tool, tool_context


class {Camel}Tools(ToolExecutor):
    name = "{name}-tools"

    # side_effects=True: a call whose outcome is unknown (a crash mid-call) is never run
    # again blindly. `key`: the arguments that identify the effect.
    @tool(side_effects=True, timeout=30.0, key=("subject",))
    async def {module}(self, subject: str, detail: str = "") -> dict[str, Any]:
        call = tool_context()
        # Pass `call.key` to the service you call as its Idempotency-Key.
        return {{"subject": subject, "detail": detail, "key": call.key, "job_id": call.job_id}}
'''

_TOOL_TEST = '''\
"""Tests of the tool in {module}.py: each call goes through the idempotency
ledger, as under `rig up` (actors.testing)."""

from __future__ import annotations

import pytest
from actors.testing import call_tool

from {module} import {Camel}Tools

pytestmark = pytest.mark.asyncio


async def test_a_call_returns_its_result() -> None:
    result = await call_tool(
        {Camel}Tools,
        "{module}",
        {{"subject": "s-1"}},
    )
    assert result.ok and result.result["subject"] == "s-1"
    assert result.ledger == "miss"  # it ran


async def test_arguments_that_do_not_fit_are_refused_before_it_runs() -> None:
    result = await call_tool(
        {Camel}Tools,
        "{module}",
        {{"subject": 7, "extra": True}},
    )
    assert not result.ok and result.error is not None
    assert result.error["code"] == "invalid_args"
'''

_VERIFIER = '''\
"""A verifier, written by `rig new verifier`: one check, named as the module.
Name it on an agent's edge (`Edge(..., tool=..., verifier=...)`): it sees what the
tool returned before the job moves on.
"""

from __future__ import annotations

from actors import Verifier, verifier
from protocols import VerifyRequest


class {Camel}Checks(Verifier):
    name = "{name}-checks"

    @verifier(timeout=10.0)
    async def {module}(self, request: VerifyRequest) -> tuple[bool, str]:
        if not isinstance(request.result, dict):
            return False, f"the tool returned {{type(request.result).__name__}}, not an object"
        missing = [key for key in request.args if key not in request.result]
        if missing:
            return False, f"the result lacks {{', '.join(missing)}}"
        return True, "the result answers every argument"
'''

_VERIFIER_TEST = '''\
"""Tests of the check in {module}.py: a tool's arguments and result in, a
verdict out (actors.testing)."""

from __future__ import annotations

import pytest
from actors.testing import run_check

from {module} import {Camel}Checks

pytestmark = pytest.mark.asyncio


async def test_a_result_that_answers_passes() -> None:
    verdict = await run_check(
        {Camel}Checks,
        "{module}",
        args={{"a": 1}},
        result={{"a": 1}},
    )
    assert verdict.passed, verdict.reason


async def test_a_result_that_lacks_an_argument_fails_saying_which() -> None:
    verdict = await run_check(
        {Camel}Checks,
        "{module}",
        args={{"a": 1, "b": 2}},
        result={{"a": 1}},
    )
    assert not verdict.passed and verdict.reason == "the result lacks b"
'''
