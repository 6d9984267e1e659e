"""The agent actor: asks the LLM which edge of the current state to take, and reports it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
import traceback
import uuid
from functools import partial
from typing import Any, ClassVar, Literal

import nats.errors
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from actors.models.breaker import BreakerPolicy, Breakers
from actors.models.config import AgentLLMConfig, load_llm_config
from actors.models.dialects import OpenAICompatible, Provider, route_schema
from actors.models.limits import SharedLimits
from actors.models.llm import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    LLM,
    InvalidAnswer,
    RoutePrompt,
    estimate,
    parse_answer,
)
from actors.models.probe import check_at_start, pattern_problems, probe_request, probe_schemas
from actors.models.router import ModelRouter, ProvidersFailed, ResponseCache, RetryPolicy
from actors.models.toolsets import Offered, offer, pick
from actors.runtime import tracing as tracing
from actors.runtime.actor import Actor, Delivery, Inbox
from actors.runtime.faults import crash_point
from actors.runtime.metrics import STEP_SECONDS, child, observe_calls
from actors.runtime.nats import keep_beating
from actors.runtime.results import resolved_context
from actors.tools.catalog import Catalog
from actors.tools.memory import KvMemory, MemoryStore, read_memory
from protocols import (
    ANSWER_MAX_CHARS,
    DEFAULT_MAX_STEPS,
    LOOKUP,
    AgentInfo,
    Budget,
    ConfigError,
    Decision,
    ExhaustedKind,
    Flow,
    Graph,
    GraphError,
    Header,
    JobContext,
    Memory,
    Names,
    NonRetryableError,
    RetryableError,
    State,
    StepRequest,
    Usage,
    _permissions as permissions,
    encode,
    explain,
    model_count,
    msg_id,
    presence_key,
)
from protocols._names import check_agent_name
from protocols._permissions import Role

# A step whose every provider failed comes back later: after 2 s, then twice as long each
# time up to a minute (about five minutes over the ten deliveries); on its last delivery
# it takes the safe edge rather than be dead-lettered.
_OUTAGE_RETRY_S = 2.0
_OUTAGE_RETRY_MAX_S = 60.0
# The start-up check of a provider waits no longer than this (or the call timeout) for
# an answer: a provider that is down delays an agent's start by this much, not more.
_PROBE_TIMEOUT_S = 10.0


class Agent(Actor):
    """An engineer-defined state machine whose edges an LLM picks.

    To write your own: subclass, give it a `name`, a `graph`, an `llm` (any object with
    `async complete(prompt)`), and, if you like, an `example_input` that runs it to
    `succeeded`; then `rig actor run my_module:MyAgent`.

        class Greeter(Agent):
            name = "greeter"
            graph = Graph(initial="start", states={
                "start": State(edges=[Edge(name="greet", to="done", tool="greet")],
                               safe_edge="greet"),
                "done": State(terminal="succeeded"),
            })
            example_input = {"who": "world"}
            llm = RuleLLM(lambda prompt: ("greet", {"who": prompt.context.input["who"]}))

    Consumes `rig.work.agent.<name>` (durable `agent-<name>`): `StepRequest`.
    Publishes `Decision` on `rig.work.supervisor.agent.<name>.<partition>`, with `Nats-Msg-Id`
    `<job>:<step>:decision`, so a redelivered step reports once.
    On start it registers `AgentInfo` (graph, example input) in `RIG_AGENTS`, which is
    how the supervisor and `rig agents` learn about it.

    An answer that is not an edge of the state is re-asked `max_reasks` times with the
    error; then the state's safe edge is taken and the decision is marked `fallback`.
    `llm_timeout` bounds each LLM call (a configured model's retry policy lengthens it to
    what its attempts may take), and so does the job's deadline. A call that raises
    `RetryableError`, finds every configured provider down, or gets no answer in time is
    an outage, not a wrong answer: the step is tried again later (after 2 s, doubling to
    a minute), and takes the safe edge only on its last delivery.

    A bug in the agent's own code (its routing function, its LLM class) is not a bad
    answer: the traceback goes to the log at error level, the decision carries
    `code_error` (type and message), and the job goes to a person rather than down the
    safe edge as if a model had answered badly.

    A request that every configured provider refuses (a 4xx, or a 500 that is a
    validation error) is a configuration error, not an outage: it is logged at error
    level with the server's words (`llm.rejected`) and the job goes to a person
    (`config_error`). When it starts, the agent checks each configured provider
    (`actors.models.probe`) and refuses to start on one that rejects its dialect, or ignores
    the schema while the provider's `require_schema` holds.

    While it runs, each process refreshes its presence in `RIG_PRESENCE`, which is how
    `rig agents` and the supervisor tell a live agent from a registration left behind.

    Budgets: `max_steps`, `max_tokens`, `max_cost`, `deadline_s`, `max_visits`,
    `max_reasks` and `stall_s` are the defaults of each job (a submission may override them). Before
    each LLM call the agent reserves what the call may spend (`estimate` in
    `actors.models.llm`) from what the job has left; a call that does not fit is not made,
    and the job takes `on_exhausted` (a human or terminal state), or ends
    `budget_exceeded`.
    """

    kind = "agent"

    graph: ClassVar[Graph]
    # An input that runs it to `succeeded`: shown by `rig agents`, the default of
    # `actors.testing.run_job`. Optional.
    example_input: ClassVar[dict[str, Any] | None] = None
    # What a job's input must be: a pydantic model whose JSON schema every submission is
    # checked against (a `schema_error` for one that does not fit). Optional.
    input_model: ClassVar[type[BaseModel] | None] = None
    llm: ClassVar[LLM]
    description: ClassVar[str] = ""
    # The agent's own words to its model (who it is, its policy, its tone): sent after
    # Rig's system message, in the same one. `render_prompt` changes the rest.
    instructions: ClassVar[str] = ""
    max_steps: ClassVar[int] = DEFAULT_MAX_STEPS
    max_tokens: ClassVar[int | None] = None
    max_cost: ClassVar[float | None] = None
    deadline_s: ClassVar[float | None] = None
    max_visits: ClassVar[int | None] = None
    max_reasks: ClassVar[int] = 1
    on_exhausted: ClassVar[str | None] = None
    # A running job with no progress for this long is handed to a person: long enough for
    # an LLM step's outage retries (about five minutes) and a tool's lease.
    stall_s: ClassVar[float | None] = 900.0
    # What a stalled job, or one whose message was dead-lettered, does: "human" or "fail".
    on_stuck: ClassVar[Literal["human", "fail"]] = "human"
    max_output_tokens: ClassVar[int] = DEFAULT_MAX_OUTPUT_TOKENS
    llm_timeout: ClassVar[float] = 60.0
    # States renamed since an earlier version of the graph, old name -> new name, so that
    # jobs running in them move to this version (see docs/design/architecture.md, Graph versions).
    renamed: ClassVar[dict[str, str]] = {}
    # How many tokens of its thread's earlier turns a job's context carries (`--thread`).
    thread_tokens: ClassVar[int] = 2000
    # What it remembers across jobs (`protocols.Memory`): read into each step's context,
    # written by the memory tools (`actors.tools.memory`). None: nothing.
    memory: ClassVar[Memory | None] = None
    # How many of its jobs run at once per key (`protocols.Flow`: a field of the input, a
    # limit); the others wait in order. None: no limit but the backlog's.
    flow: ClassVar[Flow | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "graph"):
            return  # an intermediate base class
        check_agent_name(cls.name, what=f"{cls.__qualname__}.name")
        if not isinstance(cls.graph, Graph):
            raise GraphError(f"{cls.__qualname__}.graph must be a protocols.Graph")
        if not isinstance(cls.example_input, dict | None):
            raise TypeError(
                f"{cls.__qualname__}.example_input must be a dict (an input that runs the "
                f"agent to `succeeded`), or left out; not {cls.example_input!r}"
            )
        model = cls.input_model
        if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(
                f"{cls.__qualname__}.input_model must be a pydantic model class, not {model!r}"
            )
        if model is not None and cls.example_input is not None:
            try:
                model.model_validate(cls.example_input)
            except ValidationError as exc:
                raise TypeError(
                    f"{cls.__qualname__}.example_input does not fit its input_model: {explain(exc)}"
                ) from None
        fallback = cls.on_exhausted
        if fallback is not None:
            state = cls.graph.states.get(fallback)
            if state is None or state.decided_by_llm:
                raise GraphError(
                    f"{cls.__qualname__}.on_exhausted must name a human or terminal state",
                    state=fallback,
                )
        for old_name, new_name in cls.renamed.items():
            state = cls.graph.states.get(new_name)
            if state is None or not state.decided_by_llm:
                raise GraphError(
                    f"{cls.__qualname__}.renamed maps {old_name!r} to {new_name!r}, "
                    "which is not a state of the graph an LLM decides",
                    state=new_name,
                )
        cls.budget()  # the defaults must be valid limits

    @classmethod
    def budget(cls) -> Budget:
        """The limits of a job of this agent unless its submission overrides them."""
        return Budget(
            max_steps=cls.max_steps,
            max_tokens=cls.max_tokens,
            max_cost=cls.max_cost,
            deadline_s=cls.deadline_s,
            max_visits=cls.max_visits,
            max_reasks=cls.max_reasks,
            stall_s=cls.stall_s,
        )

    def info(self) -> AgentInfo:
        return AgentInfo(
            name=self.name,
            description=self.description or (type(self).__doc__ or "").strip().split("\n")[0],
            graph=self.graph,
            example_input=self.example_input,
            input_schema=self.input_model.model_json_schema() if self.input_model else None,
            budget=self.budget(),
            on_exhausted=self.on_exhausted,
            on_stuck=self.on_stuck,
            thread_tokens=self.thread_tokens,
            memory=self.memory,
            flow=self.flow,
            renamed=self.renamed,
        )

    def render_prompt(self, prompt: RoutePrompt) -> str:
        """The text the model reads for one routing question. Override it to say things
        your own way; `prompt.standard()` is Rig's (the state, its edges, the job's
        input and results, and what was wrong with an earlier answer), and
        `prompt.context` has the job. Whatever it says, the answer must still be one of
        `prompt.edges` (a schema-enforcing model is held to them)."""
        return prompt.standard()

    def create_llm(self) -> LLM:
        """The LLM this process routes with: the agent's section of the LLM config file
        (`RIG_LLM_CONFIG`) if it has one, else the class's `llm`.

        Override it to build the model in code; return `self.router(providers, ...)` to
        keep what a configured model has: the fallback chain under the retry policy,
        circuit breakers shared by every process of the agent, the response cache,
        providers' rate limits, and tokens streamed as they arrive."""
        path = self.config.llm_config
        configured = load_llm_config(path, self.name) if path is not None else None
        self._configured = configured
        if configured is not None:
            return self.router(
                configured.providers,
                policy=configured.policy,
                breaker=configured.breaker,
                cache_ttl=configured.cache_ttl,
                stream=configured.stream,
                temperature=configured.temperature,
            )
        try:
            return self.llm
        except AttributeError:
            raise TypeError(
                f"{type(self).__qualname__} has no llm: set one, or configure a model for "
                f"agent {self.name!r} in the file RIG_LLM_CONFIG names"
            ) from None

    def router(
        self,
        providers: list[Provider],
        *,
        policy: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        cache_ttl: float | None = None,
        stream: bool = False,
        temperature: float = 0.0,
    ) -> ModelRouter:
        """A `ModelRouter` over `providers` (tried in order) wired into this deployment:
        its breakers in the shared bucket (`breaker`: the default policy unless given),
        the response cache (`cache_ttl` seconds; None: no cache), each provider's rate
        limits shared by the agent's processes, and tokens published as they arrive
        (`stream`: the providers are asked to stream too). For `create_llm()` overrides;
        callable once the agent has started (`create_llm` is called then)."""
        kvs = getattr(self, "_kvs", None)
        if kvs is None:
            raise RuntimeError(
                f"{type(self).__qualname__}.router() needs a running agent (its breakers and "
                "cache live on the NATS server); in actors.testing give the job an llm= "
                "(a ScriptedLLM, say)"
            )
        owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stream = stream
        if stream:
            providers = [
                dataclasses.replace(p, stream=True) if isinstance(p, OpenAICompatible) else p
                for p in providers
            ]
        return ModelRouter(
            providers,
            policy or RetryPolicy(),
            breakers=Breakers(kvs[0], breaker or BreakerPolicy(), owner=owner),
            cache=(
                ResponseCache(kvs[1], ttl=cache_ttl, scope=self.name)
                if cache_ttl is not None
                else None
            ),
            shared=SharedLimits(kvs[0], owner=owner, js=self.js, names=self.names),
            temperature=temperature,
        )

    def _outage(self, delivery: Delivery, why: str, *, state: str) -> None:
        """The model did not answer: say so at error level (a provider is down; a person
        should know before any job reaches one), and try the step again later (raises
        `RetryableError`), unless this is its last delivery, when the caller takes the
        safe edge instead of letting the step be dead-lettered."""
        self.log.error(
            "llm.provider_down",
            state=state,
            error=why,
            attempt=delivery.attempt,
            last=delivery.attempt >= self.config.max_deliver - 1,
        )
        if delivery.attempt < self.config.max_deliver - 1:
            raise RetryableError(why, delay=_outage_delay(delivery.attempt))

    async def _publish_token(self, job_id: str, step: int, text: str) -> None:
        """Tokens as they arrive, on `rig.tokens.<job_id>` (core NATS: not stored), with
        the step they answer in the `Rig-Step` header."""
        await self.nc.publish(
            self.names.tokens(job_id), text.encode(), headers={Header.STEP: str(step)}
        )

    _stream = False  # publish tokens as they arrive (the LLM config's `stream`)

    @property
    def _renders(self) -> bool:
        """Whether the class renders its prompts itself."""
        return type(self).render_prompt is not Agent.render_prompt

    async def on_start(self) -> None:
        self._kvs = (
            await self.bucket(self.names.breakers_bucket),
            await self.bucket(self.names.llm_cache_bucket),
        )
        graphs = await self.bucket(self.names.graphs_bucket)
        agents = await self.bucket(self.names.agents_bucket)
        self._presence = await self.bucket(self.names.presence_bucket)
        self._llm = self.create_llm()
        await self._check_providers()
        info = encode(self.info())
        # This version first: a job started on it must always find its graph.
        key = f"{self.name}.{self.graph.version}"
        await self.patiently(lambda: graphs.put(key, info), doing="writing its graph")
        await self.patiently(lambda: agents.put(self.name, info), doing="registering")
        self.catalog = Catalog(self.js, self.names)
        self._instance = uuid.uuid4().hex[:12]
        await self.patiently(self._beat, doing="saying it is alive")
        self._heart = asyncio.create_task(keep_beating(self._beat, self.log))

    _configured: AgentLLMConfig | None = None
    # The tools sets of tools and lookups offer (`on_start` opens it; one process's
    # `LocalRig` gives its own).
    catalog: Catalog | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._model_counts: dict[str, int] = {}
        self._retrieves = type(self).retrieve is not Agent.retrieve  # a hook of its own
        self.memory_store: MemoryStore | None = None  # where `memory` is read (`KvMemory`)

    def stats(self) -> dict[str, int]:
        """The actor's counters, and per model provider (`llm|<provider>|<model>|<what>`):
        calls, the `failed` ones, and their milliseconds in all (`GET /v1/providers`)."""
        return {**self.counts, **self._model_counts}

    def _count_calls(self, calls: list[dict[str, Any]]) -> None:
        counts = self._model_counts
        for call in calls:
            if "provider" not in call or call.get("cache") == "hit" or "hedge" in call:
                continue
            for what, add in (
                ("calls", 1),
                ("failed", 0 if call.get("ok") else 1),
                ("ms", round(float(call.get("ms") or 0))),
            ):
                name = model_count(str(call["provider"]), str(call.get("model")), what)
                counts[name] = counts.get(name, 0) + add

    async def _check_providers(self) -> None:
        """Probe each configured provider once (`actors.models.probe`): refuse to start, with
        the probe's report, on one that rejects the configured dialect, or accepts it
        without enforcing the schema unless the config relies on re-asks."""
        configured = self._configured
        if configured is None:
            return
        for provider in configured.providers:
            if not configured.probe.get(provider.name, True) or not isinstance(
                provider, OpenAICompatible
            ):
                continue
            require = configured.require_schema.get(provider.name, True)
            router = self._llm
            within = (
                partial(router.limited, provider, probe_request())
                if isinstance(router, ModelRouter)
                else None
            )
            ok, report, why = await check_at_start(
                provider,
                require_schema=require,
                within=within,
                timeout=min(_PROBE_TIMEOUT_S, configured.policy.timeout),
                stream=configured.stream,
            )
            if not ok:
                self.log.error("llm.probe_failed", provider=provider.name, reason=why)
                raise ConfigError(
                    f"agent {self.name!r} will not start: provider {provider.name!r}: {why}\n"
                    f"{report.render()}",
                    provider=provider.name,
                )
            configured_shape = report.configured
            if configured_shape is not None and configured_shape.outcome != "unreachable":
                await self._check_schemas(provider, within, timeout=configured.policy.timeout)
            self.log.info("llm.probe", provider=provider.name, result=why)

    async def _check_schemas(
        self, provider: OpenAICompatible, within: Any, *, timeout: float
    ) -> None:
        """The agent's own routing schemas, as the provider will get them: refuse to start
        on a pattern the dialect's grammar cannot take (named, before the server sees it:
        it may crash on it), then on a schema the server refuses or dies of."""
        problems = [
            problem
            for name, state in self.graph.states.items()
            for edge in state.edges
            if edge.args is not None
            for problem in pattern_problems(
                f"edge {edge.name!r} of state {name!r}", edge.args, provider.dialect
            )
        ]
        schemas = {
            name: route_schema(RoutePrompt(self.name, name, "", state.edges, JobContext(input={})))
            for name, state in self.graph.states.items()
            if state.decided_by_llm
        }
        ok, why = not problems, "; ".join(problems)
        if ok and schemas:
            async with within() if within is not None else contextlib.nullcontext():
                ok, why = await probe_schemas(provider, schemas, timeout=timeout)
        if ok and why:
            self.log.info("llm.schemas", provider=provider.name, result=why)
        if not ok:
            self.log.error("llm.schema_refused", provider=provider.name, reason=why)
            raise ConfigError(
                f"agent {self.name!r} will not start: provider {provider.name!r} "
                f"(dialect {provider.dialect}): {why}",
                provider=provider.name,
            )

    async def on_stop(self) -> None:
        self._heart.cancel()
        with contextlib.suppress(BaseException):
            await self._heart
        with contextlib.suppress(Exception):
            await self._presence.delete(presence_key(self.name, self._instance))

    async def _beat(self) -> None:
        """Say this process is alive: its key expires unless refreshed."""
        seen = encode({"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()})
        await self._presence.put(presence_key(self.name, self._instance), seen)

    def _decides(self, request: StepRequest) -> tuple[str | None, str | None]:
        """The state of this process's graph that answers `request`, and the graph version
        to report if it is not the request's (None, None: this version cannot answer).

        The request's own version, or a state with the same edges, is decided as asked;
        a job of another version is moved by the migration rule to this one's state."""
        state = self.graph.states.get(request.state)
        if state is not None and state.decided_by_llm:
            same = request.graph_version in (None, self.graph.version) or request.edges is None
            if same or [edge.name for edge in state.edges] == request.edges:
                return request.state, None
        target = self.graph.migration_target(request.state, self.renamed)
        return (target, self.graph.version) if target is not None else (None, None)

    async def _tool_tables(self, state: State, lookups_left: int) -> Offered:
        """The tools the state's sets of tools offer now (by edge; `LOOKUP`: the read-only
        tools of its lookups, while any is left), from the catalog."""
        sets = [(edge.name, edge.tools) for edge in state.edges if edge.tools]
        if lookups_left > 0 and state.lookup:
            sets.append((LOOKUP, state.lookup))
        if not sets:
            return {}
        if self.catalog is None:
            raise RetryableError("the tool catalog is not open yet", delay=self.config.nak_delay)
        tables = {}
        for edge, entries in sets:
            tools = await self.catalog.tools(entries)
            if edge == LOOKUP:
                tools = {name: entry for name, entry in tools.items() if not entry.side_effects}
            tables[edge] = tools
            if not tools:
                self.log.warning("catalog.none_served", edge=edge, tools=list(entries))
        return tables

    @classmethod
    def role(cls, names: Names, graphs: list[Graph]) -> Role:
        role = permissions.agent(names, cls.name)
        if cls.memory is None:
            return role
        memory = permissions.kv_scan(names.memory_bucket)  # what it remembers, to read
        return role.plus(memory.publish, memory.subscribe)

    async def retrieve(self, prompt: RoutePrompt) -> list[dict[str, Any]]:
        """Items from an index of your own for this step (override it: a function of the
        prompt, whose context has the job's input, returning JSON objects). They go into
        `prompt.context.memory` after the remembered entries, and into the journal with
        the decision. Rig ships no index: this is where yours plugs in."""
        return []

    def inboxes(self) -> list[Inbox]:
        return [
            Inbox(
                durable=self.names.agent_durable(self.name),
                subject=self.names.agent(self.name),
                model=StepRequest,
                handler=self.on_step,
            )
        ]

    async def on_step(self, request: StepRequest, delivery: Delivery) -> None:
        if not tracing.enabled():
            await self._step(request, delivery)
            return
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.name,
            "rig.job.id": request.job_id,
            "rig.step": request.step,
            "rig.state": request.state,
        }
        with tracing.span(f"invoke_agent {self.name}", attributes=attributes):
            await self._step(request, delivery)

    async def _step(self, request: StepRequest, delivery: Delivery) -> None:
        if request.agent != self.name:
            raise NonRetryableError(
                f"agent {self.name!r} got a step of agent {request.agent!r}", agent=request.agent
            )
        name, version = self._decides(request)
        if name is None:
            # Another version of this agent, still running in a rolling deploy, may: give
            # the step back; after RIG_MAX_DELIVER tries it is dead-lettered to a person.
            raise RetryableError(
                f"agent {self.name!r} (graph {self.graph.version}) cannot decide state "
                f"{request.state!r} of graph version {request.graph_version}: this version "
                "has no state that the migration rule moves it to",
                delay=self.config.nak_delay,
            )
        state = self.graph.state(name)
        tables = await self._tool_tables(state, request.lookups_left)
        context = await resolved_context(self, request.context)
        if self.memory is not None and request.memory is not None:
            store = self.memory_store or KvMemory(self.js, self.names)
            self.memory_store = store
            context.memory = await read_memory(store, self.memory, request.memory)
        prompt = RoutePrompt(
            agent=self.name,
            state=name,
            description=state.description,
            edges=offer(state, name, tables, request.lookups_left) if tables else state.edges,
            context=context,
            max_output_tokens=self.max_output_tokens,
            deadline=request.deadline,
            job_id=request.job_id,
            seed=request.sampling.seed if request.sampling else None,
            cache=request.sampling.cache if request.sampling else True,
            on_token=(
                partial(self._publish_token, request.job_id, request.step) if self._stream else None
            ),
            instructions=self.instructions,
            renderer=self.render_prompt if self._renders else None,
        )
        if self._retrieves:
            found = [{"scope": "retrieved", **item} for item in await self.retrieve(prompt)]
            context.memory += found
        calls: list[dict[str, Any]] = []
        usage = Usage()
        problem, outage = "", False
        llm_ms = 0.0
        decision: Decision | None = None

        said = ""  # the model's last answer, for the journal

        def report(**fields: Any) -> Decision:
            return Decision(
                job_id=request.job_id,
                step=request.step,
                graph_version=version,
                usage=usage,
                llm_ms=llm_ms,
                calls=calls,
                answer=said[:ANSWER_MAX_CHARS],
                memory=context.memory,
                **fields,
            )

        # One policy for how long a call may take: the agent's llm_timeout, or what the
        # configured model's retries may take, whichever is longer.
        patience = max(self.llm_timeout, getattr(self._llm, "total_timeout", 0.0))
        for attempt in range(request.max_reasks + 1):
            exhausted, why = _no_room(request, usage, self._llm, prompt)
            timeout = patience
            if request.deadline is not None:
                timeout = min(timeout, request.deadline - time.time())
                if timeout <= 0:
                    exhausted, why = "deadline", "the job's deadline passed before the LLM call"
            if exhausted is not None:
                decision = report(edge="", reasks=attempt, exhausted=exhausted, reason=why)
                break
            started = time.perf_counter()
            try:
                try:
                    reply = await asyncio.wait_for(self._llm.complete(prompt), timeout)
                finally:
                    llm_ms += (time.perf_counter() - started) * 1000
                usage.add(reply.usage)
                calls.extend(reply.calls)
                said = reply.text
                most = self.config.sizes.answer
                if len(said) > most // 4 and len(said.encode()) > most:  # bytes: UTF-8
                    raise InvalidAnswer(
                        f"answer_too_large: the answer is {len(said.encode())} bytes, over "
                        f"the {most} an answer may be (RIG_MAX_ANSWER_BYTES): answer with "
                        "the edge and its arguments only, briefly"
                    )
                edge, args = parse_answer(reply.text, prompt.edges)
                tool, args = pick(edge, args, tables) if tables else (None, args)
            except RetryableError:
                raise
            except ProvidersFailed as exc:
                calls.extend(exc.calls)
                for error in exc.rejected:
                    self.log.error(
                        "llm.rejected", error=str(error), status=error.status, state=name
                    )
                if exc.config_error:
                    # The server refused the request itself: no retry or re-ask can help.
                    rejected = exc.rejected[-1]
                    config_error = {"status": rejected.status, "message": str(rejected)}
                    decision = report(
                        edge="", reasks=attempt, config_error=config_error, reason=str(rejected)
                    )
                    break
                problem, outage = f"no provider answered: {exc.last}", True
                self._outage(delivery, problem, state=name)
            except TimeoutError:
                if timeout < patience:  # cut short by the job's deadline
                    why = f"the LLM did not answer within the {timeout:.2f} s the deadline left"
                    decision = report(edge="", reasks=attempt, exhausted="deadline", reason=why)
                    break
                # No answer at all is an outage, not a wrong answer.
                problem, outage = f"the LLM did not answer within {patience:g} s", True
                self._outage(delivery, problem, state=name)
            except InvalidAnswer as exc:
                problem, outage = str(exc), False
                if reply.finish == "length":
                    problem += f" (the answer was cut at {prompt.max_output_tokens} tokens)"
            except (nats.errors.Error, ConnectionError) as exc:  # shared limits, breakers
                raise RetryableError(f"NATS failed during the LLM call: {exc!r}") from exc
            except Exception as exc:
                # Code raised, not a model: the routing function, the LLM class. Re-asking
                # cannot fix a bug, and the safe edge would hide it as a bad answer.
                self.log.error(
                    "agent.code_error",
                    error=f"{type(exc).__name__}: {exc}",
                    state=name,
                    exc_info=exc,
                )
                code_error = {
                    "type": type(exc).__name__,
                    "message": str(exc),
                    "where": _where(exc),
                }
                decision = report(edge="", reasks=attempt, code_error=code_error)
                break
            else:
                decision = report(edge=edge, tool=tool, args=args, reasks=attempt)
                break
            self.log.info("llm.invalid_answer", problem=problem, attempt=attempt)
            prompt = prompt.retry_with(problem)
        if decision is None:
            assert state.safe_edge is not None  # the graph's check guarantees it
            decision = report(
                edge=state.safe_edge,
                reasks=request.max_reasks,
                fallback=True,
                reason=problem,
                outage=outage,
            )
        decision.handled = self.handled(delivery)
        observe_calls(self.name, decision.calls, decision.usage)
        self._count_calls(decision.calls)
        if tracing.enabled():
            span = trace.get_current_span()
            span.set_attribute("rig.edge", decision.edge)
            span.set_attribute("rig.fallback", decision.fallback)
            span.set_attribute("gen_ai.usage.input_tokens", decision.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", decision.usage.output_tokens)
        child(STEP_SECONDS, self.name, name).observe(decision.handled.ms / 1000)
        crash_point("after_decide", name)  # answered, the decision not yet sent
        await self.publish(
            self.names.report("agent", self.name, request.job_id),
            decision,
            msg_id=msg_id(request.job_id, request.step, "decision"),
        )


def _outage_delay(attempt: int) -> float:
    return float(min(_OUTAGE_RETRY_S * 2 ** (attempt - 1), _OUTAGE_RETRY_MAX_S))


def _where(exc: BaseException) -> str:
    """`file:line in function` of the innermost frame of a traceback, for the journal."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}"


def _no_room(
    request: StepRequest, spent: Usage, llm: LLM, prompt: RoutePrompt
) -> tuple[ExhaustedKind | None, str]:
    """Which budget one more call would overrun, after `spent` in this step."""
    if request.tokens_left is None and request.cost_left is None:
        return None, ""  # nothing to reserve from: no estimate (it renders the prompt)
    reserve = estimate(llm, prompt)
    if request.tokens_left is not None:
        left = request.tokens_left - spent.tokens
        if reserve.tokens > left:
            return "tokens", f"the next LLM call may spend {reserve.tokens} tokens; {left} are left"
    if request.cost_left is not None:
        left_cost = request.cost_left - spent.cost
        if reserve.cost > left_cost:
            return "cost", f"the next LLM call may cost {reserve.cost:.6g}; {left_cost:.6g} is left"
    return None, ""
