"""The `Actor` base: connect, consume, ack, dead-letter, drain.

Every Rig process is an `Actor`. A subclass says what it consumes (`inboxes`), what
requests it answers (`endpoints`), and what to do with each message; the base does
the rest, the same way for every kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import json
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue
from opentelemetry.trace import SpanKind

from actors.runtime import tracing as tracing
from actors.runtime.clock import SERVER_CLOCK
from actors.runtime.credentials import makes_topology
from actors.runtime.discovery import start_service
from actors.runtime.faults import armed, crash_point
from actors.runtime.log import MESSAGE_FIELDS, configure_logging
from actors.runtime.metrics import (
    HANDLER_SECONDS,
    MESSAGES,
    PENDING,
    REDELIVERIES,
    REPLIES_REFUSED,
    SCHEDULE_TO_START,
    child,
    serve_metrics,
)
from actors.runtime.nats import (
    OUTAGE_S,
    Publisher,
    api_prefix_of,
    check_topology,
    connect,
    ensure_topology,
    headers_of,
    is_outage,
    jetstream,
    outlasting,
    partitions_made,
    pull_subject,
)
from actors.runtime.settings import RigConfig
from protocols import (
    ActorReady,
    ConfigError,
    DeadLetter,
    Encoding,
    ErrorReply,
    Graph,
    Handled,
    Header,
    Names,
    NonRetryableError,
    ProtocolError,
    RetryableError,
    RigError,
    UnavailableError,
    decode_as,
    encode,
    set_input_limits,
    sniff,
)
from protocols._permissions import Role, answerable

if TYPE_CHECKING:
    from aiohttp import web

log = structlog.get_logger("rig.actor")
T = TypeVar("T")

# The headers of the request an endpoint's responder is answering (its task's own).
REQUEST_HEADERS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "rig_request_headers", default=None
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a message arrived: its subject, headers, encoding, delivery count and place in
    its stream."""

    subject: str
    headers: dict[str, str]
    encoding: Encoding
    attempt: int
    stream_seq: int = 0
    received_at: float = 0.0  # wall clock when this process began handling it
    stored_at: float = 0.0  # the server's clock when its stream stored it (0: unknown)


Handler = Callable[[Any, Delivery], Awaitable[None]]
Responder = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Inbox:
    """One durable pull consumer on the work stream: where to read, what, and who handles it."""

    durable: str
    subject: str
    model: Any
    handler: Handler
    # None: the config's. Timers, which wait by nak-with-delay, lift both limits.
    max_deliver: int | None = None
    max_ack_pending: int | None = None
    # None: the work stream. Another stream (the dead letters) is read without removing.
    stream: str | None = None
    # More filter subjects of the consumer, beside `subject`.
    more_subjects: tuple[str, ...] = ()
    # None: always pull. Else pull only while it says so (a supervisor's partitions).
    wanted: Callable[[], bool] | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A request/reply subject answered in a queue group: the reply is `responder`'s return."""

    subject: str
    model: Any
    responder: Responder


# How often a consumer this process does not pull from now asks whether it should.
_UNWANTED_POLL_S = 0.1
# How long a publish may wait for the server to say it stored the message.
_PUBLISH_TIMEOUT_S = 10.0

# How a pull request ends when all is well: its batch filled, or it expired (408).
_PULL_ENDED_NORMALLY = frozenset({"full", "408"})


class _Pull:
    """The one open pull request of an inbox: how many messages it asked for and got."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.active = False
        self.wanted = self.delivered = 0
        self.status = self.description = ""

    def start(self, wanted: int) -> None:
        self.done.clear()
        self.active, self.wanted, self.delivered = True, wanted, 0
        self.status = self.description = ""

    def delivered_one(self) -> bool:
        """Count a message against the open request; False if no request is open."""
        if not self.active:
            return False
        self.delivered += 1
        if self.delivered >= self.wanted:
            self.end("full")
        return True

    def end(self, status: str, description: str = "") -> None:
        if self.active and not self.done.is_set():
            self.status, self.description = status, description
            self.done.set()

    def finish(self) -> int:
        """Close the request; return the slots it reserved for messages that never came."""
        self.active = False
        return self.wanted - self.delivered


class _Slots:
    """A counting semaphore that can hand out several permits at once (for batch fetches)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._changed = asyncio.Condition()

    async def take_up_to(self, wanted: int) -> int:
        async with self._changed:
            await self._changed.wait_for(lambda: self._free > 0)
            taken = min(wanted, self._free)
            self._free -= taken
            return taken

    def borrow(self, count: int) -> None:
        """Take permits now, even below zero: for messages already in hand."""
        self._free -= count

    async def give_back(self, count: int = 1) -> None:
        async with self._changed:
            self._free += count
            self._changed.notify_all()


class Actor:
    """An independent process that consumes Rig messages from NATS JetStream.

    To write your own kind, subclass one of `Agent`, `ToolExecutor` or `Verifier`
    (they are actors already) and start it with `rig actor run my_module:MyClass`.
    Subclassing `Actor` directly is for new kinds of process:

        class Echo(Actor):
            name = "echo"

            def inboxes(self):
                return [Inbox(durable="echo", subject=self.names.tool("echo"),
                              model=ToolCall, handler=self.on_call)]

            async def on_call(self, call: ToolCall, delivery: Delivery) -> None:
                ...

    What the base does with each message of an inbox:

    - decodes and validates it once (msgpack or JSON, see `protocols.decode_as`);
      one that cannot be decoded is terminated and dead-lettered on `rig.dlq.<durable>`
      with the reason and its original bytes;
    - runs the handler, at most `RIG_CONCURRENCY` handlers at once per process,
      sending in-progress acks every third of the ack wait while it runs (one
      task does this for all handlers);
    - handler returns: ack. Raises `RetryableError(delay=...)`: nak with that delay.
      Raises `NonRetryableError`: terminate and dead-letter. Raises anything else:
      logged, nak'ed with the default delay (it may be transient);
    - a message delivered more than `max_deliver` times is dead-lettered, not retried.

    Durable consumers are shared: start more processes of a class and they split the
    work. On SIGTERM or SIGINT the actor first stops pulling (no new message starts),
    then lets running handlers finish (up to `drain_timeout()`), then closes. It
    reconnects forever if the server goes away, and resumes consuming when it is back.
    """

    name: ClassVar[str] = "actor"
    kind: ClassVar[str] = "actor"  # what `rig ps` calls this kind of process
    # Whether it sends the supervisor messages (reports, commands), which must go to the
    # partitions the deployment splits that work in (`RIG_SUPERVISOR_PARTITIONS`).
    splits_work: ClassVar[bool] = True

    def __init__(self, *, config: RigConfig | None = None) -> None:
        self.config = config or RigConfig.from_env()
        configure_logging(self.config)  # before binding a logger, which fixes its configuration
        set_input_limits(self.config.limits)  # what every message from outside may hold
        self.names = self.config.names
        self.log = structlog.get_logger(f"rig.{self.name}").bind(actor=self.name)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._publisher: Publisher | None = None
        self._stopping = asyncio.Event()
        self._slots = _Slots(self.config.concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._consumer_tasks: list[asyncio.Task[None]] = []
        self._pull_tasks: list[asyncio.Task[None]] = []
        self._batch = self.config.batch
        # Messages being handled (Msg is unhashable: keyed by id), and since when.
        self._holding: dict[int, tuple[Msg, float]] = {}
        # What `rig ps` reports of this process.
        self.counts = {"handled": 0, "retried": 0, "errors": 0, "dead_letters": 0}
        self._service: Subscription | None = None
        self.process = f"{self.name}@{socket.gethostname()}:{os.getpid()}"

    # --- identity ----------------------------------------------------------------

    @classmethod
    def role_name(cls) -> str:
        """The NATS user this class's processes connect as (its seed is
        `$RIG_HOME/creds/<role>.nk`)."""
        return f"{cls.kind}-{cls.name}"

    @classmethod
    def role(cls, names: Names, graphs: list[Graph]) -> Role:
        """What this class's processes may publish and subscribe to, given the graphs of
        the deployment's agents. A new kind of actor says so by overriding this."""
        raise ConfigError(
            f"{cls.__qualname__} declares no NATS permissions: override "
            "`role(names, graphs)` (see protocols._permissions), or run the server "
            "with `rig up --insecure`"
        )

    # --- hooks -----------------------------------------------------------------

    def inboxes(self) -> list[Inbox]:
        """The consumers this actor reads. Called once, after `on_start`."""
        return []

    def endpoints(self) -> list[Endpoint]:
        """The request/reply subjects this actor answers. Called once, after `on_start`."""
        return []

    async def on_start(self) -> None:
        """Runs once connected, before consuming. Raising aborts the start."""

    async def on_stop(self) -> None:
        """Runs once handlers have finished, before the connection drains."""

    def handled(self, delivery: Delivery) -> Handled:
        """This process handled `delivery`, from when it began until now: what a report
        carries so that the journal shows who did the work, and when."""
        ms = max(0.0, (time.time() - delivery.received_at) * 1000)
        return Handled(by=self.process, at=delivery.received_at, ms=round(ms, 3))

    def stats(self) -> dict[str, int]:
        """This process's counters, as `rig ps` shows them."""
        return dict(self.counts)

    # --- what handlers use -----------------------------------------------------

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError(f"{self.name} is not connected yet (call run() first)")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError(f"{self.name} is not connected yet (call run() first)")
        return self._js

    @property
    def publisher(self) -> Publisher:
        """Pipelined JetStream publishes: `await (await publisher.publish(...))`."""
        if self._publisher is None:
            raise RuntimeError(f"{self.name} is not connected yet (call run() first)")
        return self._publisher

    async def publish(
        self,
        subject: str,
        message: Any,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        within: float = OUTAGE_S,
    ) -> None:
        """Publish to a stream and wait for the server to store it (msgpack).

        `msg_id` becomes `Nats-Msg-Id`: the same id published again within the stream's
        duplicate window is stored once. `within`: how long a stream without a leader
        is waited out (`Publisher.stored_all`).
        """
        all_headers = dict(headers or {})
        if msg_id is not None:
            all_headers[Header.MSG_ID] = msg_id
        payload = message if isinstance(message, bytes) else encode(message)
        with _send_span(subject):
            tracing.inject(all_headers)
            try:
                await self.publisher.stored(
                    subject, payload, all_headers, timeout=_PUBLISH_TIMEOUT_S, within=within
                )
            except Exception as exc:
                raise RetryableError(
                    f"publish to {subject} failed: {exc!r}", subject=subject
                ) from exc

    # --- lifecycle ---------------------------------------------------------------

    def stop(self) -> None:
        """Ask the actor to stop: it finishes what it runs, then returns from `run()`."""
        self._stopping.set()

    async def run(self) -> None:
        """Connect, consume until `stop()` or SIGTERM/SIGINT, then drain and return."""
        configure_logging(self.config)
        tracing.start(self.kind)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            self._nc = await connect(
                self.config, name=f"{self.name}@{socket.gethostname()}", role=self.role_name()
            )
        except ConfigError as exc:
            target = f"{type(self).__module__}:{type(self).__qualname__}"
            raise ConfigError(exc.message.replace("MODULE:CLASS", target), **exc.details) from None
        self._js = jetstream(self._nc)
        self._publisher = Publisher(self._nc)
        await self._publisher.start()
        metrics = None
        try:
            # A cluster electing its leaders (all of it just started) answers in seconds:
            # waited out, not an exit.
            await self.patiently(self._find_topology, doing="reading Rig's streams at start")
            if self.config.metrics_port is not None:
                metrics = await self._serve_metrics()
            await self.on_start()
            inboxes = self.inboxes()
            # Every inbox keeps a fetch open at all times, each holding the slots it asked
            # for: share the slots out, or one busy tool would starve another's.
            self._batch = max(
                1, min(self.config.batch, self.config.concurrency // max(1, len(inboxes)))
            )
            for endpoint in self.endpoints():
                await self._serve(endpoint)
            for inbox in inboxes:
                await self.patiently(
                    functools.partial(self._ensure_consumer, inbox), doing="making its consumers"
                )
                self._pull_tasks.append(asyncio.create_task(self._consume(inbox)))
            self._consumer_tasks = [*self._pull_tasks, asyncio.create_task(self._keep_alive())]
            # Findable before it says it is ready: `rig up`'s ready means `rig ps`
            # lists every process.
            self._service = await start_service(
                self.nc,
                self.names,
                kind=self.kind,
                serves=_serves(self.names, inboxes),
                cls=f"{type(self).__module__}:{type(self).__qualname__}",
                counts=self.stats,
            )
            await self._announce(inboxes)
            await self._stopping.wait()
            self.log.info("actor.stopping", running=len(self._running))
            with contextlib.suppress(Exception):  # a stopping process is not a live one
                await self._service.unsubscribe()
            # Stop taking work before draining: an open pull would go on delivering (and
            # a loop waiting for a free slot would pull again) while handlers finish, and
            # what arrived late would be cut off mid-way. What was pulled but not started
            # is redelivered elsewhere after the ack wait.
            for task in self._pull_tasks:
                task.cancel()
            await asyncio.gather(*self._pull_tasks, return_exceptions=True)
            await self._drain_handlers()
            await self.on_stop()
        finally:
            for task in self._consumer_tasks:
                task.cancel()
            await asyncio.gather(*self._consumer_tasks, return_exceptions=True)
            # Handlers are done and their acks written: flush them out, then close. (A
            # drain would wait on the cancelled pull subscriptions' queues.)
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=5)
            with contextlib.suppress(Exception):
                await self.nc.close()
            if metrics is not None:
                await metrics.cleanup()
            await asyncio.to_thread(tracing.stop)  # what is buffered goes out
            self.log.info("actor.stopped")

    async def patiently(self, attempt: Callable[[], Awaitable[T]], *, doing: str) -> T:
        """`attempt()`, waited out while the servers are away or a cluster elects its
        leaders (up to `OUTAGE_S`): what a starting actor asks of JetStream (its streams,
        its consumers, and in `on_start` its buckets and what it writes of itself) goes
        through here, so that an actor started during an election waits for it rather
        than exiting. `attempt` runs again, so it must be safe to repeat."""
        return await outlasting(attempt, doing=doing, waiting=self._waits)

    async def bucket(self, name: str) -> KeyValue:
        """The key-value bucket `name`, opened patiently (see `patiently`)."""
        return await self.patiently(
            functools.partial(self.js.key_value, name), doing=f"opening the bucket {name}"
        )

    def _waits(self, exc: BaseException) -> None:
        """Say why a starting actor is not ready yet: the servers are away, or a cluster
        elects its leaders (it waits that out, up to `OUTAGE_S` for each request)."""
        self.log.warning(
            "start.waiting", reason="the servers are away or leaderless", error=repr(exc)
        )

    async def _find_topology(self) -> None:
        """Rig's streams and buckets (made, if this role may), and the deployment's split
        of the supervisor's work."""
        # Told a split (not taking the deployment's): it must be the deployment's.
        told = self.splits_work and "RIG_SUPERVISOR_PARTITIONS" in self.config.given
        js = self.js
        if makes_topology(self.config, self.role_name()):
            await ensure_topology(js, self.names, self.config.replicas, checks_split=told)
        else:
            await check_topology(js, self.names, checks_split=told)
        made = partitions_made(await js.stream_info(self.names.work_stream))
        if made != self.names.partitions:  # the deployment's split, not asked for here
            self.names = dataclasses.replace(self.names, partitions=made)
            self.config = dataclasses.replace(self.config, names=self.names)

    async def _serve_metrics(self) -> web.AppRunner | None:
        """/metrics on the configured port; a port it cannot bind is logged, not fatal:
        the actor's work matters more than its metrics."""
        host, port = self.config.metrics_host, self.config.metrics_port
        assert port is not None
        try:
            runner = await serve_metrics(host, port)
        except OSError as exc:
            self.log.error("metrics.unavailable", host=host, port=port, error=str(exc))
            return None
        self.log.info("metrics.serving", url=f"http://{host}:{port}/metrics")
        return runner

    async def _announce(self, inboxes: list[Inbox]) -> None:
        ready = ActorReady(
            actor=self.name,
            cls=f"{type(self).__module__}:{type(self).__qualname__}",
            pid=os.getpid(),
            host=socket.gethostname(),
            subjects=[inbox.subject for inbox in inboxes],
        )
        await self.nc.publish(self.names.actor_ready, encode(ready))
        await self.nc.flush(timeout=5)
        self.log.info("actor.ready", pid=ready.pid, subjects=ready.subjects)

    def drain_timeout(self) -> float:
        """How long running handlers may take to finish after SIGTERM before they are
        cancelled (and their messages redelivered elsewhere)."""
        return self.config.drain_timeout

    async def _drain_handlers(self) -> None:
        if not self._running:
            return
        _done, pending = await asyncio.wait(set(self._running), timeout=self.drain_timeout())
        for task in pending:
            task.cancel()  # unacked: JetStream redelivers the message to another instance
        if pending:
            self.log.warning("actor.drain_timeout", cancelled=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    # --- consuming ---------------------------------------------------------------

    async def _ensure_consumer(self, inbox: Inbox) -> None:
        subjects = [inbox.subject, *inbox.more_subjects]
        config = ConsumerConfig(
            durable_name=inbox.durable,
            filter_subject=inbox.subject if len(subjects) == 1 else None,
            filter_subjects=subjects if len(subjects) > 1 else None,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.config.ack_wait,
            # Unlimited on the server: the actor itself dead-letters a message past
            # `max_deliver`, so that it is never silently parked by the server.
            max_deliver=-1,
            max_ack_pending=inbox.max_ack_pending or max(1000, self.config.concurrency * 4),
        )
        await self.js.add_consumer(inbox.stream or self.names.work_stream, config=config)

    async def _consume(self, inbox: Inbox) -> None:
        """Pull in batches no larger than the free handler slots, one request at a time.

        Messages arrive on a callback subscription rather than through nats-py's
        `fetch()`, which spends two tasks and a `wait_for` on every message. One pull
        request is open at a time: it lingers for `fetch_timeout` and takes every message
        that arrives meanwhile, up to its batch; it ends when the batch is full, when the
        server answers with a status (408 expired, 409 ...), or at a client-side
        deadline (a request lost with a broken connection).
        """
        pull = _Pull()

        async def on_message(msg: Msg) -> None:
            status = msg.headers.get("Status") if msg.headers else None
            if status is not None:
                if status != "100":  # 100 is an idle heartbeat; anything else ends the pull
                    pull.end(status, msg.headers.get("Description", "") if msg.headers else "")
                return
            if not pull.delivered_one():
                self._slots.borrow(1)  # a late message for a pull already given up
            task = asyncio.create_task(self._process(inbox, msg))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

        reply = self.nc.new_inbox()
        sub = await self.nc.subscribe(reply, cb=on_message)
        request_subject = pull_subject(
            inbox.stream or self.names.work_stream, inbox.durable, api_prefix_of(self.nc)
        )
        expires_ns = int(self.config.fetch_timeout * 1e9)
        failures = 0
        try:
            while not self._stopping.is_set():
                if inbox.wanted is not None and not inbox.wanted():
                    with contextlib.suppress(TimeoutError):  # not this process's, for now
                        await asyncio.wait_for(self._stopping.wait(), _UNWANTED_POLL_S)
                    continue
                taken = await self._slots.take_up_to(self._batch)
                pull.start(taken)
                try:
                    await self.nc.publish(
                        request_subject,
                        json.dumps({"batch": taken, "expires": expires_ns}).encode(),
                        reply=reply,
                    )
                    await asyncio.wait_for(pull.done.wait(), self.config.fetch_timeout + 2)
                except TimeoutError:
                    pull.end("timeout", "no answer to the pull request")
                except Exception as exc:  # the connection is down or closing
                    pull.end("error", repr(exc))
                finally:
                    await self._slots.give_back(pull.finish())
                if pull.status in _PULL_ENDED_NORMALLY:
                    failures = 0
                    continue
                # A status the server does not send in normal operation (a 409 when the
                # consumer was deleted, a lost request while the connection was down).
                failures += 1
                self.log.warning(
                    "consume.error",
                    durable=inbox.durable,
                    failures=failures,
                    status=pull.status,
                    description=pull.description,
                )
                if pull.status == "409" and "consumer" in pull.description.lower():
                    with contextlib.suppress(Exception):
                        await self._ensure_consumer(inbox)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=min(0.1 * failures, 2.0))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _process(self, inbox: Inbox, msg: Msg) -> None:
        received = time.time()
        headers = headers_of(msg)
        metadata = msg.metadata
        attempt = metadata.num_delivered or 1
        # This task's own (it runs one message): gone with the task, nothing to clear.
        fields: dict[str, Any] = {"actor": self.name, "subject": msg.subject, "attempt": attempt}
        MESSAGE_FIELDS.set(fields)
        try:
            if attempt > (inbox.max_deliver or self.config.max_deliver):
                await self._dead_letter(
                    inbox,
                    msg,
                    headers,
                    NonRetryableError(
                        f"delivered {attempt} times without success", attempt=attempt
                    ),
                    attempt,
                )
                return
            try:
                message, encoding = decode_as(inbox.model, msg.data, headers)
            except ProtocolError as exc:
                await self._dead_letter(inbox, msg, headers, exc, attempt)
                return
            fields["job_id"] = getattr(message, "job_id", None)
            fields["step"] = getattr(message, "step", None)
            stored = metadata.timestamp.timestamp() if metadata.timestamp is not None else 0.0
            _observe_arrival(inbox.durable, metadata, received, stored, attempt)
            delivery = Delivery(
                msg.subject, headers, encoding, attempt, metadata.sequence.stream, received, stored
            )
            with _process_span(inbox, delivery, self.process):
                await self._run_handler(inbox, msg, message, delivery, headers, attempt)
        except Exception as exc:  # the message stays unacked and is redelivered
            self.log.exception("handler.crashed", error=repr(exc))
        finally:
            await self._slots.give_back()

    async def _run_handler(
        self,
        inbox: Inbox,
        msg: Msg,
        message: Any,
        delivery: Delivery,
        headers: dict[str, str],
        attempt: int,
    ) -> None:
        started = time.monotonic()
        self._holding[id(msg)] = (msg, started)
        try:
            await self._through_outages(inbox, message, delivery)
        except RetryableError as exc:
            if attempt >= (inbox.max_deliver or self.config.max_deliver):
                await self._dead_letter(inbox, msg, headers, exc, attempt)
                return
            # A timer waiting for its time is routine; anything else is worth a line.
            say = self.log.debug if exc.details.get("routine") else self.log.info
            say("handler.retry", reason=exc.message, delay=exc.delay)
            if not exc.details.get("routine"):
                self.counts["retried"] += 1
                child(MESSAGES, inbox.durable, "retried").inc()
            await msg.nak(delay=exc.delay)
            return
        except NonRetryableError as exc:
            await self._dead_letter(inbox, msg, headers, exc, attempt)
            return
        except Exception as exc:
            if attempt >= (inbox.max_deliver or self.config.max_deliver):
                await self._dead_letter(inbox, msg, headers, exc, attempt)
                return
            self.log.exception("handler.failed", error=repr(exc))
            self.counts["errors"] += 1
            child(MESSAGES, inbox.durable, "failed").inc()
            await msg.nak(delay=self.config.nak_delay)
            return
        finally:
            del self._holding[id(msg)]
            child(HANDLER_SECONDS, inbox.durable).observe(time.monotonic() - started)
        await msg.ack()
        self.counts["handled"] += 1
        child(MESSAGES, inbox.durable, "ok").inc()
        self.log.debug("message.handled", ms=round((time.monotonic() - started) * 1000, 3))
        if armed("after_ack"):  # fault injection: die once the server has the ack
            await self.nc.flush(timeout=5)
            crash_point("after_ack")

    async def _through_outages(self, inbox: Inbox, message: Any, delivery: Delivery) -> None:
        """Run the handler; while it fails because the servers are away or a stream has
        no leader (`is_outage`: seconds, in a cluster that lost a server), run it again
        here, backing off, for up to `OUTAGE_S`, holding the message (in-progress acks)
        rather than spending its deliveries: an outage says nothing about the message.
        Handlers are idempotent, as a redelivery requires."""
        deadline = time.monotonic() + OUTAGE_S
        pause = 0.25
        while True:
            try:
                await inbox.handler(message, delivery)
                return
            except Exception as exc:
                late = time.monotonic() + pause > deadline
                if late or self._stopping.is_set() or not is_outage(exc):
                    raise
                self.log.info("handler.outage", error=repr(exc), retry_in=pause)
                child(MESSAGES, inbox.durable, "outage").inc()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 4.0)

    async def _keep_alive(self) -> None:
        """One task for all handlers: in-progress acks for every message held over a third
        of the ack wait, so JetStream does not redeliver work that is still running.
        """
        interval = max(self.config.ack_wait / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            due = time.monotonic() - interval
            for msg, started in list(self._holding.values()):
                if started <= due:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    async def _dead_letter(
        self, inbox: Inbox, msg: Msg, headers: dict[str, str], exc: Exception, attempt: int
    ) -> None:
        """Store the message with the reason on `rig.dlq.<durable>`, then terminate it.

        If the dead letter cannot be stored the message is nak'ed instead: it is never
        dropped without a trace.
        """
        error = (
            exc.to_dict()
            if isinstance(exc, RigError)
            else {"code": "internal_error", "message": repr(exc)}
        )
        letter = DeadLetter(
            actor=inbox.durable,
            subject=msg.subject,
            reason=error["message"],
            error=error,
            data=msg.data,
            headers=headers,
            deliveries=attempt,
        )
        self.log.warning("message.dead_lettered", reason=letter.reason, code=error["code"])
        self.counts["dead_letters"] += 1
        child(MESSAGES, inbox.durable, "dead_lettered").inc()
        try:
            # One dead letter per stored message, even if this actor dies before `term`
            # and the message comes back.
            letter_id = f"dlq:{inbox.durable}:{msg.metadata.sequence.stream}"
            await self.js.publish(
                self.names.dlq(inbox.durable), encode(letter), headers={Header.MSG_ID: letter_id}
            )
        except Exception as publish_error:
            self.log.error("dlq.publish_failed", error=repr(publish_error))
            await msg.nak(delay=self.config.nak_delay)
            return
        await msg.term()

    # --- request/reply -----------------------------------------------------------

    async def _serve(self, endpoint: Endpoint) -> None:
        limit = asyncio.Semaphore(self.config.concurrency)

        async def on_request(msg: Msg) -> None:
            # One callback runs at a time per subscription: hand off to a task, but
            # wait for a permit first, so a flood of requests queues in NATS, not here.
            await limit.acquire()
            task = asyncio.create_task(self._answer(endpoint, msg))
            task.add_done_callback(lambda _t: limit.release())
            self._running.add(task)
            task.add_done_callback(self._running.discard)

        await self.nc.subscribe(endpoint.subject, queue=self.names.api_queue, cb=on_request)

    def _unexpected(self, endpoint: Endpoint, exc: Exception) -> dict[str, Any]:
        """The error reply for what a responder did not raise on purpose: an outage of
        the servers (a cluster electing a leader) is `unavailable`, which the caller may
        ask again; anything else is a bug of ours, logged with its traceback."""
        if is_outage(exc):
            self.log.info("endpoint.outage", subject=endpoint.subject, error=repr(exc))
            return UnavailableError(
                f"the NATS servers could not serve this just now ({exc!r}); ask again"
            ).to_dict()
        self.log.exception("endpoint.failed", subject=endpoint.subject)
        return {"code": "internal_error", "message": repr(exc)}

    async def _answer(self, endpoint: Endpoint, msg: Msg) -> None:
        if msg.reply and not answerable(msg.reply):
            # Neither carried out nor answered: the answer would be written, with this
            # process's rights, wherever the requester pointed it.
            self.log.warning("endpoint.reply_refused", subject=endpoint.subject, reply=msg.reply)
            self.counts["replies_refused"] = self.counts.get("replies_refused", 0) + 1
            child(REPLIES_REFUSED, endpoint.subject).inc()
            return
        headers = headers_of(msg)
        encoding = _reply_encoding(msg.data, headers)
        REQUEST_HEADERS.set(headers)  # this task's: what a responder may want of them
        try:
            request, encoding = decode_as(endpoint.model, msg.data, headers)
            reply: Any = await endpoint.responder(request)
        except RigError as exc:
            reply = ErrorReply(error=exc.to_dict())
        except Exception as exc:
            reply = ErrorReply(error=self._unexpected(endpoint, exc))
        if not msg.reply:
            return
        try:
            await self.nc.publish(
                msg.reply, encode(reply, encoding), headers=encoding.headers or None
            )
        except Exception as exc:
            self.log.warning("endpoint.reply_failed", error=repr(exc))


def _serves(names: Names, inboxes: list[Inbox]) -> list[str]:
    """The agents, tools or verifiers whose work these inboxes read."""
    served = []
    work = f"{names.prefix}.work."
    for inbox in inboxes:
        kind, _, name = inbox.subject.removeprefix(work).partition(".")
        if inbox.subject.startswith(work) and kind in ("agent", "tool", "verify") and name:
            served.append(name)
    return served


def _reply_encoding(data: bytes, headers: dict[str, str]) -> Encoding:
    """The encoding to answer in, decided before (and whether or not) the request decodes.

    The header decides when there is one. Otherwise a body that is UTF-8 text gets
    JSON (someone typing at the `nats` CLI can read the error); a msgpack map never
    is valid UTF-8, since its first byte is 0x80-0x8f, 0xde or 0xdf.
    """
    try:
        if Header.CONTENT_TYPE in headers:
            return sniff(data, headers)
    except ProtocolError:
        pass
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return Encoding.MSGPACK
    return Encoding.JSON


def _observe_arrival(
    consumer: str, metadata: Any, received: float, stored: float, attempt: int
) -> None:
    """The metrics of a message's arrival (its JetStream metadata): its wait in the
    inbox, the inbox's size, and whether it came again; a first delivery also tells this
    process's clock from the servers' (`stored`: when its stream stored it, 0 unknown)."""
    if stored:
        child(SCHEDULE_TO_START, consumer).observe(max(0.0, received - stored))
        if attempt == 1:
            SERVER_CLOCK.observe(received, stored)
    if metadata.num_pending is not None:
        child(PENDING, consumer).set(metadata.num_pending)
    if attempt > 1:
        child(REDELIVERIES, consumer).inc()


def _send_span(subject: str) -> contextlib.AbstractContextManager[Any]:
    """A PRODUCER span around a publish (nothing when traces are off)."""
    if not tracing.enabled():
        return contextlib.nullcontext()
    return tracing.span(
        f"send {subject}", kind=SpanKind.PRODUCER, attributes=_messaging(subject, "send")
    )


def _process_span(
    inbox: Inbox, delivery: Delivery, process: str
) -> contextlib.AbstractContextManager[Any]:
    """A CONSUMER span around a handler, continuing the trace the message carries."""
    if not tracing.enabled():
        return contextlib.nullcontext()
    attributes = _messaging(delivery.subject, "process") | {
        "rig.process": process,
        "messaging.consumer.group.name": inbox.durable,
        "messaging.message.id": delivery.headers.get(Header.MSG_ID, ""),
        "rig.message.delivery_count": delivery.attempt,
    }
    return tracing.span(
        f"process {delivery.subject}",
        parent=tracing.extract(delivery.headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


def _messaging(subject: str, operation: str) -> dict[str, Any]:
    """The OpenTelemetry messaging attributes of a send or a process of `subject`."""
    return {
        "messaging.system": "nats",
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,
        "messaging.destination.name": subject,
    }
