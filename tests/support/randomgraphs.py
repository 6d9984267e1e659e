"""Agents with random graphs and scripted answers, made the same way in every process
that imports this module (each from its seed): for the test that runs each both with
`actors.testing.run_job` and under real processes, and compares where they end.

A graph has 2 to 4 states a model decides, a chain between them so that each is
reached, random edges among them and to two ends (`ok`, `bad`) and perhaps a state for
a person; some edges call a tool (`echo`), some of those a verifier that passes even
numbers (`even`). Every state's safe edge goes to `bad`. The model's answers are a
table of (state, visit, attempt): an edge with arguments, an edge with arguments that do
not fit, an edge that does not exist, or prose.

Some edges of the graphs (drawn from a generator of their own, so the graphs above stay
as they were) start child jobs instead: of one of two leaf agents (`random-leaf-0`,
`-1`, random graphs of the same kind without a person or children of their own), or of
both at once (a fan-out).

Some tool edges (a third generator) offer a set of tools instead, the model picking
one (`echo-tools.*`, or `echo` and `mark`), and some states let the model look up
first (`twice`, `echo`; `mark` has side effects, which no lookup may call): the script
says which lookups each visit makes, some more than the state allows.
"""

from __future__ import annotations

import json
import random
from typing import Any

from pydantic import BaseModel

from actors import Agent, RoutePrompt, RuleLLM, ToolExecutor, Verifier, tool, verifier
from actors.models.llm import Text
from protocols import LOOKUP, Edge, Graph, State, VerifyRequest

SEEDS = range(12)


class EchoArgs(BaseModel):
    n: int


def spec(seed: int, *, leaf: bool = False) -> dict[str, Any]:
    """A random graph and the model's answers in it, as plain data (`leaf`: no person,
    no children)."""
    rng = random.Random(seed)
    deciders = [f"s{i}" for i in range(rng.randint(2, 4))]
    person = rng.random() < 0.4 and not leaf
    targets = [*deciders, "ok", "bad", *(["person"] if person else [])]
    states: dict[str, list[dict[str, Any]]] = {}
    for i, name in enumerate(deciders):
        nxt = deciders[i + 1] if i + 1 < len(deciders) else "ok"
        edges = [{"name": "next", "to": nxt}]
        for j in range(rng.randint(0, 2)):
            edges.append({"name": f"e{j}", "to": rng.choice(targets)})
        if person and i == 0:
            edges.append({"name": "ask", "to": "person"})
        for edge in edges:
            if rng.random() < 0.4:
                edge["tool"] = "echo"
                if rng.random() < 0.5:
                    edge["verifier"] = "even"
                    edge["on_fail"] = rng.choice(targets)
        edges.append({"name": "out", "to": "bad"})
        states[name] = edges
    script: dict[str, list[list[Any]]] = {}
    for name, edges in states.items():
        script[name] = [[_answer(rng, edges) for _attempt in range(2)] for _visit in range(4)]
    if not leaf:
        _add_children(random.Random(seed + 1000), states)
    looks = _add_tool_sets(random.Random(seed + 2000), states, script)
    return {
        "deciders": deciders,
        "person": person,
        "states": states,
        "script": script,
        "looks": looks,
    }


def _add_tool_sets(
    rng: random.Random, states: dict[str, list[dict[str, Any]]], script: dict[str, Any]
) -> dict[str, Any]:
    """Make some tool edges offer a set of tools (and the script's answers on them pick
    one, not always one the set has), and give some states lookups (how many each visit
    asks for, and of which tool); return the lookups."""
    looks: dict[str, Any] = {}
    for name, edges in states.items():
        sets = {}
        for edge in edges:
            if edge.get("tool") == "echo" and rng.random() < 0.4:
                del edge["tool"]
                edge["tools"] = ["echo-tools.*"] if rng.random() < 0.5 else ["echo", "mark"]
                sets[edge["name"]] = edge["tools"]
        for visit in script[name]:
            for i, answer in enumerate(visit):
                if isinstance(answer, list) and answer[0] in sets:
                    pick = rng.choice(["echo", "mark", "twice"])
                    visit[i] = [answer[0], {"tool": pick, "args": answer[1]}]
        if rng.random() < 0.5:
            plan = [[rng.choice(["echo", "twice", "mark"]) for _ in range(rng.randint(0, 3))]]
            looks[name] = {"max": rng.randint(1, 2), "plan": plan * 4}
    return looks


LEAVES = ("random-leaf-0", "random-leaf-1")


def _add_children(rng: random.Random, states: dict[str, list[dict[str, Any]]]) -> None:
    """Make some edges start child jobs: of one leaf agent, or of both (a fan-out)."""
    for edges in states.values():
        for edge in edges:
            if edge["name"] == "out" or rng.random() > 0.3:
                continue
            edge.pop("tool", None)
            if rng.random() < 0.5:
                edge["agent"] = rng.choice(LEAVES)
            else:
                edge["agents"] = list(LEAVES)


def _answer(rng: random.Random, edges: list[dict[str, Any]]) -> Any:
    roll = rng.random()
    edge = rng.choice([e for e in edges if e["name"] != "out"])  # the model's own choice
    if roll < 0.75:
        return [edge["name"], {"n": rng.randint(0, 9)} if "tool" in edge else {}]
    if roll < 0.85:
        return [edge["name"], {"n": "many"}] if "tool" in edge else ["nowhere", {}]
    if roll < 0.92:
        return ["nowhere", {}]
    return {"text": "I would rather explain myself at length."}


def graph_of(data: dict[str, Any]) -> Graph:
    states: dict[str, State] = {}
    for name, edges in data["states"].items():
        states[name] = State(
            description=f"state {name}",
            edges=tuple(
                Edge(
                    name=e["name"],
                    to=e["to"],
                    tool=e.get("tool"),
                    tools=tuple(e.get("tools", ())),
                    agent=e.get("agent"),
                    agents=tuple(e.get("agents", ())),
                    verifier=e.get("verifier"),
                    on_fail=e.get("on_fail"),
                    args=EchoArgs if "tool" in e else None,
                )
                for e in edges
            ),
            safe_edge="out",
            lookup=("echo-tools.*",) if name in data["looks"] else (),
            max_lookups=data["looks"].get(name, {}).get("max", 3),
        )
    states["ok"] = State(terminal="succeeded")
    states["bad"] = State(terminal="failed")
    if data["person"]:
        states["person"] = State(
            human=True, edges=(Edge(name="fine", to="ok"), Edge(name="no", to="bad"))
        )
    return Graph(initial=data["deciders"][0], states=states)


def _route(data: dict[str, Any]) -> Any:
    def route(prompt: RoutePrompt) -> Any:
        visit = prompt.context.path.count(prompt.state) - 1
        look = data["looks"].get(prompt.state)
        if look is not None and not prompt.feedback and visit < len(look["plan"]):
            made = 0  # the lookups of this visit so far: the latest decisions, here
            for note in reversed(prompt.context.decisions):
                if note["edge"] != LOOKUP or note["state"] != prompt.state:
                    break
                made += 1
            if made < len(look["plan"][visit]):
                return LOOKUP, {"tool": look["plan"][visit][made], "args": {"n": made}}
        answers = data["script"][prompt.state]
        if visit >= len(answers):
            return "out"
        answer = answers[visit][min(len(prompt.feedback), 1)]
        if isinstance(answer, dict):
            return Text(answer["text"])
        return answer[0], answer[1]

    return route


def _agent(seed: int, *, leaf: int | None = None) -> type[Agent]:
    data = spec(seed, leaf=leaf is not None)
    return type(
        f"Random{seed}" if leaf is None else f"RandomLeaf{leaf}",
        (Agent,),
        {
            "__module__": __name__,
            "__doc__": f"A random graph (seed {seed}): {json.dumps(data['states'])[:80]}",
            "name": f"random-{seed}" if leaf is None else LEAVES[leaf],
            "graph": graph_of(data),
            "llm": RuleLLM(_route(data)),
            "max_steps": 8,
        },
    )


AGENTS: dict[int, type[Agent]] = {seed: _agent(seed) for seed in SEEDS}
LEAF_AGENTS = [_agent(100 + i, leaf=i) for i in range(len(LEAVES))]
for _cls in [*AGENTS.values(), *LEAF_AGENTS]:
    globals()[_cls.__name__] = _cls  # `rig actor run tests.support.randomgraphs:Random3`


class EchoTools(ToolExecutor):
    name = "echo-tools"

    @tool(side_effects=False)
    async def echo(self, n: int) -> dict[str, int]:
        return {"n": n}

    @tool(side_effects=False)
    async def twice(self, n: int) -> dict[str, int]:
        return {"n": 2 * n}

    @tool
    async def mark(self, n: int) -> dict[str, int]:
        return {"n": n, "marked": 1}


class EvenChecks(Verifier):
    name = "even-checks"

    @verifier
    async def even(self, request: VerifyRequest) -> tuple[bool, str]:
        n = request.result["n"]
        return n % 2 == 0, f"{n} is {'even' if n % 2 == 0 else 'odd'}"
