"""The tool executor: runs tools for the supervisor, each call through the idempotency ledger."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import os
import re
import socket
import time
import typing
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, cast, overload

import pydantic
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from actors.runtime import tracing as tracing
from actors.runtime.actor import Actor, Delivery, Inbox
from actors.runtime.faults import crash_point
from actors.runtime.metrics import LEDGER, TOOL_CALLS, TOOL_SECONDS, child
from actors.runtime.nats import keep_beating, kv_read, live_keys
from actors.runtime.results import by_reference, resolved_context
from actors.runtime.settings import RigConfig
from actors.tools.catalog import publish_catalog
from actors.tools.cluster import ClusterLedger
from actors.tools.decisions import Claim
from actors.tools.ledger import Ledger
from protocols import (
    Graph,
    JobContext,
    MemoryScope,
    Names,
    NonRetryableError,
    RetryableError,
    RigError,
    ToolCall,
    ToolCancel,
    ToolEntry,
    ToolResult,
    VerifyRequest,
    _permissions as permissions,
    canonical,
    check_token,
    decode_as,
    encode,
    explain,
    idempotency_key,
    msg_id,
)
from protocols._permissions import Role

# Long: a call's whole way through the ledger (claim, checks, run, record, reconcile),
# each step beside the failure it guards against; split, the order would be hidden.
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# A call found running elsewhere is waited for here, holding its message (in-progress
# acks keep it), asking the ledger again every _BUSY_POLL_S (doubling to _BUSY_POLL_MAX_S)
# until it has a result or its lease ends. Naking it instead would spend a delivery per
# try, and a lease longer than the deliveries could wait would dead-letter a call that
# was about to be settled.
_BUSY_POLL_S = 0.05
_BUSY_POLL_MAX_S = 1.0
# The calls an executor was told to stop (`ToolCancel`) that it remembers, so that one
# still queued is not started when it comes: the newest this many.
_STOPPED_KEPT = 4096


@dataclass(frozen=True, slots=True)
class ToolContext:
    """The call a tool is running for: pass `key` downstream as an `Idempotency-Key`.

    `job` is the job's input and earlier tool results when the edge has a verifier (the
    call carries them for it): a tool can refuse arguments that do not fit the job
    before it acts, rather than leave it to the verifier after the effect.
    """

    job_id: str
    step: int
    tool: str
    key: str
    epoch: int
    job: JobContext | None = None
    memory: MemoryScope | None = None  # whose memory the memory tools write


class ToolRefused(Exception):
    """Raised by a tool that refuses a call before acting: the call fails with `code`
    (the edge's failure path), and nothing is logged as a bug."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


_current: ContextVar[ToolContext] = ContextVar("rig_tool_context")


def tool_context() -> ToolContext:
    """The call the running tool serves; only valid inside a `@tool` method."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("tool_context() is only available while a tool runs") from None


# What a claim's lease keeps beyond the tool's timeout, at least: the time the claim
# itself and the checks before the run may take (a tool starts only while what is left
# of its lease covers its whole timeout).
LEASE_SLACK_S = 1.0


def lease_of(timeout: float, lease: float | None) -> float:
    """A tool's lease: the one asked for, never shorter than its timeout plus
    `LEASE_SLACK_S`; by default the timeout plus 30 s."""
    return max(lease, timeout + LEASE_SLACK_S) if lease is not None else timeout + 30.0


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """How a tool behaves: set with `@tool(...)`."""

    name: str
    side_effects: bool
    timeout: float
    lease: float
    reconcile: str | None = None
    key_fields: tuple[str, ...] | None = None
    # Its result may carry text an attacker wrote (web pages, emails, tickets): see
    # `Graph.injection_paths` and `rig graph --lint`.
    untrusted_output: bool = False

    def key_args(self, args: dict[str, Any]) -> Any:
        """The part of the arguments that identifies the effect (all of them by default)."""
        if self.key_fields is None:
            return args
        return {field: args.get(field) for field in self.key_fields}


@overload
def tool(fn: F, /) -> F: ...
@overload
def tool(
    *,
    name: str | None = None,
    side_effects: bool = True,
    timeout: float = 60.0,
    lease: float | None = None,
    reconcile: str | None = None,
    key: tuple[str, ...] | None = None,
    untrusted_output: bool = False,
) -> Callable[[F], F]: ...
def tool(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    side_effects: bool = True,
    timeout: float = 60.0,
    lease: float | None = None,
    reconcile: str | None = None,
    key: tuple[str, ...] | None = None,
    untrusted_output: bool = False,
) -> F | Callable[[F], F]:
    """Mark an async method of a `ToolExecutor` as a tool the graph's edges can name.

    The method's parameters are the tool's arguments, validated with pydantic from its
    annotations. `side_effects=True` (the default, the safe assumption) means a call
    whose outcome is unknown (the executor died mid-call) is never run again blindly.
    `timeout` bounds one run. `lease` is how long a claim stays `in_progress` before a
    repeat may call the outcome unknown; by default the timeout plus 30 s, and never
    shorter than the timeout plus 1 s: the tool starts only while what is left of the
    lease covers its whole timeout (else the call is asked again), so that a run is over
    before anyone may take the call over. `reconcile` names an async method of the
    executor, taking the tool's arguments, that asks the outside world whether a call's
    effect happened (`tool_context().key` is the idempotency key it was made with): it
    returns the call's result if so, None if not. An `unknown` call is then settled by it
    (recorded, or run again under a new epoch) instead of being reported `effect_unknown`.
    `key` names the arguments that identify the effect (default: all of them): a call
    with the same key fields but other arguments is refused as `key_conflict`, not run.
    Each must be a parameter of the method (checked when the class is defined). The key
    is computed from the arguments as validated (`25` and `25.0` for a float are one
    key); arguments that do not validate, or hold NaN, are the failure `invalid_args`
    and nothing runs. `untrusted_output=True` says the result may carry text someone
    else wrote (a web page, an email, a ticket): `rig graph --lint` then reports every
    consequential edge it can steer with no verifier or person in between.
    """

    def mark(f: F) -> F:
        if not inspect.iscoroutinefunction(cast(Any, f)):  # cast: keep `F` for the return
            raise TypeError(
                f"@tool {f.__qualname__} must be `async def`: an executor awaits each call "
                "(run blocking work with `await asyncio.to_thread(...)`)"
            )
        spec = ToolSpec(
            name=check_token(name or f.__name__, what="tool name"),
            side_effects=side_effects,
            timeout=timeout,
            lease=lease_of(timeout, lease),
            reconcile=reconcile,
            key_fields=tuple(key) if key is not None else None,
            untrusted_output=untrusted_output,
        )
        f._rig_tool = spec  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


class ToolExecutor(Actor):
    """Runs tools at most once per job and arguments, whatever JetStream redelivers.

    To write your own: subclass, and mark async methods with `@tool`:

        class Payments(ToolExecutor):
            name = "payments"

            @tool(side_effects=True)
            async def refund(self, order_id: str, amount: float) -> dict:
                return await bank.refund(order_id, amount)

    Consumes `rig.work.tool.<tool>` (durable `tool-<tool>`) for each of its tools:
    `ToolCall`. Publishes `ToolResult` on `rig.work.supervisor.tool.<tool>.<partition>`,
    or, for a successful call whose edge has a verifier, a `VerifyRequest` carrying it to
    that verifier.

    Every call first claims its key (a hash of job id, tool and canonical args) in
    the SQLite ledger at `$RIG_HOME/ledger.sqlite3` (with `RIG_LEDGER=cluster`, in the
    cluster's replicated bucket, which every host shares). Only a fresh claim runs the tool;
    a repeat of a finished call returns the recorded result (`ledger="hit"`); a call
    still running elsewhere is waited for, until it finishes or its lease ends (the
    message is held meanwhile, so no delivery is spent); a side-effecting call whose executor
    died mid-run comes back as the error `effect_unknown` and is not run again.

    A tool signals a failure worth retrying with `RetryableError`; any other exception
    is a final failure, recorded and returned to the supervisor as `ok=False`. For a
    side-effecting tool a `RetryableError` makes the call `unknown`, since it may have
    acted first: the retry runs `reconcile` (which may find nothing and run it again),
    or, without one, the job goes to a person.

    A call the job no longer waits for is stopped: when the job is cancelled, its
    deadline passes, or a person moves it on, the supervisor says so (`ToolCancel`) and
    the running tool is cancelled (`asyncio.CancelledError` in its code, which may clean
    up) and its result is the error `cancelled`; its record becomes `unknown` if the
    tool has side effects (it may have acted), else a failure that may run again. A
    call is not started past its job's deadline, or once it was told to stop.
    """

    kind = "tools"

    tools: ClassVar[dict[str, _Tool]] = {}
    all: ClassVar[tuple[str, ...]]  # every tool it serves, as a set: `Edge(tools=Cls.all)`

    def __init__(self, *, config: RigConfig | None = None) -> None:
        super().__init__(config=config)
        # The calls running now: each one's task and the timeout it runs under.
        self._calls: dict[tuple[str, int, str], tuple[asyncio.Task[Any], asyncio.Timeout]] = {}
        self._stopped: OrderedDict[tuple[str, int, str], str] = OrderedDict()
        self._cancels: KeyValue | None = None  # `on_start` opens the calls told to stop

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(getattr(cls, "name", None), str):
            cls.all = (f"{cls.name}.*",)
        found = dict(cls.tools)
        for attr in dir(cls):
            fn = getattr(cls, attr, None)
            spec = getattr(fn, "_rig_tool", None)
            if isinstance(spec, ToolSpec):
                assert fn is not None
                where = f"{cls.__qualname__}: tool {spec.name!r}"
                if spec.reconcile is not None:
                    _check_reconcile(where, fn, spec.reconcile, getattr(cls, spec.reconcile, None))
                args = _args_model(fn, spec.name)
                unknown = set(spec.key_fields or ()) - set(args.model_fields)
                if unknown:
                    raise TypeError(
                        f"{where} names key fields {sorted(unknown)} that are not among its "
                        f"parameters ({', '.join(args.model_fields) or 'none'})"
                    )
                found[spec.name] = _Tool(spec, fn, args)
        cls.tools = found

    async def on_start(self) -> None:
        owner = ledger_owner(self.config.hostname)
        await self.patiently(self._claim_ledger_scope, doing="reading the ledgers in use")
        self.ledger: Ledger | ClusterLedger
        if self.config.ledger == "cluster":
            self.ledger = await self.patiently(
                lambda: ClusterLedger.open(self.js, self.names, owner=owner),
                doing="opening the cluster's ledger",
            )
        else:
            self.ledger = await Ledger.open(self.config.home / "ledger.sqlite3", owner=owner)
        for name in self.tools:
            await self.nc.subscribe(self.names.tool_cancel(name), cb=self._on_cancel)
        with contextlib.suppress(BucketNotFoundError, NotFoundError):  # an older topology
            self._cancels = await self.bucket(self.names.cancels_bucket)
        entries = self.catalog()
        await self.patiently(lambda: publish_catalog(self, entries), doing="writing its tools")

    def catalog(self) -> list[ToolEntry]:
        """What this process serves, as agents and `rig graph` read it (`RIG_TOOLS`)."""
        return self.entries()

    @classmethod
    def entries(cls) -> list[ToolEntry]:
        """What the class's tools say of themselves, as catalog entries."""
        return [
            ToolEntry(
                executor=cls.name,
                tool=name,
                description=inspect.getdoc(tool.fn) or "",
                input_schema=tool.args.model_json_schema(),
                side_effects=tool.spec.side_effects,
                untrusted_output=tool.spec.untrusted_output,
            )
            for name, tool in cls.tools.items()
        ]

    async def _on_cancel(self, msg: Any) -> None:
        """A `ToolCancel`: stop the call if it runs here, and do not start it later."""
        try:
            cancel = decode_as(ToolCancel, msg.data)[0]
        except RigError as exc:
            self.log.warning("tool.cancel_unreadable", error=exc.message)
            return
        self.stop_call(cancel.job_id, cancel.step, cancel.tool, cancel.reason)

    def stop_call(self, job_id: str, step: int, tool: str, reason: str) -> bool:
        """Stop the call of `tool` for step `step` of job `job_id` if it runs in this
        process (True if it did), and refuse to start it from now on."""
        ident = (job_id, step, tool)
        self._stopped[ident] = reason
        self._stopped.move_to_end(ident)
        while len(self._stopped) > _STOPPED_KEPT:
            self._stopped.popitem(last=False)
        running = self._calls.get(ident)
        if running is None:
            return False
        task, limit = running
        if task.done() or task.cancelling():  # ending already (its time ran out)
            return False
        self.log.info("tool.stopping", job_id=job_id, step=step, tool=tool, reason=reason)
        # One cancellation only: a timeout firing during the tool's clean-up would cut it.
        with contextlib.suppress(RuntimeError):  # not entered yet: it never starts
            limit.reschedule(None)
        task.cancel()
        return True

    async def on_stop(self) -> None:
        self._scope_beat.cancel()
        with contextlib.suppress(BaseException):
            await self._scope_beat
        await self.ledger.close()

    async def _claim_ledger_scope(self) -> None:
        """Refuse to serve a side-effecting tool that executors with another ledger serve.

        A local ledger is one file per host, and at most once holds only within one
        ledger: two hosts' executors could each claim the same call. Each executor keeps
        `ledger.<tool>.<scope>` alive in `RIG_PRESENCE` (as agents keep theirs), its scope
        its host with a local ledger, `cluster` with the cluster's (`RIG_LEDGER`); one
        that finds another scope's key for one of its side-effecting tools stops with
        the reason, unless `RIG_ALLOW_SECOND_LEDGER=1` says to run without the guarantee.
        """
        presence = await self.js.key_value(self.names.presence_bucket)
        host = (
            "cluster"
            if self.config.ledger == "cluster"
            else _token(self.config.hostname or socket.gethostname())
        )
        tools = [name for name, t in self.tools.items() if t.spec.side_effects]
        for name in tools:
            others = {
                key.rsplit(".", 1)[1]
                for key in await live_keys(self.js, self.names, f"ledger.{name}.*")
                if key.rsplit(".", 1)[1] != host
            }
            if not others:
                continue
            message = (
                f"tool {name!r} (side effects) is already served with another ledger (on "
                f"{', '.join(sorted(others))}); at most once holds only within one ledger, "
                "so this executor will not serve it (RIG_LEDGER=cluster gives every host "
                "one; RIG_ALLOW_SECOND_LEDGER=1 runs it anyway, without that guarantee)"
            )
            if not self.config.allow_second_ledger:
                raise SecondLedgerError(message, tool=name, hosts=", ".join(sorted(others)))
            self.log.warning("ledger.second_host", tool=name, hosts=sorted(others))
        keys = [f"ledger.{name}.{host}" for name in tools]

        async def beat() -> None:
            seen = encode({"pid": os.getpid(), "at": time.time()})
            for key in keys:
                await presence.put(key, seen)

        await beat()
        self._scope_beat = asyncio.create_task(keep_beating(beat, self.log))

    def drain_timeout(self) -> float:
        """Long enough for the slowest tool to finish: a call cut off mid-way would become
        `unknown` for a person to settle."""
        slowest = max((t.spec.timeout for t in self.tools.values()), default=0.0)
        return max(self.config.drain_timeout, slowest + 5.0)

    @classmethod
    def role(cls, names: Names, graphs: list[Graph]) -> Role:
        """Its tools' calls and reports, and the verifiers the graphs put after them
        (a successful result goes to the edge's verifier, not to the supervisor)."""
        verifiers = {
            edge.verifier
            for graph in graphs
            for state in graph.states.values()
            for edge in state.edges
            if edge.verifier is not None and any(edge.offers(t, cls.name) for t in cls.tools)
        }
        return permissions.tools(names, cls.role_name(), cls.tools, verifiers, executor=cls.name)

    def inboxes(self) -> list[Inbox]:
        return [
            Inbox(
                durable=self.names.tool_durable(name),
                subject=self.names.tool(name),
                model=ToolCall,
                handler=self.on_call,
            )
            for name in self.tools
        ]

    async def on_call(self, call: ToolCall, delivery: Delivery) -> None:
        if not tracing.enabled():
            await self._call(call, delivery)
            return
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.tool,
            "rig.job.id": call.job_id,
            "rig.step": call.step,
        }
        with tracing.span(f"execute_tool {call.tool}", attributes=attributes):
            await self._call(call, delivery)

    async def _call(self, call: ToolCall, delivery: Delivery) -> None:
        result = await self.execute(call)
        crash_point("after_record", call.tool)
        if result.ok:  # a large result travels by reference; the ledger keeps the value
            name = self.names.result_object(call.job_id, call.step, call.tool)
            inline = self.config.inline_result_bytes
            value = await by_reference(self, name, result.result, inline=inline)
            result = result.model_copy(update={"result": value})
        result.handled = self.handled(delivery)
        _observe(result)
        if tracing.enabled():
            span = trace.get_current_span()
            span.set_attribute("gen_ai.tool.call.id", result.key)  # the idempotency key
            unknown = (result.error or {}).get("code") == "effect_unknown"
            span.set_attribute("rig.ledger.outcome", "unknown" if unknown else result.ledger)
            if not result.ok:
                error = result.error or {}
                span.set_status(Status(StatusCode.ERROR, str(error.get("message", ""))[:500]))
                span.set_attribute("error.type", str(error.get("code", "error")))
        if result.ok and call.verifier is not None and call.context is not None:
            # Straight to the verifier, which carries the result to the supervisor.
            request = VerifyRequest(
                job_id=call.job_id,
                step=call.step,
                verifier=call.verifier,
                tool=call.tool,
                args=call.args,
                result=result.result,
                context=call.context,
                tool_result=result,
            )
            await self.publish(
                self.names.verifier(call.verifier),
                request,
                msg_id=msg_id(call.job_id, call.step, "verify"),
            )
            return
        await self.publish(
            self.names.report("tool", call.tool, call.job_id),
            result,
            msg_id=msg_id(call.job_id, call.step, "tool_result"),
        )

    async def execute(self, call: ToolCall) -> ToolResult:
        """Run `call` through the ledger and say what happened; raise to nak."""
        if call.tool not in self.tools:
            raise NonRetryableError(f"{self.name} has no tool {call.tool!r}", tool=call.tool)
        tool = self.tools[call.tool]
        spec = tool.spec
        if call.lookup and spec.side_effects:
            message = (
                f"tool {call.tool!r} has side effects: a lookup may only call a read-only "
                "tool (every call with side effects is an edge of its own)"
            )
            return _failed(call, "", "not_read_only", message)
        crash_point("before_claim", call.tool)
        try:
            # The key is over the arguments as the tool will see them: `25` and `25.0`
            # for a float are one effect, and so one key.
            values = tool.args.model_validate(call.args)
            plain = values.model_dump(mode="json")
            key = idempotency_key(call.job_id, call.tool, spec.key_args(plain))
            args_hash = hashlib.sha256(canonical(plain)).hexdigest()
        except pydantic.ValidationError as exc:
            return _failed(call, "", "invalid_args", explain(exc))
        except (TypeError, ValueError) as exc:  # not JSON: NaN, infinity
            return _failed(call, "", "invalid_args", f"arguments are not JSON: {exc}")
        kwargs = {name: getattr(values, name) for name in type(values).model_fields}
        kwargs |= values.model_extra or {}  # a tool taking **kwargs, an MCP tool's schema
        refused = self._not_to_start(call)
        if refused is not None:
            self.log.info("tool.not_started", job_id=call.job_id, tool=call.tool, why=refused)
            return _result(call, key, error=refused)
        # The job's context (results stored by reference read back) before the claim: a
        # read that fails (an election's timeout, a result gone) is a call not started,
        # retried or dead-lettered as such, never the tool's outcome in the ledger.
        job = await resolved_context(self, call.context) if call.context is not None else None
        pause = _BUSY_POLL_S
        dead: str | None = None
        while True:
            asked = time.monotonic()  # the lease starts after this: measure from here
            claim = await self.ledger.claim(
                key,
                job_id=call.job_id,
                tool=call.tool,
                args_hash=args_hash,
                lease=spec.lease,
                side_effects=spec.side_effects,
                dead_owner=dead,
            )
            if claim.outcome == "unknown" and spec.reconcile is not None:
                assert claim.record is not None
                claim = await self._reconcile(call, key, spec, kwargs, claim.record.epoch)
            if claim.outcome != "busy":
                break
            holder = claim.record.owner if claim.record is not None else ""
            if holder != dead and await asyncio.to_thread(_gone, holder, self.config.hostname):
                # Its holder was a process of this host that no longer exists: it will
                # never finish, so its lease ends now rather than run out.
                dead = holder
                continue
            await asyncio.sleep(min(pause, max(claim.retry_after, 0.01)))
            pause = min(pause * 2, _BUSY_POLL_MAX_S)
        if claim.outcome != "claimed":
            return self._from_ledger(call, key, claim)
        try:
            told = await self._told_to_stop(call)
        except Exception as exc:  # the bucket did not answer: ask again later, unclaimed
            error = {"code": "not_started", "message": repr(exc), "started": False}
            await self.ledger.fail(key, claim.epoch, error, retryable=True)
            raise RetryableError(
                f"could not read whether the call was told to stop ({exc!r}); it did not "
                "start and is asked again",
                delay=0.5,
            ) from exc
        if told is not None:
            # Stopped while it was queued (perhaps while no executor listened): the claim
            # is released as a call that never started, and the tool does not run.
            error = _cancelled(told, started=False)
            await self.ledger.fail(key, claim.epoch, error, retryable=True)
            self.log.info("tool.not_started", job_id=call.job_id, tool=call.tool, why=error)
            return _result(call, key, error=error)
        crash_point("after_claim", call.tool)
        # The claim's lease ends no sooner than this (measured from before the claim was
        # asked for, on this process's monotonic clock), and a run started after
        # `start_by` could outlast it.
        lease_end = asked + spec.lease
        start_by = lease_end - spec.timeout
        if time.monotonic() > start_by or (
            time.monotonic() - asked > spec.lease / 2
            and not await self._still_ours(key, claim.epoch, until=start_by)
        ):
            # Paused past half its lease (GC, SIGSTOP, a VM, an election or a slow network
            # that took its time), or too long for a whole run to fit in what is left:
            # another executor may settle the call meanwhile, so this one must not act on
            # its claim. Nor may it drop the call, which is its job's only way on: the
            # claim is released if still its own (the tool never started) and the call
            # asked again; its redelivery finds what the ledger says by then.
            self.log.warning("ledger.fenced_before_effect", key=key, epoch=claim.epoch)
            error = {
                "code": "not_started",
                "message": "too little of its lease left to run the tool",
                "started": False,
            }
            await self.ledger.fail(key, claim.epoch, error, retryable=True)
            raise _Fenced(key, claim.epoch)
        return await self._run(call, key, tool, kwargs, claim.epoch, job, lease_end)

    async def _told_to_stop(self, call: ToolCall) -> str | None:
        """Why the call must not start, if its job stopped waiting for it: the notice this
        process heard, else the durable one (`Names.cancels_bucket`), read after the claim
        so that a cancel written before it is always seen."""
        heard = self._stopped.get((call.job_id, call.step, call.tool))
        if heard is not None:
            return heard
        if self._cancels is None:
            return None
        key = self.names.cancel_key(call.tool, call.job_id, call.step)
        data, _revision = await kv_read(self._cancels, key)
        if not data:
            return None
        return decode_as(ToolCancel, data)[0].reason

    def _not_to_start(self, call: ToolCall) -> dict[str, Any] | None:
        """The `cancelled` error of a call that must not start: it was told to stop, or
        its job's deadline has passed."""
        told = self._stopped.get((call.job_id, call.step, call.tool))
        if told is not None:
            return _cancelled(told, started=False)
        if call.deadline is not None and time.time() >= call.deadline:
            reason = "the job's deadline passed before the call started"
            return _cancelled(reason, started=False, deadline=call.deadline)
        return None

    async def _still_ours(self, key: str, epoch: int, *, until: float) -> bool:
        """Whether the claim of `epoch` still holds the key, with lease left once the
        record is read (the read may take seconds on a slow network: the Jepsen harness
        found a tool started after its lease, and a call paid twice): `until` is the end
        of its lease on this process's monotonic clock (measured from before the claim,
        so never later than the record's), not the record's wall-clock time, which a
        clock stepped back would stretch."""
        if time.monotonic() >= until:
            return False
        record = await self.ledger.get(key)
        ours = record is not None and record.state == "in_progress" and record.epoch == epoch
        return ours and time.monotonic() < until

    def _from_ledger(self, call: ToolCall, key: str, claim: Claim) -> ToolResult:
        """What a call that must not run answers, from its ledger record."""
        match claim.outcome:
            case "succeeded":
                assert claim.record is not None
                return _result(call, key, result=claim.record.result, ledger="hit")
            case "failed":
                assert claim.record is not None and claim.record.error is not None
                return _result(call, key, error=claim.record.error, ledger="hit")
            case "unknown":
                return _failed(
                    call,
                    key,
                    "effect_unknown",
                    "an earlier run died mid-call; the effect may have happened, "
                    "so the tool is not run again",
                    ledger="hit",
                )
        return _failed(
            call,
            key,
            "key_conflict",
            "this idempotency key was used with other arguments",
            ledger="hit",
        )

    async def _reconcile(
        self, call: ToolCall, key: str, spec: ToolSpec, kwargs: dict[str, Any], epoch: int
    ) -> Claim:
        """Ask the outside world whether an `unknown` call's effect happened, and record it."""
        assert spec.reconcile is not None
        check = getattr(self, spec.reconcile)
        token = _current.set(
            ToolContext(call.job_id, call.step, call.tool, key, epoch, memory=call.memory)
        )
        try:
            found = await asyncio.wait_for(check(**kwargs), spec.timeout)
        except Exception as exc:
            raise RetryableError(f"reconcile of {call.tool} failed: {exc!r}", delay=1.0) from exc
        finally:
            _current.reset(token)
        self.log.info("ledger.reconciled", key=key, happened=found is not None)
        return await self.ledger.resolve(
            key, epoch, happened=found is not None, result=found, lease=spec.lease
        )

    async def _run(
        self,
        call: ToolCall,
        key: str,
        tool: _Tool,
        kwargs: dict[str, Any],
        epoch: int,
        job: JobContext | None,
        lease_end: float,
    ) -> ToolResult:
        spec = tool.spec
        started = time.perf_counter()
        # Never past the lease (the check before the run leaves it at least the timeout):
        # once it ends another executor may take the call over and reconcile.
        limit, by_deadline = min(spec.timeout, lease_end - time.monotonic()), False
        if call.deadline is not None and call.deadline - time.time() < limit:
            limit, by_deadline = max(call.deadline - time.time(), 0.0), True
        try:
            value = await self._invoke(call, key, epoch, tool, kwargs, limit, job)
            crash_point("after_effect", call.tool)
        except _Stopped as stopped:
            error = _cancelled(stopped.reason, started=True)
            return await self._stopped_run(call, key, epoch, spec, error, started)
        except RetryableError as exc:
            error = {"code": "retryable", "message": exc.message}
            if spec.side_effects:
                # It may have acted before it failed (a read timeout after the payment
                # went through): never re-run blindly; the repeat reconciles, or a person.
                await self.ledger.abandon(key, epoch, error)
            else:
                await self.ledger.fail(key, epoch, error, retryable=True)
            raise
        except TimeoutError:
            if by_deadline:
                reason = "the job's deadline passed while the call ran"
                error = _cancelled(reason, started=True, deadline=call.deadline)
                return await self._stopped_run(call, key, epoch, spec, error, started)
            if spec.side_effects:
                # The effect may be under way: leave the claim to expire into `unknown`.
                raise RetryableError(f"tool {call.tool} timed out", delay=1.0) from None
            error = {"code": "timeout", "message": f"no result within {spec.timeout} s"}
        except ToolRefused as refused:  # it did not act, and says why in its own code
            error = {"code": refused.code, "message": refused.message}
        except Exception as exc:
            # The tool's own code raised: the traceback is for whoever owns the tool.
            self.log.error("tool.raised", tool=call.tool, error=repr(exc), exc_info=exc)
            error = {
                "code": "tool_error",
                "type": type(exc).__name__,
                "message": f"{type(exc).__name__}: {exc}",
            }
        else:
            tool_ms = (time.perf_counter() - started) * 1000
            failed = self._unrecordable(call, value)
            if failed is not None:  # the edge's failure path (the call is not made again)
                await self.ledger.fail(key, epoch, failed, retryable=False)
                return _result(call, key, error=failed, tool_ms=tool_ms)
            if not self.ledger.keeps_large_results:
                value = await self._stored(call, key, epoch, value)
            if not await self.ledger.complete(key, epoch, value):
                self.log.warning("ledger.fenced", key=key, epoch=epoch)
            return _result(call, key, result=value, tool_ms=tool_ms)
        tool_ms = (time.perf_counter() - started) * 1000
        await self.ledger.fail(key, epoch, error, retryable=False)
        return _result(call, key, error=error, tool_ms=tool_ms)

    def _unrecordable(self, call: ToolCall, value: Any) -> dict[str, Any] | None:
        """Why a tool's result cannot be recorded (None: it can): it is not JSON, or it is
        larger than `RIG_MAX_RESULT_BYTES`."""
        try:
            size = len(canonical(value))  # a result must be JSON to be recorded and sent
        except (TypeError, ValueError) as exc:
            return {
                "code": "bad_result",
                "message": f"the result of {call.tool} cannot be recorded: {exc} (a result "
                "must be JSON: no NaN or Infinity, nothing JSON has no form for)",
            }
        most = self.config.sizes.result
        if size <= most:
            return None
        return {
            "code": "result_too_large",
            "message": f"the result of {call.tool} is {size} bytes, over the {most} a result "
            "may be (RIG_MAX_RESULT_BYTES): return a reference to large data instead",
            "bytes": size,
            "limit": most,
        }

    async def _stored(self, call: ToolCall, key: str, epoch: int, value: Any) -> Any:
        """`value`, or a reference to a stored copy if it is too large for the ledger's
        record (the cluster's, a KV value). Storing it failed after the tool acted: the
        record becomes `unknown` (a repeat reconciles, or a person settles it)."""
        name = self.names.result_object(call.job_id, call.step, call.tool)
        try:
            return await by_reference(self, name, value, inline=self.config.inline_result_bytes)
        except (RetryableError, NonRetryableError) as exc:
            error = {
                "code": "result_not_stored",
                "message": f"{call.tool} acted, but its result could not be stored: {exc.message}",
                "started": True,
            }
            await self.ledger.abandon(key, epoch, error)
            raise

    async def _stopped_run(
        self,
        call: ToolCall,
        key: str,
        epoch: int,
        spec: ToolSpec,
        error: dict[str, Any],
        started: float,
    ) -> ToolResult:
        """Record a call stopped mid-run: `unknown` if it may have acted, else a failure
        a repeat may run again."""
        if spec.side_effects:
            await self.ledger.abandon(key, epoch, error)
        else:
            await self.ledger.fail(key, epoch, error, retryable=True)
        self.log.info("tool.stopped", job_id=call.job_id, tool=call.tool, key=key, why=error)
        return _result(call, key, error=error, tool_ms=(time.perf_counter() - started) * 1000)

    async def _invoke(
        self,
        call: ToolCall,
        key: str,
        epoch: int,
        tool: _Tool,
        kwargs: dict[str, Any],
        limit: float,
        job: JobContext | None,
    ) -> Any:
        """Run the tool (for at most `limit` seconds) as a task `stop_call` can cancel; raise
        `_Stopped` if it did."""
        token = _current.set(
            ToolContext(call.job_id, call.step, call.tool, key, epoch, job, call.memory)
        )
        ident = (call.job_id, call.step, call.tool)

        timeout = asyncio.timeout(limit)

        async def run() -> Any:
            async with timeout:
                return await tool.fn(self, **kwargs)

        try:
            task = asyncio.create_task(run())
            self._calls[ident] = (task, timeout)
            try:
                return await task
            except asyncio.CancelledError:
                reason = self._stopped.get(ident)
                current = asyncio.current_task()
                if reason is None or (current is not None and current.cancelling()):
                    raise  # this handler itself is being cancelled (the process stops)
                raise _Stopped(reason) from None
            finally:
                self._calls.pop(ident, None)
        finally:
            _current.reset(token)


class SecondLedgerError(RigError):
    """A side-effecting tool is already served on another host, with another ledger."""

    code = "second_ledger"


class _Stopped(Exception):
    """The call was stopped (`ToolExecutor.stop_call`) while its tool ran."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _cancelled(reason: str, *, started: bool, deadline: float | None = None) -> dict[str, Any]:
    """The error of a call stopped (`started`) or not started because its job no longer
    waits for it; `deadline` when the job's deadline is why, for the supervisor to apply
    (the executor may see it pass before the supervisor's timer fires)."""
    error: dict[str, Any] = {"code": "cancelled", "message": reason, "started": started}
    if deadline is not None:
        error["deadline"] = deadline
    return error


class _Fenced(RetryableError):
    """This executor's claim may have been taken over, or a run would not fit in what is
    left of its lease, before the tool started: the call is asked again, not dropped."""

    def __init__(self, key: str, epoch: int) -> None:
        super().__init__(
            "too little of its lease left before the tool started: the call is asked again",
            delay=0.2,
            key=key,
            epoch=epoch,
        )
        self.key, self.epoch = key, epoch


@dataclass(frozen=True, slots=True)
class _Tool:
    """A tool of an executor class: how it behaves, its method, and its arguments' model."""

    spec: ToolSpec
    fn: Callable[..., Awaitable[Any]]
    args: type[pydantic.BaseModel]


def _check_reconcile(where: str, tool_fn: Any, name: str, found: Any) -> None:
    """`reconcile=` must name an async method of the class that takes the tool's own
    arguments: it is called with them, as the tool was."""
    if not callable(found):
        raise TypeError(f"{where} names reconcile={name!r}, which is not a method of the class")
    if not inspect.iscoroutinefunction(found):
        raise TypeError(f"{where}: its reconcile method {name!r} must be `async def`")
    wanted = list(inspect.signature(tool_fn).parameters)[1:]
    given = list(inspect.signature(found).parameters)[1:]
    if given != wanted:
        raise TypeError(
            f"{where}: its reconcile method {name!r} takes ({', '.join(given)}), but is "
            f"called with the tool's arguments ({', '.join(wanted)})"
        )


def _args_model(fn: Callable[..., Any], name: str) -> type[pydantic.BaseModel]:
    """A pydantic model of a tool method's parameters (after `self`), from its annotations:
    unknown arguments and NaN are refused, as everywhere else in Rig."""
    hints = typing.get_type_hints(fn)
    fields: dict[str, Any] = {}
    extra: typing.Literal["forbid", "allow"] = "forbid"
    for param in list(inspect.signature(fn).parameters.values())[1:]:
        if param.kind is param.VAR_KEYWORD:
            extra = "allow"
            continue
        if param.kind is param.VAR_POSITIONAL:
            continue
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    config = pydantic.ConfigDict(extra=extra, allow_inf_nan=False)
    model: type[pydantic.BaseModel] = pydantic.create_model(
        f"{name}_args", __config__=config, **fields
    )
    return model


def _token(text: str) -> str:
    """`text` as one subject token (a hostname may hold dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


def ledger_owner(host: str | None = None) -> str:
    """This process as a ledger record's owner: `host:pid namespace:pid`, `host` being
    this host's name in the ledger (`RigConfig.hostname`, else the system's). Containers
    may share a host name and not their process ids; only an owner of this host and this
    PID namespace can be judged gone (`_gone`)."""
    return f"{host or socket.gethostname()}:{_pid_namespace()}:{os.getpid()}"


def _pid_namespace() -> str:
    """This process's PID namespace (the inode of `/proc/self/ns/pid`), or "-" where
    there is none to read."""
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return "-"
    return link.removeprefix("pid:[").removesuffix("]") or "-"


def _gone(owner: str, here: str | None = None) -> bool:
    """Whether ledger owner `host:namespace:pid` was a process of this host (`here`) and PID
    namespace that is now gone (or a zombie). Unsure (another host, another namespace, an
    owner without one, a pid that exists) means no: the lease is waited out."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3:
        return False
    host, namespace, pid_text = parts
    if (
        host != (here or socket.gethostname())
        or namespace in ("-", "")
        or namespace != _pid_namespace()
    ):
        return False
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _result(
    call: ToolCall,
    key: str,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    ledger: Literal["hit", "miss"] = "miss",
    tool_ms: float = 0.0,
) -> ToolResult:
    """The report of a call: ok unless there is an error."""
    return ToolResult(
        job_id=call.job_id,
        step=call.step,
        tool=call.tool,
        key=key,
        ok=error is None,
        result=result,
        error=error,
        ledger=ledger,
        tool_ms=tool_ms,
    )


def _failed(
    call: ToolCall, key: str, code: str, message: str, *, ledger: Literal["hit", "miss"] = "miss"
) -> ToolResult:
    return _result(call, key, error={"code": code, "message": message}, ledger=ledger)


def _observe(result: ToolResult) -> None:
    """The metrics of a call's outcome: the call, the tool's run, the ledger's answer."""
    child(TOOL_CALLS, result.tool, "ok" if result.ok else "failed").inc()
    unknown = (result.error or {}).get("code") == "effect_unknown"
    child(LEDGER, result.tool, "unknown" if unknown else result.ledger).inc()
    if result.ledger == "miss" and not unknown:
        child(TOOL_SECONDS, result.tool).observe(result.tool_ms / 1000)
