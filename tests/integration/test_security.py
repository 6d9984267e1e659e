"""Least privilege on the wire: every role's NATS user, against a real server running
the generated authorization block (the suite's servers all do, as `rig up`'s does).

The matrix is derived, not listed: for each role, every subject another role may publish
to and this one may not (commands, reports, KV keys, consumers, JetStream's admin API) is
tried and must be refused by the server, and so must a subscription to another role's
inbox or to the work and API subjects. What each role needs is shown working by the
refund example under those users (here, and in every other test of the suite).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from actors.deploy.roles import roles_for
from actors.examples.refund import RefundAgent
from actors.runtime.credentials import seed_path
from actors.testing import Deployment, eventually
from protocols import DeadLetter, Decision, RigError, encode
from protocols._permissions import STATE_ROLES, Role, inbox_prefix, local_subject
from tests.conftest import REFUND, refund_rows
from tests.support.gated import GatedAgent

GATED = ("actors:Supervisor", "tests.support.gated:GatedAgent", *REFUND[2:])


def matches(subject: str, pattern: str) -> bool:
    """NATS subject matching: `*` one token, `>` one or more at the end."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or (token != "*" and token != tokens[i]):
            return False
    return len(tokens) == len(wanted)


def concrete(pattern: str) -> str:
    """A subject the pattern matches (a wildcard filled in with an unlikely token)."""
    return pattern.replace("*", "zz9").replace(">", "zz9")


def may_publish(role: Role, subject: str) -> bool:
    return role.everything or any(matches(subject, p) for p in role.grants.publish)


class Refusals:
    """A connection as one role, and the server's permission errors it receives."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Client | None = None

    async def connect(self, rig: Deployment, role: str) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(
            rig.server.url,
            nkeys_seed=str(seed_path(rig.home, role)),
            inbox_prefix=inbox_prefix(rig.names, role),
            error_cb=on_error,
            allow_reconnect=False,
        )
        return self.nc

    def refused(self, what: str, subject: str) -> bool:
        wanted = f'permissions violation for {what} to "{subject}"'.lower()
        return any(wanted in error.lower() for error in self.errors)

    async def tried(self, publishes: list[str], subscriptions: Sequence[str] = ()) -> None:
        """Publish to and subscribe to each; return once the server refused every one."""
        assert self.nc is not None
        for subject in publishes:
            await self.nc.publish(subject, b"{}")
        for subject in subscriptions:
            await self.nc.subscribe(subject)
        await self.nc.flush(timeout=10)

        async def all_refused() -> bool:
            missing = [s for s in publishes if not self.refused("publish", s)]
            missing += [s for s in subscriptions if not self.refused("subscription", s)]
            assert not missing, (len(missing), missing[:10])
            return True

        await eventually(all_refused, timeout=20)


async def test_every_role_is_refused_what_is_not_its_work(rig: Deployment) -> None:
    """Each role of the refund deployment, connected with its own seed: every publish
    another role may make and it may not, and every subscription to another role's inbox
    or to the work, API and journal subjects, is refused by the server; then the same
    users run the refund example to its end."""
    await rig.grant(*REFUND)
    roles = roles_for(rig.names, rig.classes)
    assert {r.name for r in roles} >= {
        "supervisor",
        "agent-refund",
        "tools-refund-tools",
        "verifier-refund-checks",
        "gateway",
        "client",
        "admin",
    }
    n = rig.names
    admin_api = [
        f"$JS.API.STREAM.DELETE.{n.work_stream}",
        f"$JS.API.STREAM.PURGE.KV_{n.jobs_bucket}",
        f"$JS.API.STREAM.CREATE.{n.prefix.upper()}_EVIL",
        f"$JS.API.STREAM.UPDATE.{n.events_stream}",
        f"$JS.API.CONSUMER.DELETE.{n.work_stream}.supervisor",
        f"$JS.API.STREAM.MSG.DELETE.{n.events_stream}",
    ]
    checked = 0
    for role in roles:
        if role.everything:
            continue
        others = [r for r in roles if r.name != role.name]
        forbidden = {
            subject
            for other in others
            for p in other.grants.publish
            if not may_publish(role, concrete(p))
            # as written, and as this role's account would reach it
            for subject in {concrete(p), local_subject(n, role.name, concrete(p))}
        } | set(admin_api)
        assert not any(may_publish(role, s) for s in admin_api), role.name
        subscriptions = [
            *(f"{inbox_prefix(n, other.name)}.>" for other in others),
            "_INBOX.>",
            n.work_all,
            n.events_all,
            *([n.api_submit] if role.name != "supervisor" else []),
        ]
        watch = Refusals()
        nc = await watch.connect(rig, role.name)
        try:
            await watch.tried(sorted(forbidden), subscriptions)
            checked += len(forbidden) + len(subscriptions)
        finally:
            await nc.close()
    assert checked > 200  # a matrix, not a sample

    # What each needs works: the refund example, start to end, under these users.
    await rig.spawn(*REFUND)  # after a reload: the server's log says so
    reply = await rig.client.submit("refund", RefundAgent.example_input)
    info = await rig.client.wait(reply.job_id, timeout=rig.within(30))
    assert info.status == "succeeded" and len(refund_rows(rig.home)) == 1
    since = rig.server.log.read_text().rsplit("Reloaded server configuration", 1)[1]
    assert "Violation" not in since  # "Publish Violation", "Subscription Violation"


async def test_the_client_reads_and_asks_but_cannot_act_for_another_role(rig: Deployment) -> None:
    """With the client's seed: a job can be submitted and read, but no consumer of
    another role can be read or pulled, `RIG_JOBS` not written, `rig.work.>` not
    published to."""
    await rig.spawn(*REFUND)
    watch = Refusals()
    nc = await watch.connect(rig, "client")
    n = rig.names
    try:
        reply = await nc.request(
            n.api_submit,
            encode({"agent": "refund", "input": RefundAgent.example_input}),
            timeout=10,
        )
        assert b"accepted" in reply.data
        forbidden = [
            f"$JS.API.CONSUMER.INFO.{n.work_stream}.{n.agent_durable('refund')}",
            f"$JS.API.CONSUMER.MSG.NEXT.{n.work_stream}.{n.agent_durable('refund')}",
            f"$JS.API.CONSUMER.MSG.NEXT.{n.work_stream}.{n.supervisor_durable(0)}",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{n.work_stream}.{n.tool_durable('issue_refund')}",
            f"$KV.{n.jobs_bucket}.some-job",
            f"$KV.{n.agents_bucket}.refund",
            n.agent("refund"),
            n.tool("issue_refund"),
            n.supervisor_for("some-job"),
            n.report("agent", "refund", "some-job"),
        ]
        await watch.tried(forbidden)
    finally:
        await nc.close()


async def test_a_tool_executor_cannot_get_a_forged_decision_accepted(rig: Deployment) -> None:
    """A compromised tool executor, with its own seed, tries to decide `deny` for a job
    whose agent is thinking: under the agent's name the server refuses the publish; under
    its own name the supervisor refuses the report (dead-lettered with the reason,
    counted), and the job still ends as its real agent decides."""
    thinking = await rig.nc.subscribe(f"{rig.prefix}.test.thinking")
    await rig.spawn(*GATED)
    job = await rig.client.submit("gated", GatedAgent.example_input)
    await thinking.next_msg(timeout=rig.within(30))  # the agent holds step 2 (review)
    forged = encode(Decision(job_id=job.job_id, step=2, edge="deny", reason="forged"))
    watch = Refusals()
    nc = await watch.connect(rig, "tools-refund-tools")
    try:
        await watch.tried([rig.names.report("agent", "gated", job.job_id)])
        await nc.jetstream().publish(rig.names.report("tool", "lookup_order", job.job_id), forged)
    finally:
        await nc.close()

    letters = await eventually(lambda: _forged_letters(rig), timeout=rig.within(30))
    [letter] = letters
    assert letter.error["code"] == "forged_report"
    assert "sent as tool 'lookup_order'" in letter.reason
    await rig.nc.publish(f"{rig.prefix}.test.gate", b"go")
    info = await rig.client.wait(job.job_id, timeout=rig.within(30))
    assert info.status == "succeeded" and info.path[-1] == "done"
    events = await rig.client.journal(job.job_id)
    assert not any(e.type == "decision" and e.data.get("edge") == "deny" for e in events)
    [supervisor] = [a for a in await rig.client.actors() if a.kind == "supervisor"]
    assert supervisor.counts["forged_reports"] == 1


async def _forged_letters(rig: Deployment) -> list[DeadLetter]:
    letters = [letter for _id, letter in await rig.client.dead_letters()]
    return [letter for letter in letters if letter.error.get("code") == "forged_report"]


# --- someone else writing for you: reply subjects, JetStream's API, deliver subjects ---


def _targets(rig: Deployment, job_id: str) -> dict[str, str]:
    """Subjects of every stream and bucket that a write would change, each with the
    stream that stores it: existing keys (the job's snapshot, the agent's registration)
    and a fresh one in every bucket, the object store's chunks and metadata, and a
    subject of each stream."""
    n = rig.names
    buckets = [
        n.jobs_bucket,
        n.agents_bucket,
        n.inbox_bucket,
        n.breakers_bucket,
        n.llm_cache_bucket,
        n.graphs_bucket,
        n.claims_bucket,
        n.presence_bucket,
        n.webhooks_bucket,
    ]
    targets = {f"$KV.{b}.zz-target": f"KV_{b}" for b in buckets}
    targets[f"$KV.{n.jobs_bucket}.{job_id}"] = f"KV_{n.jobs_bucket}"
    targets[f"$KV.{n.agents_bucket}.refund"] = f"KV_{n.agents_bucket}"
    store = n.results_store
    targets[f"$O.{store}.C.zz-target"] = f"OBJ_{store}"
    targets[f"$O.{store}.M.zz-target"] = f"OBJ_{store}"
    targets[f"{n.prefix}.work.agent.zz-target"] = n.work_stream
    targets[n.events(job_id)] = n.events_stream
    targets[n.escalations] = n.events_stream
    targets[n.dlq("zz-target")] = n.dlq_stream
    targets[n.slots("zz-target")] = n.slots_stream
    return targets


async def _stored(js: JetStreamContext, targets: dict[str, str]) -> dict[str, int]:
    """The last stored sequence of each target subject (0: none)."""
    found = {}
    for subject, stream in targets.items():
        try:
            found[subject] = (await js.get_last_msg(stream, subject)).seq or 0
        except NotFoundError:
            found[subject] = 0
    return found


def _tricks(rig: Deployment, role: Role) -> list[tuple[str, bytes]]:
    """Every request `role` may send whose answer the server or a Rig responder would
    write to the reply subject: each of JetStream's API subjects and each publish (a
    stream's acknowledgement answers it) in its grants, every `rig.api.*` endpoint,
    the old discovery subjects, and `rig ps`'s ask."""
    n = rig.names
    tricks = [
        (n.api_submit, encode({"agent": "refund", "input": RefundAgent.example_input})),
        (n.api_status, encode({"job_id": "zz-target"})),
        (n.api_cancel, encode({"job_id": "zz-target"})),
        (n.api_resolve, encode({"job_id": "zz-target", "edge": "approve"})),
        (n.api_inbox, encode({})),
        ("$SRV.PING", b""),
        ("$SRV.STATS", b""),
        ("$SRV.INFO", b""),
        (n.actors_ask, b'{"ask": "zz"}'),
    ]
    for granted in sorted(role.grants.publish):
        if granted.startswith("$KV.") and concrete(granted) == granted:
            continue  # the role's own key: its value is kept for the job that follows
        subject = local_subject(n, role.name, concrete(granted))
        body = b'{"batch": 1, "no_wait": true}' if ".MSG.NEXT." in subject else b"{}"
        tricks.append((subject, body))
    return tricks


async def _asked(nc: Client, subject: str, body: bytes) -> None:
    with contextlib.suppress(Exception):  # refused, or no one answers: fine
        await nc.request(subject, body, timeout=2)


async def test_no_role_can_have_another_write_for_it(rig: Deployment) -> None:
    """Each role, with its real seed, sends every request it may send (JetStream's API,
    its publishes, `rig.api.*`, `$SRV.*`, the ask of `rig ps`) with a reply subject
    naming a key of every bucket or a subject of every stream it may not write, or
    JetStream's admin API (a purge, a delete), and makes consumers deliver there: each is
    refused by the server or writes nothing (the targets' stored messages are unchanged,
    no stream purged or deleted), and the deployment still works after."""
    await rig.spawn(*REFUND)
    reply = await rig.client.submit("refund", RefundAgent.example_input)
    info = await rig.client.wait(reply.job_id, timeout=rig.within(30))
    assert info.status == "succeeded"
    targets = _targets(rig, reply.job_id)
    n = rig.names
    # JetStream's admin API as the reply: an answer published there would be a request.
    admin = {
        f"$JS.API.STREAM.PURGE.{n.events_stream}": n.events_stream,
        f"$JS.API.STREAM.PURGE.KV_{n.jobs_bucket}": f"KV_{n.jobs_bucket}",
        f"$JS.API.STREAM.DELETE.{n.dlq_stream}": n.dlq_stream,
    }
    js = rig.nc.jetstream()
    before = await _stored(js, targets)
    kept = {stream: (await js.stream_info(stream)).state.messages for stream in admin.values()}
    roles = roles_for(rig.names, rig.classes)
    tried = 0
    for role in roles:
        if role.name in STATE_ROLES:
            continue  # they may write every key and stream by design
        nc = await Refusals().connect(rig, role.name)
        try:
            own = [t for t in targets if may_publish(role, t)]
            for subject, body in _tricks(rig, role):
                for target in [*targets, *admin]:
                    if target not in own:
                        await nc.publish(subject, body, reply=target)
                        tried += 1
            # Consumers that would deliver the journal there.
            stream = rig.names.events_stream
            create = f"$JS.API.CONSUMER.CREATE.{stream}"
            if may_publish(role, create):
                api = local_subject(rig.names, role.name, create)
                for target in targets:
                    config = {"deliver_subject": target, "ack_policy": "none"}
                    request = {"stream_name": stream, "config": config}
                    await nc.publish(api, json.dumps(request).encode(), reply=nc.new_inbox())
                    tried += 1
            await nc.flush(timeout=10)
            # Each kind of request once more, answered to this role's own inbox: the
            # server has handled the ones before it (those it answers at all).
            await asyncio.gather(
                *(_asked(nc, subject, body) for subject, body in _tricks(rig, role))
            )
        finally:
            await nc.close()
    assert tried > 1000
    assert await _stored(js, targets) == before
    for stream, messages in kept.items():  # not purged, not deleted
        assert (await js.stream_info(stream)).state.messages >= messages, stream

    # And the deployment is whole: a second job runs to its end.
    again = await rig.client.submit("refund", RefundAgent.example_input | {"order_id": "A-2002"})
    info = await rig.client.wait(again.job_id, timeout=rig.within(30))
    assert info.status == "succeeded"


async def test_no_executor_may_purge_results_and_no_agent_another_s_cache(
    rig: Deployment,
) -> None:
    """A tool executor may store results but not purge the store (a purge's filter is in
    its body: the right to purge one object is the right to purge all); an agent may
    write its own cached answers only. Both refused by the server, the store intact; a
    result too large to travel inline is still stored and read back by reference."""
    await rig.grant(*REFUND)
    n = rig.names
    store = await rig.nc.jetstream().object_store(n.results_store)
    await store.put("kept", b"a result another job needs")
    tools = Refusals()
    nc = await tools.connect(rig, "tools-refund-tools")
    try:
        purge = local_subject(
            n, "tools-refund-tools", f"$JS.API.STREAM.PURGE.OBJ_{n.results_store}"
        )
        await tools.tried([purge])
    finally:
        await nc.close()
    assert (await store.get("kept")).data == b"a result another job needs"
    agent = Refusals()
    nc = await agent.connect(rig, "agent-refund")
    try:
        await agent.tried([f"$KV.{n.llm_cache_bucket}.another-agent.0123abcd"])
    finally:
        await nc.close()


async def test_a_snapshot_that_does_not_decode_is_an_alarm_not_a_skip(rig: Deployment) -> None:
    """A job's snapshot overwritten with bytes that are no snapshot (as only the admin
    still could): the supervisor logs an error naming the job, and `status` answers a
    typed error saying the stored snapshot does not decode, rather than skipping it."""
    await rig.spawn(*REFUND)
    reply = await rig.client.submit("refund", RefundAgent.example_input)
    await rig.client.wait(reply.job_id, timeout=rig.within(30))
    kv = await rig.nc.jetstream().key_value(rig.names.jobs_bucket)
    await kv.put(reply.job_id, b"\xc1 not a snapshot")
    with pytest.raises(RigError, match="stored snapshot does not decode"):
        await rig.client.status(reply.job_id)
    log = rig.log_of("actors:Supervisor").read_text()
    assert "job.snapshot_unreadable" in log and reply.job_id in log
