"""The agent actor: asks the LLM which edge of the current state to take, and reports it."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from actors._actor import Actor, Delivery, Inbox
from actors._llm import LLM, InvalidAnswer, RoutePrompt, parse_answer
from protocols import (
    DEFAULT_MAX_STEPS,
    AgentInfo,
    Decision,
    Graph,
    GraphError,
    NonRetryableError,
    RetryableError,
    StepRequest,
    Usage,
    check_token,
    encode,
    msg_id,
)


class Agent(Actor):
    """An engineer-defined state machine whose edges an LLM picks.

    To write your own: subclass, give it a `name`, a `graph`, an `example_input` that
    runs it to `succeeded`, and an `llm` (any object with `async complete(prompt)`),
    then `rig actor run my_module:MyAgent`.

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
    Publishes `Decision` on `rig.work.supervisor`, with `Nats-Msg-Id`
    `<job>:<step>:decision`, so a redelivered step reports once.
    On start it registers `AgentInfo` (graph, example input) in `RIG_AGENTS`, which is
    how the supervisor and `rig agents` learn about it.

    An answer that is not an edge of the state is re-asked `max_reasks` times with the
    error; then the state's safe edge is taken and the decision is marked `fallback`.
    `llm_timeout` bounds each LLM call; a call that raises `RetryableError` naks the
    step for a later retry, any other exception counts as an invalid answer.
    """

    graph: ClassVar[Graph]
    example_input: ClassVar[dict[str, Any]]
    llm: ClassVar[LLM]
    description: ClassVar[str] = ""
    max_steps: ClassVar[int] = DEFAULT_MAX_STEPS
    max_reasks: ClassVar[int] = 1
    llm_timeout: ClassVar[float] = 60.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "graph" not in cls.__dict__:
            return  # an intermediate base class
        check_token(cls.name, what=f"{cls.__qualname__}.name")
        if not isinstance(cls.graph, Graph):
            raise GraphError(f"{cls.__qualname__}.graph must be a protocols.Graph")
        if not isinstance(getattr(cls, "example_input", None), dict):
            raise TypeError(f"{cls.__qualname__} must declare example_input, a dict")

    def info(self) -> AgentInfo:
        return AgentInfo(
            name=self.name,
            description=self.description or (type(self).__doc__ or "").strip().split("\n")[0],
            graph=self.graph,
            example_input=self.example_input,
            max_steps=self.max_steps,
        )

    def create_llm(self) -> LLM:
        """The LLM this process routes with; by default the class's `llm`."""
        try:
            return self.llm
        except AttributeError:
            raise TypeError(f"{type(self).__qualname__} has no llm; set one") from None

    async def on_start(self) -> None:
        self._llm = self.create_llm()
        agents = await self.js.key_value(self.names.agents_bucket)
        await agents.put(self.name, encode(self.info()))

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
        state = self.graph.states.get(request.state)
        if request.agent != self.name or state is None or not state.decided_by_llm:
            raise NonRetryableError(
                f"agent {self.name!r} cannot decide state {request.state!r} of agent "
                f"{request.agent!r}",
                state=request.state,
            )
        prompt = RoutePrompt(
            agent=self.name,
            state=request.state,
            description=state.description,
            edges=state.edges,
            context=request.context,
        )
        usage = Usage()
        problem = ""
        llm_ms = 0.0
        for attempt in range(self.max_reasks + 1):
            try:
                started = time.perf_counter()
                try:
                    reply = await asyncio.wait_for(self._llm.complete(prompt), self.llm_timeout)
                finally:
                    llm_ms += (time.perf_counter() - started) * 1000
                usage.input_tokens += reply.usage.input_tokens
                usage.output_tokens += reply.usage.output_tokens
                edge, args = parse_answer(reply.text, state.edges)
            except RetryableError:
                raise
            except InvalidAnswer as exc:
                problem = str(exc)
            except Exception as exc:  # a broken model call is an answer we cannot use
                problem = f"the LLM call failed: {exc!r}"
            else:
                decision = Decision(
                    job_id=request.job_id,
                    step=request.step,
                    edge=edge,
                    args=args,
                    reasks=attempt,
                    usage=usage,
                    llm_ms=llm_ms,
                )
                break
            self.log.info("llm.invalid_answer", problem=problem, attempt=attempt)
            prompt = prompt.retry_with(problem)
        else:
            assert state.safe_edge is not None  # the graph's check guarantees it
            decision = Decision(
                job_id=request.job_id,
                step=request.step,
                edge=state.safe_edge,
                reasks=self.max_reasks,
                fallback=True,
                reason=problem,
                usage=usage,
                llm_ms=llm_ms,
            )
        await self.publish(
            self.names.supervisor, decision, msg_id=msg_id(request.job_id, request.step, "decision")
        )
