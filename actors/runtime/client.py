"""`RigClient`: submit jobs, read their status, follow their journal. Used by the CLI.

async with await RigClient.connect() as rig:
    job = await rig.submit("refund", {"order_id": "A-1001", "amount": 25})
    info = await rig.wait(job.job_id, timeout=60)

Every method raises Rig's typed errors (`protocols.RigError` and its subclasses): a bad
argument is a `SchemaError` or `InvalidNameError` before anything is sent, by the same
validation the supervisor applies to a request from any other client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, TypeVar

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from pydantic import BaseModel

from actors.runtime import tracing as tracing
from actors.runtime.credentials import CLIENT, makes_topology
from actors.runtime.discovery import LISTEN_S, LiveActor, discover
from actors.runtime.nats import (
    closing,
    connect,
    ensure_topology,
    jetstream,
    kv_latest,
    kv_read,
    live_agents,
    outlasting,
)
from actors.runtime.results import resolved
from actors.runtime.settings import RigConfig
from protocols import (
    TERMINAL_STATUSES,
    AgentInfo,
    BreakerState,
    CancelRequest,
    DeadLetter,
    Escalation,
    Event,
    Header,
    InboxReply,
    InboxRequest,
    JobEntry,
    JobInfo,
    JobSnapshot,
    Names,
    PayloadTooLargeError,
    ResolveRequest,
    RigConnectionError,
    RigError,
    SignalRequest,
    StatusRequest,
    SubmitReply,
    SubmitRequest,
    ThreadRecord,
    ToolEntry,
    UnavailableError,
    UnknownThreadError,
    WebhookRecord,
    breaker_key,
    check_token,
    decode,
    decode_as,
    encode,
    error_from_dict,
    model_count_of,
    set_input_limits,
    validate,
)
from protocols._http import HttpProvider
from protocols._schedules import ScheduleReply, ScheduleRequest

R = TypeVar("R", bound=BaseModel)

# Statuses after which waiting longer is pointless for a caller: terminal, or parked
# until a person acts.
SETTLED_STATUSES = TERMINAL_STATUSES | {"waiting_human"}
# Snapshots a listing reads at once (a page's).
_READS_AT_ONCE = 32
# Events of a job tree waiting to be read (`tree_events`): its journals pause beyond it.
_TREE_QUEUE = 1000


# How long a request that finds no supervisor is asked again (while the supervisors
# reconnect to a server that just restarted) before it says no supervisor answers.
NO_RESPONDERS_WAIT_S = 5.0


class RigClient:
    """A connection to a Rig deployment, for programs and the `rig` CLI.

    Requests go to `rig.api.*` (answered by any supervisor); the journal is read from the
    `RIG_EVENTS` stream, dead letters from `RIG_DLQ`, agents from `RIG_AGENTS`. Errors
    are typed: `UnknownJobError`, `UnknownAgentError`, `JobStateError`,
    `JobConflictError`, `SchemaError` (a bad argument), `RigConnectionError` (no server,
    or no supervisor answers within `NO_RESPONDERS_WAIT_S`: a request that finds none is
    asked again meanwhile, as supervisors reconnect after a server restart),
    `UnavailableError` (the servers stayed away or leaderless past `outage_patience`
    seconds, during which a submit is asked again by itself).
    """

    def __init__(
        self,
        nc: Client,
        config: RigConfig,
        *,
        request_timeout: float = 10.0,
        outage_patience: float = 30.0,
        makes_topology: bool = True,
    ) -> None:
        self.nc = nc
        self.js = jetstream(nc)
        self.config = config
        self.names = config.names
        self.request_timeout = request_timeout
        self.outage_patience = outage_patience
        self._makes_topology = makes_topology

    @classmethod
    async def connect(
        cls,
        config: RigConfig | None = None,
        *,
        role: str = CLIENT,
        notices: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> RigClient:
        """Connect as `role` (`client`; `admin` for dead letters and the ledger's tools):
        with its credentials under `$RIG_HOME/creds` if there are any, or `RIG_CREDS`.
        `notices` is told when the connection is lost and when it is back."""
        config = config or RigConfig.from_env()
        set_input_limits(config.limits)  # checked here first, as the server will
        nc = await connect(config, name="rig-client", log_events=False, role=role, notices=notices)
        kwargs.setdefault("makes_topology", makes_topology(config, role))
        return cls(nc, config, **kwargs)

    async def _topology(self) -> None:
        """Make missing streams and buckets, where this connection may (`makes_topology`)."""
        if self._makes_topology:
            await outlasting(
                lambda: ensure_topology(self.js, self.names, self.config.replicas),
                within=self.outage_patience,
                doing="checking Rig's streams and buckets",
            )

    async def __aenter__(self) -> RigClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Flush what was sent, then close. (Not a drain: a drain waits on subscriptions
        whose messages nobody will read, such as a journal left half-read.)"""
        token = closing.set(True)  # its "disconnected" is no news
        try:
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=5)
            with contextlib.suppress(Exception):
                await self.nc.close()
        finally:
            closing.reset(token)

    async def submit(
        self,
        agent: str,
        input: dict[str, Any],
        *,
        job_id: str | None = None,
        webhook: str | None = None,
        seed: int | None = None,
        cache: bool = True,
        labels: dict[str, str] | None = None,
        thread: str | None = None,
        thread_busy: str | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        priority: int = 0,
        **limits: Any,
    ) -> SubmitReply:
        """Start a job; returns once the job is durably stored.

        `limits` override the agent's budget: `max_steps`, `max_tokens`, `max_cost`,
        `deadline_s`, `max_visits`, `max_reasks`. `webhook`: a url that gets a signed
        POST when the job ends or waits for a person (delivered by `rig gateway`).
        `seed` goes with every model call of the job; `cache=False` keeps the response
        cache out of them (`Sampling`). `labels`: short strings kept with the job.
        `thread`: the conversation the job is a turn of (`thread_busy`: `wait`, the
        default, or `refuse` while another turn runs).
        """
        fields = {"agent": agent, "input": input, "job_id": job_id, **limits}
        if labels is not None:
            fields["labels"] = labels
        if thread is not None:
            fields["thread"] = thread
        if concurrency_key is not None:
            fields["concurrency_key"] = concurrency_key
        if concurrency_limit is not None:
            fields["concurrency_limit"] = concurrency_limit
        if priority:
            fields["priority"] = priority
        if thread_busy is not None:
            fields["thread_busy"] = thread_busy
        if webhook is not None:
            fields["webhook"] = {"url": webhook}
        if seed is not None or not cache:
            fields["sampling"] = {"seed": seed, "cache": cache}
        request = validate(SubmitRequest, fields)
        give_up = time.monotonic() + self.outage_patience
        while True:
            try:
                return await self._request(self.names.api_submit, request, SubmitReply)
            except UnavailableError as exc:
                # A cluster electing a leader: seconds. The same job id is the same job.
                pause = min(float(exc.details.get("retry_after", 1.0)), give_up - time.monotonic())
                if pause <= 0:
                    raise
                request = request.model_copy(
                    update={"job_id": exc.details.get("job_id") or request.job_id}
                )
                await asyncio.sleep(pause)

    async def status(self, job_id: str) -> JobInfo:
        request = validate(StatusRequest, {"job_id": job_id})
        return await self._request(self.names.api_status, request, JobInfo)

    async def resolve(
        self,
        job_id: str,
        edge: str,
        *,
        args: dict[str, Any] | None = None,
        note: str = "",
        by: str = "",
        step: int | None = None,
        resolve_id: str | None = None,
        **limits: Any,
    ) -> JobInfo:
        """Take `edge` for a job waiting for a human; `limits` may extend its budget.

        `step`: the step of the wait the person was shown (an inbox entry's); once the job
        has left it the resolve is refused (`JobMovedError`) rather than applied to a later
        wait. `resolve_id` names this resolve (a new one by default): asked again, one that
        was carried out is answered again, never applied twice."""
        fields = {
            "job_id": job_id,
            "edge": edge,
            "args": args or {},
            "note": note,
            "by": by,
            "step": step,
            "resolve_id": resolve_id or uuid.uuid4().hex,
        }
        request = validate(ResolveRequest, {**fields, **limits})
        return await self._request(self.names.api_resolve, request, JobInfo)

    async def signal(
        self,
        job_id: str,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        by: str = "",
        signal_id: str | None = None,
    ) -> JobInfo:
        """Deliver signal `name` with `data` to a job waiting for it (a state with
        `wait_for=name`); a job not waiting for it is a `JobStateError`, data that does
        not fit the state's `payload` a `SchemaError`. `signal_id` names this signal (a
        new one by default): sent again, one delivered already is answered, not
        delivered twice."""
        fields = {
            "job_id": job_id,
            "name": name,
            "data": data or {},
            "by": by,
            "signal_id": signal_id or uuid.uuid4().hex,
        }
        request = validate(SignalRequest, fields)
        return await self._request(self.names.api_signal, request, JobInfo)

    async def cancel(self, job_id: str, *, reason: str = "") -> JobInfo:
        """End a job that is not terminal as `cancelled`."""
        request = validate(CancelRequest, {"job_id": job_id, "reason": reason})
        return await self._request(self.names.api_cancel, request, JobInfo)

    async def inbox(self, agent: str | None = None) -> list[Escalation]:
        """The jobs waiting for a person, oldest first."""
        request = validate(InboxRequest, {"agent": agent})
        reply = await self._request(self.names.api_inbox, request, InboxReply)
        return reply.jobs

    async def jobs(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        parent: str | None = None,
    ) -> list[JobInfo]:
        """Jobs, newest first (by creation, then id): of `agent` only, in `status` only
        (`active`: not terminal), created before `before` (the `(created_at, job_id)` of
        the last job of the previous page) only, started by job `parent` only.

        Reads the index (`RIG_JOB_INDEX`, a small entry per job kept: the server picks an
        agent's), then the snapshots of the page's jobs only. Ended jobs are kept for
        `RIG_RETENTION` (a week by default).
        """
        page = await self.job_page(
            agent=agent, status=status, limit=limit, before=before, parent=parent
        )
        return page[0]

    async def job_page(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        parent: str | None = None,
    ) -> tuple[list[JobInfo], Counter[str]]:
        """`jobs`, and every job kept (of `agent`, of `parent`) counted by status, from the
        same pass."""
        if agent is not None:
            check_token(agent, what="agent name")
        await self._topology()
        found: list[JobEntry] = []
        counts: Counter[str] = Counter()
        async for _key, data in kv_latest(
            self.js,
            self.names.index_bucket,
            self.names.index_key(agent, "*") if agent is not None else ">",
            timeout=self.request_timeout,
        ):
            entry = decode_as(JobEntry, data)[0]
            if parent is not None and entry.parent != parent:
                continue
            counts[entry.status] += 1
            wanted = (
                status is None
                or entry.status == status
                or (status == "active" and entry.status not in TERMINAL_STATUSES)
            )
            if before is not None and (entry.created_at, entry.job_id) >= before:
                continue
            if wanted:
                found.append(entry)
        found.sort(key=lambda entry: (entry.created_at, entry.job_id), reverse=True)
        jobs = await self._snapshots([entry.job_id for entry in found[:limit]])
        return [job.info() for job in jobs], counts

    async def _snapshots(self, job_ids: list[str]) -> list[JobSnapshot]:
        """The snapshots of these jobs, in order; a job gone meanwhile (expired) left out."""
        jobs = await self.js.key_value(self.names.jobs_bucket)
        room = asyncio.Semaphore(_READS_AT_ONCE)

        async def read(job_id: str) -> bytes:
            async with room, asyncio.timeout(self.request_timeout):
                return (await kv_read(jobs, job_id))[0]

        found = await asyncio.gather(*(read(job_id) for job_id in job_ids))
        return [decode_as(JobSnapshot, data)[0] for data in found if data]

    async def actors(self, *, listen: float = LISTEN_S) -> list[LiveActor]:
        """The deployment's live actor processes, as they answer `rig ps`'s ask."""
        return await discover(self.nc, self.names, listen=listen)

    async def providers(self) -> list[HttpProvider]:
        """Every model provider and model the live agents called or a breaker knows: its
        breaker's state, and the calls' counters summed over the live agent processes."""
        await self._topology()
        totals: dict[tuple[str, str], Counter[str]] = {}
        for actor in await self.actors():
            for name, value in actor.counts.items():
                if (parts := model_count_of(name)) is not None:
                    provider, model, what = parts
                    total = totals.setdefault((provider, model), Counter())
                    total[what] += value
                    total[f"agents.{actor.id}"] = 1
        breakers: dict[str, BreakerState] = {}
        async for key, data in kv_latest(
            self.js, self.names.breakers_bucket, timeout=self.request_timeout
        ):
            breakers[key] = decode_as(BreakerState, data)[0]
        for key in set(breakers) - {breaker_key(*pair) for pair in totals}:
            provider, _, model = key.partition(".")  # a breaker no live agent has called
            totals[(provider, model)] = Counter()
        found = []
        for (provider, model), total in sorted(totals.items()):
            breaker = breakers.get(breaker_key(provider, model), BreakerState())
            found.append(
                HttpProvider(
                    provider=provider,
                    model=model,
                    breaker=breaker.state,
                    opened=breaker.failures,
                    calls=total["calls"],
                    failed=total["failed"],
                    ms=total["ms"],
                    agents=sum(1 for what in total if what.startswith("agents.")),
                )
            )
        return found

    async def webhooks(self, *, job_id: str | None = None) -> list[WebhookRecord]:
        """What became of every webhook (of `job_id`), newest first."""
        await self._topology()
        return await webhook_records(
            self.js, self.names, job_id=job_id, timeout=self.request_timeout
        )

    async def dead_letters(self, *, limit: int = 100) -> list[tuple[int, DeadLetter]]:
        """The newest `limit` dead letters, oldest first, with their id (the DLQ sequence)."""
        await self._topology()
        info = await self.js.stream_info(self.names.dlq_stream)
        first, last = info.state.first_seq, info.state.last_seq
        found: list[tuple[int, DeadLetter]] = []
        seq = last
        while seq >= first and seq > 0 and len(found) < limit:
            with contextlib.suppress(NotFoundError):  # a replayed (deleted) letter
                raw = await self.js.get_msg(self.names.dlq_stream, seq)
                if raw.data:
                    found.append((seq, decode_as(DeadLetter, raw.data)[0]))
            seq -= 1
        return found[::-1]

    async def replay(self, letter_id: int, *, keep: bool = False) -> DeadLetter:
        """Publish a dead letter's original message to its subject again; drop the letter
        unless `keep`. The message gets a new `Nats-Msg-Id`, so deduplication lets it in.
        """
        try:
            raw = await self.js.get_msg(self.names.dlq_stream, letter_id)
        except NotFoundError:
            raise RigError(f"no dead letter {letter_id}", letter_id=letter_id) from None
        letter = decode_as(DeadLetter, raw.data or b"")[0]
        headers = dict(letter.headers)
        original = headers.pop(Header.MSG_ID, None)
        if original is not None:
            headers[Header.MSG_ID] = f"{original}:replay:{letter_id}"
        await self.js.publish(letter.subject, letter.data, headers=headers or None)
        if not keep:
            await self.js.delete_msg(self.names.dlq_stream, letter_id)
        return letter

    async def agents(self) -> list[AgentInfo]:
        """The agents that have registered, by name."""
        # In one pass (`kv_latest`): a KV watcher (`keys()`) may report the end of the
        # stored keys before their first arrives, and an agent that is there looks absent
        # (nats.py #842; seen under load).
        try:
            found = [data async for _key, data in kv_latest(self.js, self.names.agents_bucket)]
        except (BucketNotFoundError, NotFoundError):
            return []
        infos = [decode_as(AgentInfo, data)[0] for data in found]
        return sorted(infos, key=lambda info: info.name)

    async def thread(self, thread: str) -> ThreadRecord:
        """A thread: the turn that runs, those waiting, and the ended turns it keeps."""
        check_token(thread, what="thread id")
        try:
            kv = await self.js.key_value(self.names.threads_bucket)
            entry = await kv.get(thread)
        except (BucketNotFoundError, NotFoundError, KeyNotFoundError):
            raise UnknownThreadError(f"no thread {thread!r}", thread=thread) from None
        if not entry.value:
            raise UnknownThreadError(f"no thread {thread!r}", thread=thread)
        return decode_as(ThreadRecord, entry.value)[0]

    async def schedule(
        self, op: str, name: str | None = None, spec: dict[str, Any] | None = None
    ) -> ScheduleReply:
        """One operation on the schedules (`rig.api.schedule`): `add` (with `spec`, a
        `ScheduleSpec`'s fields), `get`, `list`, `pause`, `resume`, `delete` or
        `trigger` (a job now, whatever the clock says)."""
        fields: dict[str, Any] = {"op": op}
        if name is not None:
            fields["name"] = name
        if spec is not None:
            fields["spec"] = spec
        request = validate(ScheduleRequest, fields)
        return await self._request(self.names.api_schedule, request, ScheduleReply)

    async def catalog(self) -> list[ToolEntry]:
        """The tools the deployment's executors serve (`RIG_TOOLS`), by executor and tool."""
        try:
            found = [data async for _key, data in kv_latest(self.js, self.names.tools_bucket)]
        except (BucketNotFoundError, NotFoundError):
            return []
        entries = [decode_as(ToolEntry, data)[0] for data in found]
        return sorted(entries, key=lambda entry: (entry.executor, entry.tool))

    async def live_agents(self) -> dict[str, int]:
        """How many live processes each agent has (agents with none are left out)."""
        await self._topology()
        return await live_agents(self.js, self.names)

    async def events(
        self, job_id: str, *, timeout: float | None = None, until_parked: bool = False
    ) -> AsyncIterator[Event]:
        """The job's journal from its first event, each event once (by `seq`); stops after
        the terminal status event, or, with `until_parked`, after a `waiting_human` status
        event that is the newest event of the journal (a job parked now, not one a person
        resolved since).

        Raises `TimeoutError` if `timeout` seconds pass before then.
        """
        subject = self.names.events(job_id)  # InvalidNameError for an impossible job id
        await self._topology()
        deadline = None if timeout is None else time.monotonic() + timeout
        sub = await self.js.subscribe(
            subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        seen = 0
        try:
            while True:
                wait = 5.0 if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
                try:
                    msg = await sub.next_msg(timeout=min(wait, 5.0))
                except nats.errors.TimeoutError:
                    continue
                event, _ = decode_as(Event, msg.data)
                if event.seq <= seen:
                    continue  # published twice (a re-send after the duplicate window)
                seen = event.seq
                yield event
                if event.type != "status":
                    continue
                if event.data.get("status") in TERMINAL_STATUSES:
                    return
                parked = event.data.get("status") == "waiting_human"
                if until_parked and parked and msg.metadata.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def tree_events(
        self, job_id: str, *, timeout: float | None = None, until_parked: bool = False
    ) -> AsyncIterator[Event]:
        """The journals of the job and of every child job it starts (and theirs), merged
        as they happen, each job's in order (`events`). Stops once every one of them
        ended; with `until_parked`, as soon as any of them waits for a person."""
        found: asyncio.Queue[Event | tuple[str, BaseException | None]]
        found = asyncio.Queue(maxsize=_TREE_QUEUE)
        pumps: dict[str, asyncio.Task[None]] = {}

        def follow(job: str) -> None:
            async def pump() -> None:
                failed: BaseException | None = None
                try:
                    async for event in self.events(job, timeout=timeout, until_parked=until_parked):
                        await found.put(event)
                except Exception as exc:  # its timeout, a lost server: the caller's to see
                    failed = exc
                await found.put((job, failed))  # this journal ended

            pumps[job] = asyncio.create_task(pump())

        follow(job_id)
        open_jobs = {job_id}
        try:
            while open_jobs:
                item = await found.get()
                if isinstance(item, tuple):
                    job, failed = item
                    if failed is not None:
                        raise failed
                    open_jobs.discard(job)
                    continue
                child = item.data.get("child") if item.type == "child_started" else None
                if isinstance(child, str) and child not in pumps:
                    follow(child)
                    open_jobs.add(child)
                yield item
                parked = item.type == "status" and item.data.get("status") == "waiting_human"
                if until_parked and parked:
                    return
        finally:
            for task in pumps.values():
                task.cancel()
            await asyncio.gather(*pumps.values(), return_exceptions=True)

    async def journal(self, job_id: str, *, timeout: float = 10.0) -> list[Event]:
        """The job's journal as it stands now, each event once (a running job's too)."""
        await self.status(job_id)  # UnknownJobError for a job that does not exist
        sub = await self.js.subscribe(
            self.names.events(job_id), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        events: list[Event] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await sub.next_msg(timeout=timeout)
                    event, _ = decode_as(Event, msg.data)
                    if not events or event.seq > events[-1].seq:
                        events.append(event)
                    if msg.metadata.num_pending == 0:
                        return events
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def fetch_result(self, value: Any) -> Any:
        """A tool result stored by reference (`protocols.result_ref`), read back; else `value`."""
        return await resolved(self, value)

    async def wait(self, job_id: str, *, timeout: float | None = None) -> JobInfo:
        """Wait until the job is terminal or waiting for a human; return its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.02
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {job_id} did not settle within {timeout} s")
            async for _event in self.events(job_id, timeout=left, until_parked=True):
                pass
            info = await self.status(job_id)
            if info.status in SETTLED_STATUSES:
                return info
            # A person resolved the wait the journal ended at just after (or the snapshot
            # is a transition behind the journal): follow the journal again, to the job's
            # next settling, rather than ask for its status in a loop.
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _request(self, subject: str, request: BaseModel, reply_type: type[R]) -> R:
        # No responders is what a request meets while the supervisors reconnect (a server
        # that just restarted): nobody received it, so it is asked again, for a while.
        give_up = time.monotonic() + min(NO_RESPONDERS_WAIT_S, self.outage_patience)
        pause = 0.05
        while True:
            try:
                msg = await self.nc.request(
                    subject,
                    encode(request),
                    timeout=self.request_timeout,
                    headers=tracing.inject({}) or None,  # the caller's span, if traces are on
                )
                break
            except nats.errors.NoRespondersError:
                if time.monotonic() + pause > give_up:
                    raise RigConnectionError(
                        f"no supervisor answers on {subject}; start one (`rig up`, or "
                        "`rig actor run actors:Supervisor`)",
                        subject=subject,
                        delivered=False,  # nobody received it: it did not happen
                    ) from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
            except nats.errors.MaxPayloadError as exc:
                raise PayloadTooLargeError(
                    f"the request is larger than the server's max_payload "
                    f"({self.nc.max_payload} bytes)",
                    limit=self.nc.max_payload,
                ) from exc
            except nats.errors.TimeoutError:
                raise RigConnectionError(
                    f"no answer on {subject} within {self.request_timeout} s", subject=subject
                ) from None
        body, _ = decode(msg.data, dict(msg.headers or {}))
        if isinstance(body, dict) and set(body) == {"error"}:
            raise error_from_dict(body["error"])
        try:
            return reply_type.model_validate(body)
        except Exception as exc:
            raise RigError(f"unexpected reply on {subject}: {body!r}") from exc


async def webhook_records(
    js: JetStreamContext, names: Names, *, job_id: str | None = None, timeout: float = 5.0
) -> list[WebhookRecord]:
    """What became of every webhook (of `job_id`), newest first."""
    pattern = f"{check_token(job_id, what='job id')}.*" if job_id is not None else ">"
    found = [
        decode_as(WebhookRecord, data)[0]
        async for _key, data in kv_latest(js, names.webhooks_bucket, pattern, timeout=timeout)
    ]
    return sorted(found, key=lambda record: record.ts, reverse=True)
