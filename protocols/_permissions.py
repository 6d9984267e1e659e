"""Who may publish and subscribe to what: one NATS user per role, its grants derived from
the subject layout (`Names`) and from what each actor reads and writes.

A role's grants are exact where the work allows: an agent consumes only its own durable,
reports only under its own name (`Names.report`), writes only its own keys in
`RIG_AGENTS`, `RIG_GRAPHS` and `RIG_PRESENCE`; a tool executor reports only for its own
tools and may hand a result only to the verifiers the deployment's graphs put after them;
only the supervisor writes `RIG_JOBS` and `RIG_INBOX` and publishes commands. The
supervisor is the one role that answers requests (`allow_responses`, never publish rights
on `_INBOX.>`), and each role receives JetStream's answers on an inbox prefix of its own
(`Role.inbox`), so no role can read another's replies. The admin role (topology, dead
letters) may do everything. Each role outside the state account (`STATE_ROLES`) has an
account of its own, reaching the state only through what it is granted here (see the
accounts section below and `actors.deploy.roles.accounts_of`).

JetStream's API is reached by subjects too (nats-server #3548 is the long thread of users
finding them by hand); the helpers below name the ones nats-py uses:

    consume a durable     $JS.API.CONSUMER.DURABLE.CREATE|INFO|MSG.NEXT.<stream>.<durable>,
                          $JS.ACK.<stream>.<durable>.>
    read a stream         $JS.API.CONSUMER.CREATE.<stream> (an ordered consumer),
                          $JS.FC.<stream>.> (its flow control)
    read a KV key         $JS.API.STREAM.MSG.GET.KV_<bucket> (the bucket, not a key)
    write a KV key        $KV.<bucket>.<key> (a JetStream publish)

Pure: no I/O. `actors.deploy.roles` turns these into a server's accounts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from protocols._names import MAX_PARTITIONS, Names, check_agent_name, check_token

JS_API = "$JS.API"


@dataclass(frozen=True)
class Grants:
    """Subjects a role may publish to and subscribe to (NATS wildcards allowed)."""

    publish: frozenset[str] = frozenset()
    subscribe: frozenset[str] = frozenset()

    def __or__(self, other: Grants) -> Grants:
        return Grants(self.publish | other.publish, self.subscribe | other.subscribe)

    @staticmethod
    def of(publish: Iterable[str] = (), subscribe: Iterable[str] = ()) -> Grants:
        return Grants(frozenset(publish), frozenset(subscribe))


@dataclass(frozen=True)
class Role:
    """One NATS user: its name (a subject token, the credentials file's name), what it
    is for, and its grants. `responses`: it answers requests (`allow_responses`)."""

    name: str
    purpose: str
    grants: Grants
    responses: bool = False
    everything: bool = False  # the admin: `>` both ways
    deny_publish: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        check_token(self.name, what="role name")

    def plus(self, publish: Iterable[str] = (), subscribe: Iterable[str] = ()) -> Role:
        """This role with more grants: what an actor class that does more than its kind
        (its own subjects, say) returns from its `role()`."""
        return replace(self, grants=self.grants | Grants.of(publish, subscribe))

    def inbox(self, names: Names) -> str:
        """The inbox prefix this role's connection uses: replies and JetStream's answers
        to it arrive under it, and only this role may subscribe there."""
        return inbox_prefix(names, self.name)


def inbox_prefix(names: Names, role: str) -> str:
    return f"_INBOX.{names.prefix}.{check_token(role, what='role name')}"


# --- accounts ---------------------------------------------------------------------
#
# Inside one NATS account, whoever answers a request publishes to the reply subject the
# requester chose, with the answerer's rights: JetStream's API and every stream's
# publish acknowledgement answer any reply subject, so a role allowed any request at all
# could have the server write into any key of any bucket. Accounts end that: the
# deployment's streams and buckets live in its state account, where only the roles that
# may write all of them anyway (the supervisor and the admin) have users; every other
# role has an account of its own, which reaches the state only through the services the
# state account exports to it (one per subject the role may publish to), and the answers
# to those come back into the requester's own account, never anywhere else.

STATE_ROLES = frozenset({"supervisor", "admin"})


def state_account(names: Names) -> str:
    """The account of the deployment's streams and buckets, and of its state roles."""
    return f"{names.prefix}-state"


def account_of(names: Names, role: str) -> str:
    """The account `role`'s user is in: the state account, or one of its own."""
    if role in STATE_ROLES:
        return state_account(names)
    return f"{names.prefix}-{check_token(role, what='role name')}"


def api_prefix(names: Names, role: str) -> str:
    """Where `role` reaches JetStream's API: `$JS.API` in the state account; elsewhere,
    its account's imports of the state account's API, under `JS.<prefix>.API`."""
    return JS_API if role in STATE_ROLES else f"JS.{names.prefix}.API"


def local_subject(names: Names, role: str, subject: str) -> str:
    """The subject `role` publishes to for `subject` of the state account."""
    if subject.startswith(JS_API + ".") and role not in STATE_ROLES:
        return api_prefix(names, role) + subject[len(JS_API) :]
    return subject


def answerable(reply: str) -> bool:
    """Whether a Rig responder may answer to `reply`: a requester's inbox (`_INBOX.`),
    or the subject the server made for a request that came through an account's import
    (`_R_.`, which leads back to the requester's account only). Never anything else: a
    request whose reply names a stream's or a bucket's subject would have the responder
    write there with its own rights."""
    return reply.startswith(("_INBOX.", "_R_.")) and len(reply) > 7


def covers(pattern: str, other: str) -> bool:
    """Whether every subject `other` matches (a subject or a pattern) `pattern` matches."""
    mine, theirs = pattern.split("."), other.split(".")
    for i, token in enumerate(mine):
        if token == ">":
            return len(theirs) > i
        if i >= len(theirs) or theirs[i] == ">":
            return False
        if token != "*" and (theirs[i] == "*" or token != theirs[i]):
            return False
    return len(mine) == len(theirs)


def narrower(a: str, b: str) -> str | None:
    """The one of two patterns that the other covers, or None when neither does."""
    if covers(a, b):
        return b
    if covers(b, a):
        return a
    return None


# --- JetStream's API, as subjects --------------------------------------------------


def stream_info(*streams: str) -> Grants:
    return Grants.of(publish=[f"{JS_API}.STREAM.INFO.{s}" for s in streams])


def durable(stream: str, name: str) -> Grants:
    """Create (if missing), inspect, pull from and acknowledge one durable consumer."""
    return Grants.of(
        publish=[
            f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{name}",
            f"{JS_API}.CONSUMER.CREATE.{stream}.{name}.>",
            f"{JS_API}.CONSUMER.INFO.{stream}.{name}",
            f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{name}",
            f"$JS.ACK.{stream}.{name}.>",
        ]
    )


def ordered(stream: str) -> Grants:
    """Read a stream with ordered (ephemeral, unacknowledged) consumers."""
    return stream_info(stream) | Grants.of(
        publish=[
            f"{JS_API}.CONSUMER.CREATE.{stream}",
            f"{JS_API}.CONSUMER.DELETE.{stream}.*",
            f"$JS.FC.{stream}.>",
            f"{JS_API}.STREAM.NAMES",  # nats-py finds a subject's stream by asking
        ]
    )


def kv_read(bucket: str) -> Grants:
    """Read keys of a bucket, one by one. Rig's buckets do not allow direct gets, so a
    get is a stream message get (`last_by_subj` in its body): read rights are per bucket,
    write rights per key."""
    return stream_info(f"KV_{bucket}") | Grants.of(publish=[f"{JS_API}.STREAM.MSG.GET.KV_{bucket}"])


def kv_scan(bucket: str) -> Grants:
    """Read a whole bucket in one pass (`kv_latest`: an ordered consumer of its stream)."""
    return kv_read(bucket) | ordered(f"KV_{bucket}")


def kv_write(bucket: str, keys: str = ">") -> Grants:
    """Put, create, update by revision and delete keys (JetStream publishes)."""
    return kv_read(bucket) | Grants.of(publish=[f"$KV.{bucket}.{keys}"])


def object_read(store: str) -> Grants:
    """Get objects of an object store (its metadata by direct get, its chunks by an
    ordered consumer)."""
    stream = f"OBJ_{store}"
    return ordered(stream) | Grants.of(
        publish=[
            f"{JS_API}.DIRECT.GET.{stream}.$O.{store}.M.>",
            f"{JS_API}.STREAM.MSG.GET.{stream}",
        ]
    )


def object_write(store: str) -> Grants:
    """Put objects (chunks, then metadata); never purge: a purge's filter is in its body,
    so the right to purge one object would be the right to purge every one."""
    return object_read(store) | Grants.of(publish=[f"$O.{store}.C.>", f"$O.{store}.M.>"])


# --- roles ---------------------------------------------------------------------------


def _process(names: Names, dead_letters: Iterable[str]) -> Grants:
    """What every actor process does besides its work: announce itself, answer `rig ps`
    (on `actors_stats`, never to a reply subject), dead-letter what it cannot accept,
    read the topology it expects."""
    return stream_info(
        names.work_stream, names.events_stream, names.dlq_stream, names.slots_stream
    ) | Grants.of(
        publish=[names.actor_ready, names.actors_stats, *(names.dlq(d) for d in dead_letters)],
        subscribe=[names.actors_ask],
    )


def _worker(
    names: Names, sender: str, served: list[str], durable_of: Callable[[str], str]
) -> Grants:
    """What a process serving `served` (agents, tools or verifiers; `sender` is how its
    reports name them) needs for that work: each one's durable and dead letters, and its
    report subject, besides what every process needs."""
    grants = _process(names, [durable_of(name) for name in served])
    for name in served:
        grants |= durable(names.work_stream, durable_of(name)) | Grants.of(
            publish=[names.reports_from(sender, name)]
        )
    return grants


def supervisor(names: Names) -> Role:
    n = names
    partitions = [n.supervisor_durable(p) for p in range(MAX_PARTITIONS)]
    durables = (*partitions, n.timer_durable, n.dlq_durable)
    grants = _process(n, durables)
    for name in partitions:
        grants |= durable(n.work_stream, name)
    grants = (
        grants
        | durable(n.work_stream, n.timer_durable)
        | durable(n.dlq_stream, n.dlq_durable)
        | kv_write(n.jobs_bucket)
        | kv_write(n.index_bucket)
        | kv_write(n.running_bucket)
        | kv_scan(n.running_bucket)  # the timer sweep
        | kv_write(n.inbox_bucket)
        | kv_write(n.cancels_bucket)
        | kv_write(n.threads_bucket)
        | kv_write(n.schedules_bucket)
        | kv_write(n.flows_bucket)
        | kv_scan(n.schedules_bucket)  # `rig schedule ls`
        | kv_scan(n.inbox_bucket)
        | kv_read(n.agents_bucket)
        | kv_read(n.graphs_bucket)
        | kv_read(n.tools_bucket)  # who serves a tool a decision picked of `<executor>.*`
        | kv_scan(n.presence_bucket)
        | kv_write(n.presence_bucket, "supervisor.*")  # each replica's beat (its partitions)
        | object_read(n.results_store)
        | ordered(n.events_stream)
        # A job's last journal message: was the outbox it must carry over sent already?
        | Grants.of(publish=[f"{JS_API}.STREAM.MSG.GET.{n.events_stream}"])
        | Grants.of(publish=[f"{JS_API}.CONSUMER.INFO.{n.work_stream}.*"])  # agents' backlogs
        | Grants.of(
            # A person's resolve or cancel is answered by whichever supervisor carries it
            # out, to the inbox of the one that took the request.
            publish=[
                n.work_all,
                n.events_all,
                n.escalations,
                n.cancels_all,
                f"{inbox_prefix(n, 'supervisor')}.>",
            ],
            subscribe=[f"{n.prefix}.api.*"],
        )
    )
    return Role("supervisor", "steps every job; the only writer of RIG_JOBS", grants, True)


def agent(names: Names, name: str) -> Role:
    check_agent_name(name)
    n = names
    grants = (
        _worker(n, "agent", [name], n.agent_durable)
        | kv_write(n.agents_bucket, name)
        | kv_write(n.graphs_bucket, f"{name}.>")
        | kv_write(n.presence_bucket, f"{name}.>")
        | kv_write(n.breakers_bucket)
        | kv_write(n.llm_cache_bucket, f"{name}.>")  # its own answers only
        | kv_scan(n.tools_bucket)  # the tools it offers for a set of tools or a lookup
        | object_read(n.results_store)
        | durable(n.slots_stream, "*")
        | Grants.of(
            publish=[
                f"{n.prefix}.tokens.*",
                n.slots_all,
                f"{JS_API}.STREAM.MSG.GET.{n.slots_stream}",
            ]
        )
    )
    return Role(f"agent-{name}", f"decides the steps of agent {name}", grants)


def tools(
    names: Names, role: str, tools: Iterable[str], verifiers: Iterable[str], *, executor: str
) -> Role:
    """A tool executor (named `executor`): its tools' calls, their entries in the tool
    catalog, and the verifiers `verifiers` (those the deployment's graphs put after its
    tools' edges) to hand successful results to."""
    n = names
    tools = sorted(tools)
    grants = _worker(n, "tool", tools, n.tool_durable) | object_write(n.results_store)
    grants |= kv_write(n.presence_bucket, "ledger.>") | kv_scan(n.presence_bucket)
    grants |= kv_read(n.cancels_bucket)  # calls told to stop, read before a tool starts
    for tool in tools:  # a cluster's ledger: its own tools' records only
        grants |= kv_write(n.claims_bucket, f"{tool}.*")
        # What it serves, under its own name only: a set of tools `<executor>.*` in a
        # graph is exactly what this role may write.
        grants |= kv_write(n.tools_bucket, n.catalog_key(executor, tool))
    grants |= Grants.of(
        publish=[n.verifier(v) for v in sorted(verifiers)],
        subscribe=[n.tool_cancel(tool) for tool in tools],  # calls to stop
    )
    return Role(role, "runs tools " + ", ".join(tools), grants)


def verifier(names: Names, role: str, verifiers: Iterable[str]) -> Role:
    n = names
    verifiers = sorted(verifiers)
    grants = _worker(n, "verify", verifiers, n.verifier_durable) | object_read(n.results_store)
    return Role(role, "checks with " + ", ".join(verifiers), grants)


def _reader(names: Names) -> Grants:
    """What a client reads: journals and tokens, the registry, job snapshots, the
    providers' breakers."""
    n = names
    return (
        stream_info(n.work_stream, n.events_stream, n.dlq_stream)
        | ordered(n.events_stream)
        | kv_scan(n.agents_bucket)
        | kv_read(n.graphs_bucket)
        | kv_scan(n.jobs_bucket)
        | kv_scan(n.index_bucket)
        | kv_scan(n.presence_bucket)
        | kv_scan(n.inbox_bucket)
        | kv_scan(n.webhooks_bucket)
        | kv_scan(n.breakers_bucket)
        | kv_scan(n.tools_bucket)
        | kv_read(n.threads_bucket)
        | kv_scan(n.flows_bucket)  # `rig top`'s queues per key
        | object_read(n.results_store)
        | Grants.of(
            publish=[f"{n.prefix}.api.*", n.actors_ask],
            subscribe=[f"{n.prefix}.tokens.*", n.actor_ready, n.actors_stats],
        )
    )


def client(names: Names) -> Role:
    return Role(
        "client",
        "submit, status, watch, inbox, resolve, cancel (`rig` and any NATS client)",
        _reader(names),
    )


def gateway(names: Names) -> Role:
    n = names
    grants = (
        _process(n, [n.webhook_durable])
        | _reader(n)
        | durable(n.work_stream, n.webhook_durable)
        | kv_write(n.webhooks_bucket)
        | kv_scan(n.webhooks_bucket)
        | kv_write(n.push_bucket)  # A2A tasks' push notification configs
        | kv_scan(n.push_bucket)
    )
    return Role("gateway", "HTTP and SSE in front of the API; delivers webhooks", grants)


def admin(names: Names) -> Role:
    return Role(
        "admin",
        "creates the topology; dead letters, ledger tools, `rig top` (everything)",
        Grants(),
        True,
        everything=True,
    )
