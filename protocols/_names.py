"""Every name on the wire: subjects, streams, consumers, headers and KV buckets.

Actors never build a subject with an f-string of their own; they ask a `Names`.
All names derive from one prefix (`rig` by default, `RIG_PREFIX` to change it),
so that several Rig deployments, or several tests, can share one nats-server
without seeing each other's messages.

With the default prefix the names are the ones in the design:

    rig.api.submit|status|resolve|cancel|inbox   request/reply, answered by a supervisor
    rig.work.supervisor.api.<p>          stream RIG_WORK (work queue): start, resolve, cancel
    rig.work.supervisor.<kind>.<name>.<p>  reports, by their sender: agent.<agent>,
                                         tool.<tool>, verify.<verifier>; <p> is the
                                         job's partition (`partition_of`)
    rig.work.timer                       deadlines and stall checks, to the supervisor
    rig.work.agent.<agent>
    rig.work.tool.<tool>
    rig.work.verify.<verifier>
    rig.work.webhook                     webhooks to POST, to the gateways
    rig.events.<job_id>                  stream RIG_EVENTS (the journal)
    rig.escalations                      stream RIG_EVENTS: jobs handed to a person
    rig.cancel.tool.<tool>               core NATS: a call the job no longer waits for
    rig.dlq.<actor>                      stream RIG_DLQ
    rig.actors.ready                     core NATS: an actor announces itself
    rig.actors.ask, rig.actors.stats     core NATS: `rig ps` asks, every actor answers
    rig.admin.admit                      request/reply: `rig admit`, answered by `rig up`
    RIG_JOBS, RIG_AGENTS, RIG_INBOX,     KV buckets
    RIG_PRESENCE, RIG_BREAKERS, RIG_LLM_CACHE, RIG_GRAPHS, RIG_WEBHOOKS,
    RIG_CLAIMS (a cluster's tool ledger), RIG_CANCELS (tool calls told to stop),
    RIG_TOOLS (what each executor serves), RIG_PUSH (push targets of jobs),
    RIG_THREADS (conversations: the turns of each)
    RIG_RESULTS                          object store: tool results too large to inline
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass

from protocols._errors import InvalidNameError

# Who reports to the supervisor, as the token a report's subject names them by.
SENDERS = ("agent", "tool", "verify")

# The supervisor's messages may be split by job id into up to this many partitions, each
# a consumer of its own, so that each supervisor replica takes the same jobs' reports and
# finds their snapshots in its cache (`Names.partitions`: 1 on one host with one
# supervisor, where a split only costs; `rig up` makes 16 for several supervisors or a
# cluster). Every process of a deployment must split alike: the count is in the work
# stream's metadata, and a process that disagrees refuses to start.
MAX_PARTITIONS = 16


def partition_of(job_id: str, partitions: int) -> int:
    """The partition of a job's messages to the supervisor (stable: CRC-32 of its id)."""
    return zlib.crc32(job_id.encode()) % partitions


_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def check_token(name: str, *, what: str = "name") -> str:
    """Return `name` if it can be one subject token and a durable name, else raise."""
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise InvalidNameError(
            f"{what} {name!r} must be letters, digits, '_' or '-' "
            "(it becomes a NATS subject token and a consumer name)",
            name=str(name),
        )
    return name


# Names an agent may not take: the first token of other roles' keys in the shared
# buckets (a supervisor's presence is `supervisor.<instance>`, a ledger's
# `ledger.<tool>.<host>`), which an agent of that name would be allowed to write.
RESERVED_AGENT_NAMES = frozenset({"supervisor", "ledger"})


def check_agent_name(name: str, *, what: str = "agent name") -> str:
    """Return `name` if an agent may be called so (a token, not a reserved name)."""
    check_token(name, what=what)
    if name in RESERVED_AGENT_NAMES:
        raise InvalidNameError(
            f"{what} {name!r} is reserved: "
            + ", ".join(sorted(RESERVED_AGENT_NAMES))
            + " name other roles' keys (their presence in the shared bucket); pick another",
            name=name,
        )
    return name


class Header:
    """Header names Rig reads and writes."""

    CONTENT_TYPE = "Content-Type"
    MSG_ID = "Nats-Msg-Id"
    # JetStream's compare-and-set: store only if the subject's last sequence is this.
    EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
    KV_OPERATION = "KV-Operation"  # "DEL" deletes a key of a KV bucket
    TTL = "Nats-TTL"  # seconds the server keeps this message (a stream allowing it)
    JOB = "Rig-Job"
    STEP = "Rig-Step"
    TRACEPARENT = "traceparent"


class ContentType:
    MSGPACK = "application/msgpack"
    JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Names:
    """The subjects, streams, consumers and buckets of one Rig deployment."""

    prefix: str = "rig"
    partitions: int = 1  # of the supervisor's work (see MAX_PARTITIONS)

    def __post_init__(self) -> None:
        check_token(self.prefix, what="prefix")
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise InvalidNameError(
                f"partitions must be between 1 and {MAX_PARTITIONS}, not {self.partitions}"
            )

    # Streams and buckets: upper-case prefix, as NATS convention has it.
    @property
    def work_stream(self) -> str:
        return f"{self.prefix.upper()}_WORK"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix.upper()}_EVENTS"

    @property
    def dlq_stream(self) -> str:
        return f"{self.prefix.upper()}_DLQ"

    @property
    def jobs_bucket(self) -> str:
        return f"{self.prefix.upper()}_JOBS"

    @property
    def agents_bucket(self) -> str:
        return f"{self.prefix.upper()}_AGENTS"

    @property
    def breakers_bucket(self) -> str:
        """Circuit breakers per LLM provider and model, shared by every agent process."""
        return f"{self.prefix.upper()}_BREAKERS"

    @property
    def llm_cache_bucket(self) -> str:
        """Exact-match LLM answers, for agents that turn the response cache on."""
        return f"{self.prefix.upper()}_LLM_CACHE"

    @property
    def presence_bucket(self) -> str:
        """Live agent instances: each refreshes its keys, a dead one's expire (bucket TTL)."""
        return f"{self.prefix.upper()}_PRESENCE"

    @property
    def graphs_bucket(self) -> str:
        """Every version of every agent's registration, by `<agent>.<version>` (kept)."""
        return f"{self.prefix.upper()}_GRAPHS"

    @property
    def slots_stream(self) -> str:
        """Concurrency slots of LLM providers: one subject per provider holding one message
        per slot, handed out in the order asked (see `actors.models.limits`)."""
        return f"{self.prefix.upper()}_SLOTS"

    @property
    def slots_all(self) -> str:
        return f"{self.prefix}.slots.>"

    def slots(self, key: str) -> str:
        """The subject of one provider's slots (`key`: the provider's key, dotted)."""
        return f"{self.prefix}.slots.{key}"

    @staticmethod
    def slots_durable(key: str) -> str:
        """The consumer that hands out one provider's slots."""
        return "slots-" + key.replace(".", "_")

    @property
    def results_store(self) -> str:
        """Object store of tool results too large to travel inline (see `result_ref`)."""
        return f"{self.prefix.upper()}_RESULTS"

    @staticmethod
    def result_object(job_id: str, step: int, tool: str) -> str:
        """The name one step's tool result is stored under in `results_store`."""
        return f"{job_id}/{step}/{tool}"

    @property
    def cancels_bucket(self) -> str:
        """Tool calls their jobs stopped waiting for (`<tool>.<job>.<step>`: a `ToolCancel`),
        which an executor checks after its claim, right before the tool starts."""
        return f"{self.prefix.upper()}_CANCELS"

    @property
    def tools_bucket(self) -> str:
        """The tools each executor serves, by `<executor>.<tool>` (a `ToolEntry`): written
        by the executor at start, read by agents and `rig graph`."""
        return f"{self.prefix.upper()}_TOOLS"

    @staticmethod
    def catalog_key(executor: str, tool: str) -> str:
        return f"{executor}.{tool}"

    @staticmethod
    def cancel_key(tool: str, job_id: str, step: int) -> str:
        return f"{tool}.{job_id}.{step}"

    @property
    def webhooks_bucket(self) -> str:
        """What became of each webhook, by `<job_id>.<seq>` (a `WebhookRecord`)."""
        return f"{self.prefix.upper()}_WEBHOOKS"

    @property
    def claims_bucket(self) -> str:
        """The tool ledger of a cluster: one record per idempotency key, `<tool>.<key>`,
        changed only by compare-and-set (`RIG_LEDGER=cluster`)."""
        return f"{self.prefix.upper()}_CLAIMS"

    @property
    def index_bucket(self) -> str:
        """What listing a deployment's jobs reads: one small `JobEntry` per job, by
        `<agent>.<job_id>`, written when its status changes; an ended job's expires with
        its snapshot (`RIG_RETENTION`)."""
        return f"{self.prefix.upper()}_JOB_INDEX"

    @staticmethod
    def index_key(agent: str, job_id: str) -> str:
        return f"{agent}.{job_id}"

    @property
    def running_bucket(self) -> str:
        """The jobs that run or wait to start, by `running_key`: what each supervisor's
        timer sweep reads for its partitions (the key goes while a job waits for a person,
        and when it ends)."""
        return f"{self.prefix.upper()}_RUNNING"

    def running_key(self, job_id: str) -> str:
        return f"{partition_of(job_id, self.partitions)}.{job_id}"

    @property
    def threads_bucket(self) -> str:
        """Threads (conversations), by id (a `ThreadRecord`), written by supervisors."""
        return f"{self.prefix.upper()}_THREADS"

    @property
    def flows_bucket(self) -> str:
        """Concurrency keys, by `<agent>.<key>` (a `FlowRecord`), written by supervisors."""
        return f"{self.prefix.upper()}_FLOWS"

    @property
    def schedules_bucket(self) -> str:
        """Schedules, by name (a `Schedule`: its spec and what its ticks did), written by
        supervisors."""
        return f"{self.prefix.upper()}_SCHEDULES"

    @property
    def push_bucket(self) -> str:
        """Push targets of jobs that take them (`PUSH_LABEL`), by `<job_id>.<target id>`:
        kept and read by the gateways, which POST the jobs' status webhooks to each."""
        return f"{self.prefix.upper()}_PUSH"

    @property
    def memory_bucket(self) -> str:
        """What agents remember (`Agent.memory`), by `<agent>.<scope>.<owner>.<key>`:
        written by the memory tools, read by the agents (per-entry TTLs)."""
        return f"{self.prefix.upper()}_MEMORY"

    @staticmethod
    def memory_key(agent: str, scope: str, owner: str, key: str = "") -> str:
        """An entry's key in `memory_bucket` (without `key`: the prefix of the scope's)."""
        return f"{agent}.{scope}.{owner}.{key}"

    @property
    def inbox_bucket(self) -> str:
        """Jobs waiting for a person, by job id (value: an `Escalation`)."""
        return f"{self.prefix.upper()}_INBOX"

    # Request/reply API.
    @property
    def api_submit(self) -> str:
        return f"{self.prefix}.api.submit"

    @property
    def api_status(self) -> str:
        return f"{self.prefix}.api.status"

    @property
    def api_resolve(self) -> str:
        return f"{self.prefix}.api.resolve"

    @property
    def api_cancel(self) -> str:
        return f"{self.prefix}.api.cancel"

    @property
    def api_signal(self) -> str:
        return f"{self.prefix}.api.signal"

    @property
    def api_inbox(self) -> str:
        return f"{self.prefix}.api.inbox"

    @property
    def api_schedule(self) -> str:
        return f"{self.prefix}.api.schedule"

    @property
    def api_queue(self) -> str:
        """Queue group shared by every supervisor answering the API."""
        return f"{self.prefix}-api"

    # Work subjects (stream RIG_WORK).
    @property
    def work_all(self) -> str:
        return f"{self.prefix}.work.>"

    @property
    def supervisor(self) -> str:
        """What the supervisor sends itself from the API (jobs to start, people's
        commands), every partition: a pattern (`supervisor_for` is one job's subject)."""
        return f"{self.prefix}.work.supervisor.api.*"

    def supervisor_for(self, job_id: str) -> str:
        """Where the API sends one job's start and people's commands for it."""
        return f"{self.prefix}.work.supervisor.api.{partition_of(job_id, self.partitions)}"

    @property
    def supervisor_all(self) -> str:
        """Everything the supervisor reads from the work stream: its own and the reports."""
        return f"{self.prefix}.work.supervisor.>"

    def partition_subjects(self, partition: int) -> list[str]:
        """What the supervisor's consumer of one partition reads: its own messages and
        every sender's reports for the jobs of that partition."""
        base = f"{self.prefix}.work.supervisor"
        return [f"{base}.api.{partition}", f"{base}.*.*.{partition}"]

    def report(self, sender: str, name: str, job_id: str) -> str:
        """Where `name` (an agent, tool or verifier: `sender` is `agent`, `tool` or
        `verify`) reports on `job_id` to the supervisor. The subject names the sender, and
        each sender's NATS user may publish only under its own name: the server, not the
        payload, says who sent a report. Its last token is the job's partition."""
        return f"{self.reports_from(sender, name)[:-1]}{partition_of(job_id, self.partitions)}"

    def reports_from(self, sender: str, name: str) -> str:
        """Every report of `name`, whatever the job: what its NATS user may publish."""
        if sender not in SENDERS:
            raise InvalidNameError(f"a report's sender is one of {SENDERS}, not {sender!r}")
        return f"{self.prefix}.work.supervisor.{sender}.{check_token(name, what=sender)}.*"

    def sender_of(self, subject: str) -> tuple[str, str] | None:
        """The (kind, name) a report's subject names; None for the supervisor's own."""
        parts = subject.removeprefix(f"{self.prefix}.work.supervisor.").split(".")
        if len(parts) == 3 and parts[0] in SENDERS and parts[1] and parts[2].isdigit():
            return parts[0], parts[1]
        return None

    @property
    def timer(self) -> str:
        """Deadline and stall checks the supervisor sends itself, held back until due."""
        return f"{self.prefix}.work.timer"

    @property
    def webhook(self) -> str:
        """Webhooks to deliver (`WebhookDelivery`), read by every gateway."""
        return f"{self.prefix}.work.webhook"

    def agent(self, agent: str) -> str:
        return f"{self.prefix}.work.agent.{check_token(agent, what='agent name')}"

    def tool(self, tool: str) -> str:
        return f"{self.prefix}.work.tool.{check_token(tool, what='tool name')}"

    def verifier(self, verifier: str) -> str:
        return f"{self.prefix}.work.verify.{check_token(verifier, what='verifier name')}"

    # Durable consumer names: one per work subject, since a work-queue stream
    # allows several consumers only on non-overlapping subjects.
    @staticmethod
    def supervisor_durable(partition: int) -> str:
        """The supervisor's consumer of one partition (`partition_subjects`)."""
        return f"supervisor-{partition}"

    @property
    def timer_durable(self) -> str:
        return "supervisor-timer"

    @property
    def dlq_durable(self) -> str:
        """The supervisor's consumer of every dead letter: it moves the letter's job."""
        return "supervisor-dlq"

    @property
    def webhook_durable(self) -> str:
        return "webhooks"

    def agent_durable(self, agent: str) -> str:
        return f"agent-{check_token(agent, what='agent name')}"

    def tool_durable(self, tool: str) -> str:
        return f"tool-{check_token(tool, what='tool name')}"

    def verifier_durable(self, verifier: str) -> str:
        return f"verify-{check_token(verifier, what='verifier name')}"

    # The journal (stream RIG_EVENTS).
    @property
    def events_all(self) -> str:
        return f"{self.prefix}.events.>"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}.events.{check_token(job_id, what='job id')}"

    @property
    def escalations(self) -> str:
        """Every job handed to a person, as an `Escalation` (stored with the journals)."""
        return f"{self.prefix}.escalations"

    # Dead letters (stream RIG_DLQ).
    @property
    def dlq_all(self) -> str:
        return f"{self.prefix}.dlq.>"

    def dlq(self, actor: str) -> str:
        return f"{self.prefix}.dlq.{check_token(actor, what='actor name')}"

    # Core (not stored) subjects.
    def tool_cancel(self, tool: str) -> str:
        """Where the supervisor tells every executor of `tool` to stop a call (a
        `ToolCancel`): its job was cancelled, ran out of time, or moved on without it."""
        return f"{self.prefix}.cancel.tool.{check_token(tool, what='tool name')}"

    @property
    def cancels_all(self) -> str:
        return f"{self.prefix}.cancel.>"

    def tokens(self, job_id: str) -> str:
        return f"{self.prefix}.tokens.{check_token(job_id, what='job id')}"

    @property
    def actor_ready(self) -> str:
        """Every actor announces itself here once it consumes (core NATS, not stored)."""
        return f"{self.prefix}.actors.ready"

    @property
    def admit(self) -> str:
        """`rig admit` asks the deployment's `rig up` here to give new actor classes their
        NATS identities (the admin's alone: no other role may publish to it)."""
        return f"{self.prefix}.admin.admit"

    @property
    def actors_ask(self) -> str:
        """`rig ps` asks every live actor for its counters here (an `ActorsAsk`)..."""
        return f"{self.prefix}.actors.ask"

    @property
    def actors_stats(self) -> str:
        """... and each answers here, naming the ask: a broadcast, never a reply subject,
        so no asker can point an actor's answer at a subject of its choosing."""
        return f"{self.prefix}.actors.stats"


def presence_key(agent: str, instance: str) -> str:
    """The key one live process of `agent` refreshes in the presence bucket."""
    return f"{check_token(agent, what='agent name')}.{check_token(instance, what='instance')}"


def kv_subject(bucket: str, key: str) -> str:
    """The subject a KV bucket stores `key` under (what nats-py's KeyValue publishes to)."""
    return f"$KV.{bucket}.{key}"


def msg_id(job_id: str, step: int, kind: str) -> str:
    """The `Nats-Msg-Id` of a message: one id per job, step and kind of message."""
    return f"{job_id}:{step}:{kind}"


def child_job_id(parent: str, step: int, index: int = 0) -> str:
    """The id of the `index`-th child job a parent's step starts: made from the parent's
    id and step alone, so a decision handled twice (redelivered, replayed after a crash)
    names the same child, which starts once. Within the 64 characters of a job id: a
    long parent id gives its first 36 and a digest of the whole."""
    made = f"{parent}-s{step}c{index}"
    if len(made) <= _JOB_ID_MAX:
        return made
    digest = hashlib.sha256(made.encode()).hexdigest()[:12]
    return f"{parent[:36]}-{digest}-s{step}c{index}"[:_JOB_ID_MAX]


_JOB_ID_MAX = 64


# Agents' counters of model calls (in `rig ps`'s answers), and the breakers' keys.
_MODEL_COUNTS = "llm"


def model_count(provider: str, model: str, what: str) -> str:
    """The name of an agent's counter `what` of calls to `provider` and `model`."""
    return f"{_MODEL_COUNTS}|{provider}|{model}|{what}"


def model_count_of(name: str) -> tuple[str, str, str] | None:
    """(provider, model, what) of a counter `model_count` named; None for any other."""
    first, _, rest = name.partition("|")
    provider, _, rest = rest.partition("|")
    model, _, what = rest.rpartition("|")
    return (provider, model, what) if first == _MODEL_COUNTS and provider and what else None


def breaker_key(provider: str, model: str) -> str:
    """A KV key for a provider and model (`.` separates tokens; other odd characters go)."""
    return re.sub(r"[^A-Za-z0-9_=.-]", "_", f"{provider}.{model}")
