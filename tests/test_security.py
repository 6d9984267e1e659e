"""Least privilege on the wire: every role's NATS user, against a real server running
the generated authorization block (the suite's servers all do, as `rig up`'s does).

The matrix is derived, not listed: for each role, every subject another role may publish
to and this one may not (commands, reports, KV keys, consumers, JetStream's admin API) is
tried and must be refused by the server, and so must a subscription to another role's
inbox or to the work and API subjects. What each role needs is shown working by the
refund example under those users (here, and in every other test of the suite).
"""

from __future__ import annotations

from collections.abc import Sequence

import nats
from nats.aio.client import Client

from actors._security import roles_for, seed_path
from actors.examples.refund import RefundAgent
from actors.testing import Deployment, eventually
from protocols import DeadLetter, Decision, encode
from protocols._permissions import Role, inbox_prefix
from tests.conftest import REFUND, refund_rows
from tests.gated import GatedAgent

GATED = ("actors:Supervisor", "tests.gated:GatedAgent", *REFUND[2:])


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
            concrete(p)
            for other in others
            for p in other.grants.publish
            if not may_publish(role, concrete(p))
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
