"""Connecting to NATS and making sure Rig's streams and buckets exist.

Every actor and the CLI call `ensure_topology` when they start; it creates what is
missing and leaves what exists alone, so processes may start in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import re
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from actors.runtime.credentials import credentials
from actors.runtime.settings import RigConfig
from actors.runtime.tls import client_context
from protocols import (
    ConfigError,
    JobSnapshot,
    Names,
    RigConnectionError,
    UnavailableError,
    decode_as,
    encode,
    kv_subject,
)
from protocols._permissions import JS_API, api_prefix, inbox_prefix

log = structlog.get_logger("rig.nats")

# Where the work stream keeps how many partitions the supervisor's work has.
PARTITIONS_KEY = "rig.partitions"
# How long a published Nats-Msg-Id is remembered: a re-publish of the same id within
# this window is dropped by the server. Two minutes covers a crashed actor's restart
# and redelivery; the supervisor's step check catches anything later.
DUPLICATE_WINDOW_S = 120.0
EVENTS_MAX_AGE_S = 7 * 24 * 3600.0
# Each `rig watch`, SSE client and `RigClient.wait` follows a job with a consumer of its
# own on the journal's stream, kept a few seconds after it ends; nats-server 2.15 allows
# a stream 1,000 consumers unless the stream says otherwise (0 or -1 mean its default).
EVENTS_MAX_CONSUMERS = 100_000
DLQ_MAX_AGE_S = 30 * 24 * 3600.0
# The most messages the work stream holds: past it a publish is refused (the sender is
# told and retries, a submit answers an error), never a queued command dropped. A count,
# not bytes: a stream's byte limit is reserved from the server's store up front.
WORK_MAX_MSGS = 1_000_000
SLOTS_MAX_MSGS = 100_000
# A live agent refreshes its presence every PRESENCE_BEAT_S; a key not refreshed within
# PRESENCE_TTL_S expires, so a killed process stops counting as live within that time.
PRESENCE_BEAT_S = 5.0
PRESENCE_TTL_S = 15.0


async def connect(
    config: RigConfig,
    *,
    name: str,
    log_events: bool = True,
    role: str | None = None,
    notices: Callable[[str], None] | None = None,
) -> Client:
    """Connect, retrying until `config.connect_timeout`; once connected, reconnect forever.

    `role`: whose credentials to use (`actors.deploy.roles.credentials`: `RIG_CREDS`, else
    `$RIG_HOME/creds/<role>.nk` if it exists, else none). With credentials, replies come
    to the role's own inbox prefix, the only one its user may subscribe to.

    nats-py's defaults give up after 60 reconnect attempts and ping every two minutes;
    an actor must outlive a server restart, so both are changed here. `notices` is told,
    in a sentence, when the connection is lost and when it is back (a person waiting on
    the CLI should not wait in silence).
    """
    seed = credentials(config, role)
    refused: list[str] = []
    untrusted: list[str] = []
    tls = client_context(config)
    nobody = asyncio.Event()  # every attempt for `refused_wait` was refused: none listens
    first_refusal: list[float] = []

    async def on_error(exc: Exception) -> None:
        if isinstance(exc, nats.errors.AuthorizationError) or "uthorization" in str(exc):
            refused.append(str(exc) or type(exc).__name__)
        if isinstance(exc, ssl.SSLError):
            untrusted.append(str(exc))
        if isinstance(exc, ConnectionRefusedError) and config.refused_wait is not None:
            first_refusal[:] = first_refusal or [time.monotonic()]
            if time.monotonic() - first_refusal[0] >= config.refused_wait:
                nobody.set()
        else:
            first_refusal.clear()
        if log_events:
            await _on_error(exc)

    auth: dict[str, Any] = {}
    if seed is not None:
        auth = {"nkeys_seed": str(seed), "inbox_prefix": inbox_prefix(config.names, seed.stem)}
    api = JS_API if seed is None else api_prefix(config.names, seed.stem)
    lost = (
        f"lost the connection to NATS at {config.nats_url}; trying again until it is back "
        "(Ctrl-C stops)"
    )
    back = f"connected to NATS at {config.nats_url} again"
    # With unlimited reconnects nats-py retries the first connect forever too; the
    # deadline is what turns "no server" into an error.
    try:
        nc = await _first_of(
            nats.connect(
                servers=config.servers,
                # In the order given: `rig up` spreads its processes over a cluster's
                # servers by the order of each one's list.
                dont_randomize=True,
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                ping_interval=5,
                max_outstanding_pings=3,
                connect_timeout=2,
                error_cb=on_error,
                disconnected_cb=_told(notices, lost, _on_disconnected if log_events else None),
                reconnected_cb=_told(notices, back, _on_reconnected if log_events else None),
                tls=tls,
                **auth,
            ),
            nobody,
            timeout=config.connect_timeout,
        )
        _API_PREFIX[nc] = api
        return nc
    except _NobodyListens as exc:
        raise RigConnectionError(
            f"nothing listens at {config.nats_url} (the connection was refused); is "
            "nats-server running? (`rig up` starts one; RIG_NATS_URL points elsewhere)",
            url=config.nats_url,
        ) from exc
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        if untrusted or isinstance(exc, ssl.SSLError):
            raise RigConnectionError(
                f"the TLS certificate of NATS at {config.nats_url} is not one this client "
                f"trusts ({(untrusted or [str(exc)])[-1]}): set RIG_TLS_CA to the CA that "
                "signed it (`rig up --tls` keeps its own in $RIG_HOME/tls/ca.pem)",
                url=config.nats_url,
            ) from exc
        if refused or isinstance(exc, nats.errors.AuthorizationError):
            who = (
                f"the credentials in {seed}"
                if seed is not None
                else "a connection without credentials"
            )
            hint = (
                "`rig up` makes each role's under $RIG_HOME/creds; RIG_HOME or RIG_CREDS "
                "may point elsewhere"
                if seed is None
                else "they may belong to another server's `rig up`, or their role was not "
                "admitted to this one: `rig admit MODULE:CLASS`"
            )
            raise RigConnectionError(
                f"NATS at {config.nats_url} refused {who} ({hint})", url=config.nats_url
            ) from exc
        raise RigConnectionError(
            f"cannot reach NATS at {config.nats_url} within {config.connect_timeout:g} s; "
            "is nats-server running? (`rig up` starts one; RIG_NATS_URL points elsewhere)",
            url=config.nats_url,
        ) from exc


def _told(
    notices: Callable[[str], None] | None,
    text: str,
    then: Callable[[], Awaitable[None]] | None,
) -> Callable[[], Awaitable[None]] | None:
    """A connection callback that tells `notices` `text` (unless the connection is being
    closed on purpose), then runs `then`."""
    if notices is None:
        return then
    say = notices  # narrowed for the closure

    async def told() -> None:
        if not closing.get():
            say(text)
        if then is not None:
            await then()

    return told


# Set while a connection closes on purpose: its "disconnected" is no news.
closing: contextvars.ContextVar[bool] = contextvars.ContextVar("closing", default=False)


class _NobodyListens(Exception):
    """Every server refused the connection for the client's `refused_wait`."""


async def _first_of(
    connecting: Awaitable[Client], nobody: asyncio.Event, *, timeout: float
) -> Client:
    """The connection, unless `nobody` is set first (`_NobodyListens`) or `timeout` passes."""
    attempt = asyncio.ensure_future(connecting)
    given_up = asyncio.ensure_future(nobody.wait())
    try:
        done, _ = await asyncio.wait(
            {attempt, given_up}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if attempt in done:
            return attempt.result()
        if given_up in done:
            raise _NobodyListens
        raise TimeoutError
    finally:
        given_up.cancel()
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt


# Where each connection reaches JetStream's API (`protocols._permissions.api_prefix`):
# a role outside the state account reaches it through its account's imports.
_API_PREFIX: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()


def api_prefix_of(nc: Client) -> str:
    """The JetStream API prefix of a connection `connect` made (`$JS.API` for others)."""
    return _API_PREFIX.get(nc, JS_API)


def jetstream(nc: Client) -> JetStreamContext:
    """`nc`'s JetStream context, at its role's API prefix (`api_prefix_of`)."""
    return nc.jetstream(prefix=api_prefix_of(nc))


_last_error_log = 0.0


async def _on_error(exc: Exception) -> None:
    # While the server is away every reconnect attempt fails: log one line per 10 s.
    global _last_error_log
    if time.monotonic() - _last_error_log > 10:
        _last_error_log = time.monotonic()
        log.warning("nats.error", error=str(exc) or type(exc).__name__)


async def _ignore(exc: Exception) -> None:
    pass


async def _on_disconnected() -> None:
    log.warning("nats.disconnected")


async def _on_reconnected() -> None:
    log.info("nats.reconnected")


def stream_configs(names: Names, replicas: int = 1) -> list[StreamConfig]:
    """The streams of a Rig deployment, each with `replicas` copies."""
    configs = [
        StreamConfig(
            name=names.work_stream,
            description="Rig commands to actors and their reports (work queue)",
            subjects=[names.work_all],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_msgs=WORK_MAX_MSGS,
            discard=DiscardPolicy.NEW,
            duplicate_window=DUPLICATE_WINDOW_S,
            metadata={PARTITIONS_KEY: str(names.partitions)},
        ),
        StreamConfig(
            name=names.events_stream,
            description="Rig job journals, one subject per job",
            subjects=[names.events_all, names.escalations],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=EVENTS_MAX_AGE_S,
            duplicate_window=DUPLICATE_WINDOW_S,
            max_consumers=EVENTS_MAX_CONSUMERS,
        ),
        StreamConfig(
            name=names.slots_stream,
            description="Rig LLM concurrency slots: one message per slot, handed out in order",
            subjects=[names.slots_all],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_msgs=SLOTS_MAX_MSGS,  # slots are a few empty messages per provider
            discard=DiscardPolicy.NEW,
        ),
        StreamConfig(
            name=names.dlq_stream,
            description="Rig dead letters: messages an actor could not accept",
            subjects=[names.dlq_all],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=DLQ_MAX_AGE_S,
            discard=DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
    ]
    for config in configs:
        config.num_replicas = replicas
    return configs


async def ensure_topology(
    js: JetStreamContext, names: Names, replicas: int = 1, *, checks_split: bool = False
) -> None:
    """Create Rig's streams and KV buckets if they are missing, each with `replicas`
    copies (a stream made with fewer is scaled up; JetStream moves its data). With
    `checks_split` (a process told its split, `RIG_SUPERVISOR_PARTITIONS`), the
    supervisor's work must be split as the deployment's is (`_check_partitions`)."""
    for config in stream_configs(names, replicas):
        assert config.name is not None
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("stream.created", stream=config.name, replicas=replicas)
            continue
        if config.name == names.work_stream and checks_split:
            _check_partitions(info, names)
        missing = set(config.subjects or ()) - set(info.config.subjects or ())
        unbounded = config.max_msgs is not None and info.config.max_msgs in (None, -1)
        # A limit of 0 or -1 is the server's default (1,000 since nats-server 2.15).
        few = config.max_consumers is not None and config.max_consumers > max(
            info.config.max_consumers or 0, 0
        )
        if missing or unbounded or few:  # a stream made by an older Rig: add what it lacks
            info.config.subjects = sorted(set(info.config.subjects or ()) | missing)
            if unbounded:
                info.config.max_msgs, info.config.discard = config.max_msgs, config.discard
            if few:
                info.config.max_consumers = config.max_consumers
            await js.update_stream(info.config)
            log.info("stream.updated", stream=config.name, added=sorted(missing))
        await _scale(js, info, replicas)
    await _retire_single_supervisor_consumer(js, names)
    for bucket, description in (
        (names.agents_bucket, "Rig agent registry: graph and example input per agent"),
        (names.inbox_bucket, "Rig jobs waiting for a person (an Escalation per job id)"),
        (names.breakers_bucket, "Rig circuit breakers per LLM provider and model"),
        (names.graphs_bucket, "Rig agent registrations by version (<agent>.<graph version>)"),
        (names.claims_bucket, "Rig tool ledger of a cluster (<tool>.<key>, compare-and-set)"),
        (names.tools_bucket, "Rig tools each executor serves (<executor>.<tool>: a ToolEntry)"),
    ):
        await _ensure_bucket(js, bucket, description, replicas=replicas)
    indexed = await _exists(js, names.index_bucket)  # else its jobs are entered below
    swept = await _exists(js, names.running_bucket)
    # Buckets whose entries expire one by one (an ended job's, a cached answer).
    for bucket, description in (
        (names.jobs_bucket, "Rig job snapshots (compare-and-set on revision)"),
        (names.index_bucket, "Rig job index: a JobEntry per <agent>.<job_id>, for listing"),
        (names.running_bucket, "Rig jobs running or to start (<partition>.<job_id>): swept"),
        (names.llm_cache_bucket, "Rig LLM response cache (exact match, temperature 0)"),
        (names.threads_bucket, "Rig threads: the turns of each conversation, by id"),
        (names.memory_bucket, "Rig memory: what agents remember (<agent>.<scope>.<owner>.<key>)"),
    ):
        await _ensure_bucket(js, bucket, description, replicas=replicas, expiring=True)
    for bucket, description in (
        (names.schedules_bucket, "Rig schedules: each one's spec and ticks, by name"),
        (names.flows_bucket, "Rig concurrency keys: who runs and who waits, by agent.key"),
    ):
        await _ensure_bucket(js, bucket, description, replicas=replicas)
    if not (indexed and swept):
        await _enter_jobs(js, names, index=not indexed, running=not swept)
    await _ensure_bucket(
        js,
        names.presence_bucket,
        "Rig live agent instances (expire unless refreshed)",
        ttl=PRESENCE_TTL_S,
        replicas=replicas,
    )
    await _ensure_bucket(
        js,
        names.cancels_bucket,
        "Rig tool calls their jobs stopped waiting for (<tool>.<job>.<step>)",
        ttl=EVENTS_MAX_AGE_S,  # a call left queued longer than the journal is long gone
        replicas=replicas,
    )
    await _ensure_bucket(
        js,
        names.push_bucket,
        "Rig push targets of jobs (<job>.<target id>: an A2A task's push configs)",
        ttl=EVENTS_MAX_AGE_S,  # as long as the journal of the job they follow
        replicas=replicas,
    )
    await _ensure_bucket(
        js,
        names.webhooks_bucket,
        "Rig webhooks: what became of each (<job>.<event seq>)",
        ttl=EVENTS_MAX_AGE_S,  # as long as the journal they tell of
        replicas=replicas,
    )
    try:
        await js.object_store(names.results_store)
    except BucketNotFoundError:
        await js.create_object_store(
            bucket=names.results_store,
            config=ObjectStoreConfig(
                description="Rig tool results too large to travel inline, by <job>/<step>/<tool>",
                storage=StorageType.FILE,
                ttl=EVENTS_MAX_AGE_S,  # as long as the journal that names them
                replicas=replicas,
            ),
        )
        log.info("bucket.created", bucket=names.results_store, replicas=replicas)
    else:
        await _scale(js, await js.stream_info(f"OBJ_{names.results_store}"), replicas)


async def _exists(js: JetStreamContext, bucket: str) -> bool:
    try:
        await js.key_value(bucket)
    except BucketNotFoundError:
        return False
    return True


async def _enter_jobs(js: JetStreamContext, names: Names, *, index: bool, running: bool) -> None:
    """Enter the jobs kept in `RIG_JOBS` in a new index, and those that run or wait to
    start in a new `RIG_RUNNING` (once, when a deployment from before them gets them)."""
    entered = 0
    async for job_id, data in kv_latest(js, names.jobs_bucket):
        job = decode_as(JobSnapshot, data)[0]
        if index:
            key = kv_subject(names.index_bucket, names.index_key(job.agent, job_id))
            await js.publish(key, encode(job.entry()))
        if running and job.timed:
            await js.publish(kv_subject(names.running_bucket, names.running_key(job_id)), b"1")
        entered += 1
    if entered:
        log.info("index.filled", jobs=entered, index=index, running=running)


def partitions_made(info: Any) -> int:
    """How many partitions the work stream (its info) says the supervisor's work has (a
    stream from before partitions: one)."""
    return int((info.config.metadata or {}).get(PARTITIONS_KEY, "1"))


def _check_partitions(info: Any, names: Names) -> None:
    """Refuse to run with another split of the supervisor's work than the deployment's
    (the work stream's metadata) when this process was told one (`checks_split`):
    reports sent to a partition no consumer reads would wait there for good. A process
    that asked for none takes the deployment's (`Actor.run`)."""
    made = partitions_made(info)
    if made != names.partitions:
        raise ConfigError(
            f"this deployment's supervisor work is split in {made} partition(s) (its stream "
            f"{names.work_stream} says so), but this process would split it in "
            f"{names.partitions}: set RIG_SUPERVISOR_PARTITIONS={made}, as `rig up` does"
        )


async def _retire_single_supervisor_consumer(js: JetStreamContext, names: Names) -> None:
    """Delete the one supervisor consumer of Rig before partitions (`supervisor`, all of
    `rig.work.supervisor.>`): a work-queue stream allows no consumer beside it, so the
    partitions' could not be made. Messages it still held (subjects without a
    partition) are read by no one after; their jobs stop moving, and the stall watchdog
    hands them to a person."""
    try:
        info = await js.consumer_info(names.work_stream, "supervisor")
    except NotFoundError:
        return
    await js.delete_consumer(names.work_stream, "supervisor")
    log.warning(
        "consumer.retired",
        consumer="supervisor",
        pending=info.num_pending,
        unacked=info.num_ack_pending,
        why="replaced by one consumer per partition (supervisor-0 .. supervisor-15)",
    )


async def _scale(js: JetStreamContext, info: Any, replicas: int) -> None:
    """Give an existing stream (or a bucket's) `replicas` copies if it has fewer."""
    if (info.config.num_replicas or 1) < replicas:
        info.config.num_replicas = replicas
        await js.update_stream(info.config)
        log.info("stream.scaled", stream=info.config.name, replicas=replicas)


async def jetstream_ready(js: JetStreamContext, *, timeout: float = 30.0) -> None:
    """Wait until JetStream answers (a cluster that just started elects its meta leader
    first); a `RigConnectionError` saying so after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await js.account_info()
            return
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            if time.monotonic() > deadline:
                raise RigConnectionError(
                    f"JetStream did not answer within {timeout:g} s ({exc}); a cluster needs "
                    "a majority of its servers up to elect a leader"
                ) from None
            await asyncio.sleep(0.2)


async def check_topology(js: JetStreamContext, names: Names, *, checks_split: bool = False) -> None:
    """Raise a `ConfigError` saying what to do if Rig's streams are not on the server (a
    role other than the admin may not create them)."""
    try:
        info = await js.stream_info(names.work_stream)
        if checks_split:
            _check_partitions(info, names)
    except NotFoundError:
        raise ConfigError(
            f"Rig's streams ({names.work_stream}, ...) are not on this server, and this "
            "process's NATS user may not create them: `rig up` creates them as the admin "
            "(or connect once with RIG_CREDS=$RIG_HOME/creds/admin.nk)"
        ) from None


async def _ensure_bucket(
    js: JetStreamContext,
    bucket: str,
    description: str,
    *,
    ttl: float | None = None,
    replicas: int = 1,
    expiring: bool = False,
) -> KeyValue:
    """A bucket, made if missing. Reads of Rig's buckets go to the leader of each (not
    `direct`, which lets a follower answer, possibly stale: nats-server #4710); a
    compare-and-set is checked by the leader whatever a read said. An `expiring` one
    takes per-message TTLs (`Header.TTL`), turned on in one made without them."""
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        kv = await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                description=description,
                history=1,
                storage=StorageType.FILE,
                ttl=ttl,
                replicas=replicas,
                direct=False,
            )
        )
        log.info("bucket.created", bucket=bucket, replicas=replicas)
        return kv
    info = await js.stream_info(f"KV_{bucket}")
    if expiring and not info.config.allow_msg_ttl:
        info.config.allow_msg_ttl = True
        info = await js.update_stream(info.config)
        log.info("bucket.updated", bucket=bucket, allow_msg_ttl=True)
    await _scale(js, info, replicas)
    return kv


def pull_subject(stream: str, durable: str, api: str = JS_API) -> str:
    """JetStream's API subject for pulling the next messages of a durable consumer."""
    return f"{api}.CONSUMER.MSG.NEXT.{stream}.{durable}"


def headers_of(msg: Any) -> dict[str, str]:
    return dict(msg.headers) if msg.headers else {}


async def kv_read(kv: KeyValue, key: str) -> tuple[bytes, int]:
    """A key's value (b"" when missing or deleted) and revision (0 when never written)."""
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, NotFoundError):
        return b"", 0
    return entry.value or b"", entry.revision or 0


async def kv_latest(
    js: JetStreamContext, bucket: str, pattern: str = ">", *, timeout: float = 5.0
) -> AsyncIterator[tuple[str, bytes]]:
    """Every live key of `bucket` matching `pattern`, with its value, in one pass (an
    ordered consumer of the last message per subject; deleted keys are left out)."""
    async for key, value, _ in _kv_last(js, bucket, pattern, timeout=timeout):
        yield key, value


async def _kv_last(
    js: JetStreamContext, bucket: str, pattern: str, *, timeout: float
) -> AsyncIterator[tuple[str, bytes, float]]:
    subjects = f"$KV.{bucket}.{pattern}"
    if not await _any_subject(js, bucket, subjects):
        return  # nothing matches: the consumer below would send nothing at all
    sub = await js.subscribe(
        subjects, ordered_consumer=True, deliver_policy=DeliverPolicy.LAST_PER_SUBJECT
    )
    prefix = f"$KV.{bucket}."
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                # A match always ends with num_pending 0; the keys may all have gone since.
                if not await _any_subject(js, bucket, subjects):
                    return
                raise RigConnectionError(f"reading {bucket} stalled", subject=subjects) from None
            if msg.data:
                stamp = msg.metadata.timestamp
                yield msg.subject.removeprefix(prefix), msg.data, stamp.timestamp()
            if msg.metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def kv_times(
    js: JetStreamContext, bucket: str, pattern: str = ">", *, timeout: float = 5.0
) -> dict[str, float]:
    """When each live key of `bucket` matching `pattern` was last written, as the stream
    stored it (seconds since the epoch, by the server's clock)."""
    found: dict[str, float] = {}
    async for key, _, at in _kv_last(js, bucket, pattern, timeout=timeout):
        found[key] = at
    return found


async def _any_subject(js: JetStreamContext, bucket: str, subjects: str) -> bool:
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=subjects)
    return bool(info.state.subjects)


async def kv_swap(kv: KeyValue, key: str, value: bytes, revision: int) -> int | None:
    """Compare-and-set: store `value` if the key is still at `revision` (0: not written
    yet); the new revision, or None when another writer got there first."""
    try:
        if revision == 0:
            return await kv.create(key, value)
        return await kv.update(key, value, last=revision)
    except KeyWrongLastSequenceError:
        return None


async def live_keys(js: JetStreamContext, names: Names, pattern: str) -> list[str]:
    """The keys matching `pattern` that are alive in the presence bucket (not expired,
    not deleted). Read with `kv_latest`: a KV watcher could report the end of the stored
    keys before any of them under load."""
    return [key async for key, _ in kv_latest(js, names.presence_bucket, pattern)]


async def keep_beating(beat: Any, log: Any) -> None:
    """Call `beat()` every PRESENCE_BEAT_S until cancelled; a failed beat is logged and
    the next one tries again (the server may be away)."""
    while True:
        await asyncio.sleep(PRESENCE_BEAT_S)
        try:
            await beat()
        except Exception as exc:
            log.warning("presence.failed", error=repr(exc))


async def live_agents(
    js: JetStreamContext, names: Names, agent: str | None = None
) -> dict[str, int]:
    """How many live processes each agent has (only `agent`'s, if given), by its
    instances' keys `<agent>.<instance>` in the presence bucket; a dead one's key has
    expired, a stopped one's is deleted."""
    counts: dict[str, int] = {}
    for key in await live_keys(js, names, f"{agent}.*" if agent is not None else "*.*"):
        name = key.split(".", 1)[0]
        counts[name] = counts.get(name, 0) + 1
    return counts


class PublishError(Exception):
    """JetStream refused a publish; `err_code` is its error code (10071: wrong last sequence)."""

    def __init__(self, description: str, *, code: int = 0, err_code: int = 0) -> None:
        super().__init__(description)
        self.description, self.code, self.err_code = description, code, err_code

    @property
    def unstored(self) -> bool:
        """Whether the servers could not store it yet: no stream leader (503), or the
        same message id still being stored from an earlier try (a leader elected
        meanwhile answers "in process"). Publishing it again later is safe and stores it
        once."""
        return self.code == 503 or "in process" in self.description


WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
# How long a publish keeps trying while no server stores its subject (a cluster electing a
# stream's leader: nats-server's elections take 4-9 s after a leader is lost).
OUTAGE_S = 30.0
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,  # a request nobody answered in time (not a user's timeout)
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)


def is_outage(exc: BaseException | None) -> bool:
    """Whether `exc` (or what it was raised from) says the servers were away or leaderless,
    not that the message or the request was wrong: a retry later may succeed, and the
    message's delivery count says nothing about the message then."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, _OUTAGE_ERRORS):
            return True
        if isinstance(exc, PublishError) and (exc.code == 408 or exc.unstored):
            return True
        if isinstance(exc, nats.js.errors.APIError) and exc.code == 503:
            return True
        cause = exc.__cause__
        if cause is None and not exc.__suppress_context__:
            cause = exc.__context__
        exc, seen = cause, seen + 1
    return False


T = TypeVar("T")


async def outlasting(
    attempt: Callable[[], Awaitable[T]],
    *,
    within: float = OUTAGE_S,
    doing: str,
    waiting: Callable[[BaseException], None] | None = None,
) -> T:
    """`attempt()`, run again while it fails because the servers are away or leaderless
    (`is_outage`), backing off, for up to `within` seconds; then `UnavailableError`
    saying what was being done. Any other error is raised at once. `waiting` is told of
    the first outage (to say why nothing happens for a while)."""
    deadline = time.monotonic() + within
    pause = 0.05
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not is_outage(exc):
                raise
            if waiting is not None:
                waiting(exc)
                waiting = None
            if time.monotonic() + pause > deadline:
                raise UnavailableError(
                    f"the NATS servers stayed away or leaderless for {within:g} s while "
                    f"{doing} ({exc!r}); a cluster needs a majority of its servers up"
                ) from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)


async def _acks(futures: list[asyncio.Future[int]], timeout: float) -> list[Any]:
    """Each future's sequence or exception, in order, within `timeout` in all, else a
    `PublishError` 408 (maybe stored, maybe not: only its `Nats-Msg-Id` makes a retry
    safe). One timer and plain awaits: `asyncio.timeout` and `gather` cost more than the
    publishes they wait for (scripts/bench profile)."""
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        for future in futures:
            future.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    results: list[Any] = []
    try:
        for future in futures:
            try:
                results.append(await future)
            except asyncio.CancelledError:
                if expired:
                    raise PublishError(f"no ack within {timeout:g} s", code=408) from None
                raise
            except Exception as exc:
                results.append(exc)
    finally:
        timer.cancel()
        for future in futures:
            future.cancel()  # a caller that gave up frees their places; done ones stay done
    return results


_SEQ = re.compile(
    rb'^\{"stream":"[^"\\]*",(?:"domain":"[^"\\]*",)?"seq":(\d+)(?:,"duplicate": ?true)?\}$'
)


def _stored_sequence(data: bytes) -> int | None:
    """The sequence of a plain PubAck (`{"stream":"X","seq":7}`, perhaps a domain or
    `"duplicate":true`), read without building a dict; None for anything else, which
    `json.loads` then reads (an error, a field the server added)."""
    match = _SEQ.match(data)
    return int(match[1]) if match else None


class Publisher:
    """JetStream publishes whose acks come back on one callback subscription.

    The same protocol as nats-py's `publish_async`, without its per-message semaphore
    wait, task and dataclass parsing: one future per publish, resolved with the stored
    sequence (or a `PublishError`). At most `limit` publishes wait for their ack at once;
    a caller that gives up on a future cancels it, which frees its place.
    """

    def __init__(self, nc: Client, *, limit: int = 4096) -> None:
        self._nc = nc
        self._prefix = ""
        self._waiting: dict[str, asyncio.Future[int]] = {}
        self._room = asyncio.Semaphore(limit)
        self._counter = 0

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox()
        await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_ack)

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[int]:
        """Send; return a future for the stream sequence the server stored it under."""
        await self._room.acquire()
        self._counter += 1
        token = format(self._counter, "x")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        future.add_done_callback(lambda _f: self._done(token))
        try:
            await self._nc.publish(
                subject, data, reply=f"{self._prefix}.{token}", headers=headers or None
            )
        except BaseException:
            future.cancel()
            raise
        return future

    async def stored(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = 10.0,
        within: float = OUTAGE_S,
    ) -> int:
        """Publish and wait for the stored sequence (see `stored_all`)."""
        [sequence] = await self.stored_all(
            [(subject, data, headers)], timeout=timeout, within=within
        )
        return sequence

    async def stored_all(
        self,
        messages: list[tuple[str, bytes, dict[str, str] | None]],
        *,
        timeout: float = 10.0,
        within: float = OUTAGE_S,
    ) -> list[int]:
        """Publish `messages` in order, pipelined, and wait until each is stored; return
        their sequences. While no server stores a subject (503: a stream without a leader,
        for seconds in a cluster that lost a server; or "in process": an earlier try of
        the same message id not stored yet) the first unstored message and those
        after it are published again, in order, backing off, for up to `within` seconds:
        a 503 stored nothing, and a message already stored again is dropped by its
        `Nats-Msg-Id`. Other refusals raise at once, and so does a timeout, as a
        `PublishError` with code 408."""
        deadline = time.monotonic() + within
        pause = 0.05
        sequences: list[int] = []
        pending = list(messages)
        while pending:
            futures = [await self.publish(subject, data, hdrs) for subject, data, hdrs in pending]
            results = await _acks(futures, timeout)
            failed = next(
                (i for i, result in enumerate(results) if isinstance(result, BaseException)),
                len(results),
            )
            sequences += [int(result) for result in results[:failed]]
            if failed == len(results):
                return sequences
            error = results[failed]
            assert isinstance(error, BaseException)
            if not (isinstance(error, PublishError) and error.unstored):
                raise error
            if time.monotonic() + pause > deadline:
                raise error
            pending = pending[failed:]
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
        return sequences

    def _done(self, token: str) -> None:
        if self._waiting.pop(token, None) is not None:
            self._room.release()

    async def _on_ack(self, msg: Any) -> None:
        future = self._waiting.get(msg.subject.rpartition(".")[2])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(PublishError("no stream stores this subject", code=503))
            return
        sequence = _stored_sequence(msg.data)
        if sequence is not None:
            future.set_result(sequence)
            return
        try:
            answer = json.loads(msg.data)
        except ValueError:
            future.set_exception(PublishError(f"unreadable ack {msg.data[:100]!r}"))
            return
        error = answer.get("error")
        if error:
            future.set_exception(
                PublishError(
                    str(error.get("description", error)),
                    code=int(error.get("code", 0)),
                    err_code=int(error.get("err_code", 0)),
                )
            )
        else:
            future.set_result(int(answer.get("seq", 0)))
