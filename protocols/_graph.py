"""An agent's finite-state machine: states, the edges the LLM may pick, and their checks.

The LLM routes, the runtime acts: in each state the LLM picks one of the state's
edges and nothing else. An edge may name a tool to call (with the arguments the LLM
gives), or another agent to start a child job of (the arguments are its input), and a
verifier that checks the result. The runtime then moves the job to the edge's target,
or, when the tool or the child fails or the verifier rejects the result, to the edge's
`on_fail` state (by default where the state's safe edge goes). An edge may also be the
agent's answer (`output=`): the arguments the LLM gives are the job's output.

    Graph(
        initial="triage",
        states={
            "triage": State(
                edges=[Edge(name="lookup", to="review", tool="lookup_order"),
                       Edge(name="escalate", to="human")],
                safe_edge="escalate",          # taken when the LLM's answer is invalid
            ),
            ...
            "human": State(human=True),        # parks the job for a person
            "done": State(terminal="succeeded"),
        },
    )

A graph is checked when it is built; a broken one raises `GraphError` naming the
state and the problem, so an agent class with a bad graph fails when it loads.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from protocols._errors import GraphError, InvalidNameError
from protocols._names import check_agent_name, check_token

TerminalStatus = Literal["succeeded", "failed"]

LOOKUP = "_lookup"
"""What a decision names as its edge to make a lookup (`State.lookup`): a read-only tool
call, after which the job is back in the same state."""


def check_tool_set(entries: tuple[str, ...]) -> None:
    """Each entry of a set of tools is a tool's name or `<executor>.*`."""
    for entry in entries:
        check_token(entry.removesuffix(".*"), what="tool (or `<executor>.*`)")
    if len(set(entries)) != len(entries):
        raise InvalidNameError(f"a set of tools names one twice: {list(entries)}")


class Edge(BaseModel):
    """One choice the LLM may make in a state."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    name: str
    to: str
    description: str = ""
    tool: str | None = None
    agent: str | None = Field(
        default=None,
        description="another agent: taking the edge starts a child job of it, with the "
        "edge's arguments as its input, and the child's result is the edge's result",
    )
    agents: tuple[str, ...] = Field(
        default=(),
        description="several agents: a child job of each, every one with the edge's "
        "arguments as its input (fan-out); the edge's result lists their ends in order",
    )
    map: str | None = Field(
        default=None,
        description="with `agent`: the argument holding a list, one child job per item "
        "(each item, an object, is that child's input)",
    )
    at_once: int | None = Field(
        default=None, ge=1, description="how many of a fan-out's children run at once"
    )
    join: Literal["all", "first"] = Field(
        default="all",
        description="when a fan-out's edge is done: `all` children ended (it succeeds if "
        "every one did), or the `first` to succeed (the rest are cancelled)",
    )
    tools: tuple[str, ...] = Field(
        default=(),
        description="a set of tools: the LLM picks one of them and its arguments, and the "
        "edge calls it; an entry is a tool's name or `<executor>.*`, every tool that "
        "executor serves (`ToolExecutor.all`)",
    )
    verifier: str | None = None
    on_fail: str | None = Field(
        default=None,
        description="state to go to when the tool or the child fails or the verifier "
        "rejects (default: where the state's safe edge goes)",
    )
    args: dict[str, Any] | None = Field(
        default=None,
        description="JSON schema of the arguments the LLM must give; pass a pydantic "
        "model class and the agent also validates the LLM's arguments with it",
    )
    consequential: bool = Field(
        default=False,
        description="taking it acts on the world (moves money, sends, deletes): "
        "`rig graph --lint` wants a verifier on it, or a person, between it and any "
        "untrusted tool output",
    )
    output: bool = Field(
        default=False,
        description="the arguments the LLM gives are the agent's answer: the job's result "
        "carries them as `output` (a verifier on the edge checks them first)",
    )
    _args_model: type[BaseModel] | None = PrivateAttr(default=None)

    if TYPE_CHECKING:  # what a user writes: every keyword typed, `args` a model class

        def __init__(
            self,
            *,
            name: str,
            to: str,
            description: str = "",
            tool: str | None = None,
            tools: tuple[str, ...] | list[str] = (),
            agent: str | None = None,
            agents: tuple[str, ...] | list[str] = (),
            map: str | None = None,
            at_once: int | None = None,
            join: Literal["all", "first"] = "all",
            verifier: str | None = None,
            on_fail: str | None = None,
            args: type[BaseModel] | None = None,
            consequential: bool = False,
            output: type[BaseModel] | None = None,
        ) -> None: ...

    else:

        def __init__(self, **data: Any) -> None:
            # Also how pydantic builds an edge it decodes: `args` is then the schema alone,
            # and `output` a flag. A user's `output=Model` is the arguments' model, flagged.
            output = data.get("output")
            if output is not None and not isinstance(output, bool):
                if data.get("args") is not None:
                    raise TypeError(
                        f"edge {data.get('name')!r}: give output= or args=, not both (the "
                        "output is the arguments the LLM fills)"
                    )
                data["args"], data["output"] = output, True
            model = data.get("args")
            if isinstance(model, BaseModel) or (
                isinstance(model, type) and not issubclass(model, BaseModel)
            ):
                raise TypeError(
                    f"edge {data.get('name')!r}: args= takes a pydantic model class (the "
                    f"arguments the LLM must give), not {model!r}"
                )
            if isinstance(model, type):
                data["args"] = model.model_json_schema()
            super().__init__(**data)
            if isinstance(model, type):
                self._args_model = model

    @property
    def args_model(self) -> type[BaseModel] | None:
        """The pydantic model the edge was declared with, in the process that declared it."""
        return self._args_model

    @property
    def acts(self) -> bool:
        """Whether taking the edge can fail on the way (a tool, a child job, a verifier),
        and so has a failure path (`Graph.fail_target`)."""
        return bool(self.tool or self.tools or self.starts or self.verifier)

    @property
    def calls(self) -> bool:
        """Whether taking the edge calls a tool: its own, or one the LLM picks of `tools`."""
        return self.tool is not None or bool(self.tools)

    def offers(self, tool: str, executor: str | None) -> bool:
        """Whether `tool` (served by `executor`, if known) is one this edge may call."""
        if self.tool is not None:
            return tool == self.tool
        return tool in self.tools or (executor is not None and f"{executor}.*" in self.tools)

    @property
    def starts(self) -> tuple[str, ...]:
        """The agents whose child jobs taking the edge starts (one each; `map`: one
        child per item, all of `agent`)."""
        return (self.agent,) if self.agent is not None else self.agents

    @property
    def fans_out(self) -> bool:
        """Whether its result is a list of children's ends (`agents` or `map`), not one
        child's result."""
        return bool(self.agents) or self.map is not None


@dataclass(frozen=True)
class InjectionPath:
    """A way untrusted tool output can steer a consequential edge with no check: the
    result of `tool` (called by edge `source_edge`) is in the prompts of every state of
    `states` (the first is where the call was made), and in the last one the LLM may
    take `edge`, which is consequential and has no verifier."""

    tool: str
    source_edge: str
    states: tuple[str, ...]
    edge: str

    def __str__(self) -> str:
        return (
            f"{self.tool} (edge {self.source_edge}) -> {' -> '.join(self.states[1:])}: "
            f"edge {self.edge!r} is consequential, has no verifier, and no person stands "
            "between"
        )


class State(BaseModel):
    """A state of the job: terminal (ends it), human (parks it), waiting for a signal (a
    named message from outside), or decided by the LLM."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    description: str = ""
    edges: tuple[Edge, ...] = ()
    safe_edge: str | None = Field(
        default=None, description="edge taken when the LLM's answer is invalid after re-asks"
    )
    terminal: TerminalStatus | None = None
    human: bool = False
    wait_for: str | None = Field(
        default=None,
        description="the name of a signal the job waits for here instead of a decision; "
        "when it comes, the job takes `on_signal` with the signal's data as the arguments",
    )
    payload: dict[str, Any] | None = Field(
        default=None,
        description="JSON schema the signal's data must fit; pass a pydantic model class",
    )
    on_signal: str | None = Field(default=None, description="edge taken when the signal comes")
    timeout_s: float | None = Field(
        default=None, gt=0, description="seconds to wait for the signal before `on_timeout`"
    )
    on_timeout: str | None = Field(
        default=None, description="edge taken when no signal came within `timeout_s`"
    )
    lookup: tuple[str, ...] = Field(
        default=(),
        description="read-only tools the LLM may call to look around before it picks an "
        "edge (entries as in `Edge.tools`); each call is a step of its own, journaled",
    )
    max_lookups: int = Field(
        default=3, ge=1, description="lookups allowed per visit of the state, at most"
    )

    if TYPE_CHECKING:

        def __init__(
            self,
            *,
            description: str = "",
            edges: tuple[Edge, ...] | list[Edge] = (),
            safe_edge: str | None = None,
            terminal: TerminalStatus | None = None,
            human: bool = False,
            wait_for: str | None = None,
            payload: type[BaseModel] | None = None,
            on_signal: str | None = None,
            timeout_s: float | None = None,
            on_timeout: str | None = None,
            lookup: tuple[str, ...] | list[str] = (),
            max_lookups: int = 3,
        ) -> None: ...

    else:

        def __init__(self, **data: Any) -> None:
            model = data.get("payload")  # a model class, or (decoded) its schema
            if isinstance(model, type) and issubclass(model, BaseModel):
                data["payload"] = model.model_json_schema()
            super().__init__(**data)

    def edge(self, name: str) -> Edge | None:
        for edge in self.edges:
            if edge.name == name:
                return edge
        return None

    def lookup_edge(self, name: str) -> Edge | None:
        """The edge a lookup in this state (named `name`) takes: its tool is one of
        `lookup`, and it comes back here whether the call works or fails."""
        if not self.lookup:
            return None
        return Edge(name=LOOKUP, to=name, tools=self.lookup, on_fail=name)

    @property
    def decided_by_llm(self) -> bool:
        return self.terminal is None and not self.human and self.wait_for is None


class Graph(BaseModel):
    """A validated finite-state machine; see the module docstring for an example."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    initial: str
    states: dict[str, State]
    compact: str | None = Field(
        default=None,
        description="the summarising state: a turn of a thread whose earlier turns no "
        "longer fit the agent's `thread_tokens` starts here, and the arguments of the edge "
        "it takes become the thread's summary of its older turns (None: the oldest are "
        "dropped)",
    )

    @model_validator(mode="after")
    def _valid(self) -> Graph:
        self.check()
        return self

    def state(self, name: str) -> State:
        return self.states[name]

    def edge(self, state: str | None, name: str | None) -> Edge | None:
        """Edge `name` of `state`, or the state's lookup (`LOOKUP`); None if neither is."""
        found = self.states.get(state or "")
        if found is None or name is None:
            return None
        if name == LOOKUP:
            return found.lookup_edge(state or "")
        return found.edge(name)

    @cached_property
    def version(self) -> str:
        """The graph's identity: 12 hex digits of the hash of its canonical JSON.

        A job keeps the version it started with (see `migration_target`). What is left
        at its default is not hashed, so a field Rig adds later changes no version.
        """
        graph = self.model_dump(mode="json", exclude_defaults=True)
        plain = json.dumps(graph, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(plain.encode()).hexdigest()[:12]

    def migration_target(self, state: str, renamed: dict[str, str]) -> str | None:
        """The state of this graph a job in `state` of an older version moves to, if any.

        The rule: a state keeps its jobs if this graph has a state of the same name that
        an LLM decides, or names its new name in `renamed` (old name -> new name).
        """
        target = renamed.get(state, state)
        found = self.states.get(target)
        return target if found is not None and found.decided_by_llm else None

    def fail_target(self, state: str, edge: Edge) -> str:
        """Where a job goes when `edge`'s tool fails or its verifier rejects the result."""
        if edge.on_fail is not None:
            return edge.on_fail
        source = self.states[state]
        safe = source.edge(source.safe_edge) if source.safe_edge else None
        return safe.to if safe is not None else state

    def injection_paths(self, untrusted: set[str] | frozenset[str]) -> list[InjectionPath]:
        """Where untrusted text can steer a consequential edge unchecked.

        A result of a tool in `untrusted` (called by an edge, one of its `tools`, or a
        lookup) lands in every later prompt, so text in it can
        pick among the allowed edges and fill their arguments (prompt injection). For
        each edge that calls such a tool, every state the job can reach from its target
        without passing a person (a human state) is searched; a `consequential` edge
        there with no verifier is reported, with the shortest path to it. A verifier on
        the edge, or a human state on every path, breaks the chain (the "design patterns
        for securing LLM agents against prompt injection", Beurer-Kellner et al. 2025:
        untrusted data must not decide a consequential action unchecked).
        """
        found: list[InjectionPath] = []
        lookups = [
            (name, lookup)
            for name, state in self.states.items()
            if (lookup := state.lookup_edge(name)) is not None
        ]
        for source_state, source in [*self._edges(), *lookups]:
            tainted = [t for t in (source.tool, *source.tools) if t is not None and t in untrusted]
            if not tainted:
                continue
            paths: dict[str, list[str]] = {source.to: [source_state, source.to]}
            queue = deque([source.to])
            while queue:
                name = queue.popleft()
                state = self.states[name]
                if not state.decided_by_llm:
                    continue  # a person decides here, or the job ends
                for edge in state.edges:
                    if edge.consequential and edge.verifier is None:
                        found.append(
                            InjectionPath(
                                tool=tainted[0],
                                source_edge=source.name,
                                states=tuple(paths[name]),
                                edge=edge.name,
                            )
                        )
                    if edge.to not in paths:
                        paths[edge.to] = [*paths[name], edge.to]
                        queue.append(edge.to)
        return found

    def sub_agents(self) -> set[str]:
        """The agents this graph's edges start child jobs of."""
        return {agent for _, edge in self._edges() for agent in edge.starts}

    def _edges(self) -> list[tuple[str, Edge]]:
        return [(name, edge) for name, state in self.states.items() for edge in state.edges]

    def check(self) -> None:
        """Raise `GraphError` for the first problem found; return None for a sound graph."""
        if not self.states:
            raise GraphError("the graph has no states")
        for name in self.states:
            try:
                check_token(name, what="state name")
            except InvalidNameError as exc:
                raise GraphError(exc.message, state=name) from None
        if self.initial not in self.states:
            raise GraphError(f"initial state {self.initial!r} is not one of the states")
        for name, state in self.states.items():
            self._check_state(name, state)
        if not any(s.terminal for s in self.states.values()):
            raise GraphError("the graph has no terminal state, so no job could ever finish")
        self._check_compact()
        roots = [self.initial, *([self.compact] if self.compact else [])]
        reachable = set().union(*(self._reachable_from(root) for root in roots))
        unreachable = sorted(set(self.states) - reachable)
        if unreachable:
            raise GraphError(
                f"unreachable from the initial state {self.initial!r}", state=unreachable[0]
            )
        for name in self.states:
            if not self._can_finish(name):
                raise GraphError("no path from here reaches a terminal or human state", state=name)

    def _check_state(self, name: str, state: State) -> None:
        if state.terminal and state.human:
            raise GraphError("a state cannot be both terminal and human", state=name)
        if state.terminal and state.edges:
            raise GraphError("a terminal state cannot have edges", state=name)
        seen: set[str] = set()
        for edge in state.edges:
            if edge.name in seen:
                raise GraphError(f"edge {edge.name!r} appears twice", state=name)
            if edge.name == LOOKUP:
                raise GraphError(f"{LOOKUP!r} is the name of a lookup, not of an edge", state=name)
            seen.add(edge.name)
            try:
                check_token(edge.name, what="edge name")
                if edge.tool is not None:
                    check_token(edge.tool, what="tool name")
                check_tool_set(edge.tools)
                for agent in edge.starts:
                    check_agent_name(agent, what="sub-agent name")
                if edge.verifier is not None:
                    check_token(edge.verifier, what="verifier name")
            except InvalidNameError as exc:
                raise GraphError(exc.message, state=name) from None
            if edge.to not in self.states:
                raise GraphError(
                    f"edge {edge.name!r} goes to unknown state {edge.to!r}", state=name
                )
            self._check_children(name, edge)
            if edge.output and (edge.tool is not None or edge.starts):
                raise GraphError(
                    f"edge {edge.name!r} is an output edge and also calls "
                    f"{'tool ' + repr(edge.tool) if edge.tool else 'agents ' + repr(edge.starts)}"
                    ": the output is the arguments the LLM fills, which a call would consume",
                    state=name,
                )
            if edge.output and edge.args is None:
                raise GraphError(
                    f"edge {edge.name!r} is an output edge without a model: give output= "
                    "a pydantic model class (what the LLM fills)",
                    state=name,
                )
            if edge.on_fail is not None and edge.on_fail not in self.states:
                raise GraphError(
                    f"edge {edge.name!r} has on_fail to unknown state {edge.on_fail!r}", state=name
                )
        if state.decided_by_llm:
            if not state.edges:
                raise GraphError("a non-terminal state needs at least one edge", state=name)
            if state.safe_edge is None:
                raise GraphError(
                    "no safe_edge: the runtime needs an edge to take when the LLM's "
                    "answer stays invalid",
                    state=name,
                )
        if state.safe_edge is not None and state.edge(state.safe_edge) is None:
            raise GraphError(f"safe_edge {state.safe_edge!r} is not one of its edges", state=name)
        safe = state.edge(state.safe_edge or "")
        if safe is not None and safe.tools:
            raise GraphError(
                f"safe_edge {safe.name!r} offers a set of tools: taken when the LLM's "
                "answer is invalid, it would name none",
                state=name,
            )
        if state.lookup:
            try:
                check_tool_set(state.lookup)
            except InvalidNameError as exc:
                raise GraphError(exc.message, state=name) from None
            if not state.decided_by_llm:
                raise GraphError("lookup= needs a state the LLM decides", state=name)
        self._check_wait(name, state)

    def _check_compact(self) -> None:
        """The summarising state is one the LLM decides, with an edge whose arguments (a
        model) are the summary, and no edge that calls or starts anything."""
        if self.compact is None:
            return
        state = self.states.get(self.compact)
        if state is None:
            raise GraphError(f"compact names {self.compact!r}, which is not one of the states")
        if not state.decided_by_llm or state.lookup:
            raise GraphError(
                "the summarising state (compact=) is one the LLM decides, without lookups",
                state=self.compact,
            )
        if any(edge.calls or edge.starts or edge.output for edge in state.edges):
            raise GraphError(
                "the summarising state's edges call no tool, start no agent and are not "
                "output edges: their arguments are the thread's summary",
                state=self.compact,
            )
        if not any(edge.args is not None for edge in state.edges):
            raise GraphError(
                "the summarising state has no edge with args= (a pydantic model class): "
                "what the LLM fills there is the summary",
                state=self.compact,
            )

    @staticmethod
    def _check_wait(name: str, state: State) -> None:
        """A state that waits for a signal names it, the edge the signal takes, and, with
        a timeout, the edge its passing takes; only such a state has those."""
        if state.wait_for is None:
            if any(v is not None for v in (state.on_signal, state.timeout_s, state.on_timeout)):
                raise GraphError("on_signal, timeout_s and on_timeout need wait_for=", state=name)
            if state.payload is not None:
                raise GraphError("payload= needs wait_for=", state=name)
            return
        try:
            check_token(state.wait_for, what="signal name")
        except InvalidNameError as exc:
            raise GraphError(exc.message, state=name) from None
        if state.terminal or state.human:
            raise GraphError(
                "a state that waits for a signal is neither terminal nor human", state=name
            )
        for what, edge in (("on_signal", state.on_signal), ("on_timeout", state.on_timeout)):
            if edge is not None and state.edge(edge) is None:
                raise GraphError(f"{what} {edge!r} is not one of its edges", state=name)
        if state.on_signal is None:
            raise GraphError(
                f"waits for {state.wait_for!r} but names no on_signal edge", state=name
            )
        if (state.timeout_s is None) != (state.on_timeout is None):
            raise GraphError("timeout_s and on_timeout go together", state=name)

    @staticmethod
    def _check_children(name: str, edge: Edge) -> None:
        """An edge starts child jobs of one agent (`agent`, perhaps `map`ped over a list)
        or of several (`agents`), and calls no tool besides."""
        problem = ""
        if edge.tools and (edge.tool is not None or edge.starts or edge.output):
            problem = "offers tools= and also calls a tool, starts agents or is an output edge"
        elif edge.tools and edge.args is not None:
            problem = "offers tools= and args=: each tool's arguments are its own schema"
        elif edge.agent is not None and edge.agents:
            problem = "names agent= and agents=: give one agent, or a list"
        elif edge.tool is not None and edge.starts:
            problem = f"names tool {edge.tool!r} and agents: it calls a tool or starts children"
        elif edge.map is not None and edge.agent is None:
            problem = "has map= without agent=: map names the list whose items one agent takes"
        elif not edge.fans_out and (edge.at_once is not None or edge.join != "all"):
            problem = "has at_once= or join= but starts no fan-out (agents=, or agent= with map=)"
        elif len(set(edge.agents)) != len(edge.agents):
            problem = "lists an agent twice in agents="
        if problem:
            raise GraphError(f"edge {edge.name!r} {problem}", state=name)

    def to_mermaid(self, title: str = "") -> str:
        """The graph as a Mermaid state diagram.

        Edges read `name [tool] {verifier}`; `(safe)` marks a state's safe edge; a
        state's lookups are a loop back to it (`_lookup [tools] xN`);
        `<edge> fails` arrows show where a failed tool or a rejected result goes; human
        states are highlighted with the `human` class.
        """
        lines = ["stateDiagram-v2"]
        if title:
            lines.insert(0, f"---\ntitle: {title}\n---")
        lines.append(f"    [*] --> {self.initial}")
        for name, state in self.states.items():
            if state.description:
                lines.append(f"    {name} : {name} - {_one_line(state.description)}")
            for edge in state.edges:
                lines.append(f"    {name} --> {edge.to} : {_edge_label(state, edge)}")
            if state.lookup:
                lines.append(f"    {name} --> {name} : {_lookup_label(state)}")
            for edge in state.edges:
                if edge.acts:
                    lines.append(
                        f"    {name} --> {self.fail_target(name, edge)} : {edge.name} fails"
                    )
            if state.terminal:
                lines.append(f"    {name} --> [*] : {state.terminal}")
        humans = [name for name, state in self.states.items() if state.human]
        if humans:
            lines.append("    classDef human fill:#ffe9a8,stroke:#b8860b,stroke-width:2px")
            lines.append(f"    class {','.join(humans)} human")
        return "\n".join(lines) + "\n"

    def to_dot(self, title: str = "") -> str:
        """The graph in Graphviz DOT: human states are yellow boxes, terminal states double
        circles, safe edges bold, failure paths dashed."""
        lines = [f"digraph {_dot_id(title or 'agent')} {{", "    rankdir=LR;"]
        lines.append('    __start [shape=point, label=""];')
        lines.append(f"    __start -> {_dot_id(self.initial)};")
        for name, state in self.states.items():
            if state.terminal:
                attrs = f'shape=doublecircle, label="{name}\\n({state.terminal})"'
            elif state.human:
                attrs = (
                    'shape=box, style="rounded,filled", fillcolor="#ffe9a8", '
                    f'label="{name}\\n(human)"'
                )
            else:
                attrs = f'shape=ellipse, label="{name}"'
            lines.append(f"    {_dot_id(name)} [{attrs}];")
        for name, state in self.states.items():
            if state.lookup:
                label = _lookup_label(state)
                lines.append(
                    f'    {_dot_id(name)} -> {_dot_id(name)} [label="{label}", style=dotted];'
                )
            for edge in state.edges:
                style = ", style=bold" if edge.name == state.safe_edge else ""
                label = _edge_label(state, edge).replace('"', "'")
                lines.append(f'    {_dot_id(name)} -> {_dot_id(edge.to)} [label="{label}"{style}];')
                if edge.acts:
                    target = _dot_id(self.fail_target(name, edge))
                    label = f"{edge.name} fails"
                    lines.append(
                        f'    {_dot_id(name)} -> {target} [label="{label}", style=dashed];'
                    )
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _successors(self, name: str) -> set[str]:
        state = self.states[name]
        targets = {edge.to for edge in state.edges}
        targets |= {self.fail_target(name, e) for e in state.edges if e.acts}
        return targets

    def _reachable_from(self, start: str) -> set[str]:
        seen = {start}
        queue = deque([start])
        while queue:
            for nxt in self._successors(queue.popleft()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return seen

    def _can_finish(self, name: str) -> bool:
        return any(
            self.states[s].terminal or self.states[s].human for s in self._reachable_from(name)
        )


def _edge_label(state: State, edge: Edge) -> str:
    label = edge.name
    if edge.tool:
        label += f" [{edge.tool}]"
    if edge.tools:
        label += f" [{', '.join(edge.tools)}]"
    if edge.starts:
        label += f" <{','.join(edge.starts)}{'*' if edge.map else ''}>"
    if edge.verifier:
        label += f" {{{edge.verifier}}}"
    if edge.name == state.safe_edge:
        label += " (safe)"
    return label


def _lookup_label(state: State) -> str:
    return f"{LOOKUP} [{', '.join(state.lookup)}] x{state.max_lookups}"


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace(":", " -")


def _dot_id(name: str) -> str:
    return '"' + name.replace('"', "'") + '"'
