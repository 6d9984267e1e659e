"""What a deployment keeps, and for how long: ended jobs expire after `RIG_RETENTION`
(their snapshot and index entry; a parked job never does), listing reads the index, the
LLM cache and the cluster's ledger do not grow for ever, and every stream is bounded."""

from __future__ import annotations

import pytest
from nats.js.api import DiscardPolicy

from actors.models.router import ResponseCache
from actors.runtime.nats import ensure_topology, kv_read, stream_configs
from actors.testing import Deployment, eventually
from actors.testing.harness import harness
from actors.tools.cluster import ClusterLedger, prune_claims
from protocols import UnknownJobError

pytestmark = pytest.mark.integration

TWICE = ("actors:Supervisor", "tests.support.twice:TwiceAgent")


async def _snapshot(rig: Deployment, job_id: str) -> bytes:
    jobs = await rig.client.js.key_value(rig.names.jobs_bucket)
    return (await kv_read(jobs, job_id))[0]


async def test_an_ended_job_expires_and_a_parked_one_stays(rig: Deployment) -> None:
    """With `RIG_RETENTION=2s`: a cancelled job is listed, then its snapshot and index
    entry expire (the server deletes them), and `rig status` says it is unknown; the job
    parked for a person beside it stays, however long it waits. The listing's counts
    come from the index."""
    rig.extra_env["RIG_RETENTION"] = "2s"
    await rig.spawn(*TWICE)
    ended = await rig.client.submit("twice", {})
    parked = await rig.client.submit("twice", {})
    for job in (ended, parked):
        assert (await rig.client.wait(job.job_id, timeout=rig.within(30))).status == (
            "waiting_human"
        )
    await rig.client.cancel(ended.job_id, reason="not needed")
    jobs, counts = await rig.client.job_page(agent="twice")
    assert {job.job_id for job in jobs} == {ended.job_id, parked.job_id}
    assert counts == {"cancelled": 1, "waiting_human": 1}

    async def gone() -> bool:
        return not await _snapshot(rig, ended.job_id)

    await eventually(gone, timeout=rig.within(30), message="the ended job's snapshot expires")
    jobs, counts = await rig.client.job_page(agent="twice")
    assert [job.job_id for job in jobs] == [parked.job_id]
    assert counts == {"waiting_human": 1}
    with pytest.raises(UnknownJobError):
        await rig.client.status(ended.job_id)
    assert await _snapshot(rig, parked.job_id)  # older than the retention, and kept


async def test_a_deployment_from_before_the_index_gets_its_jobs_entered(
    rig: Deployment,
) -> None:
    """An index made where jobs exist already (an upgrade) is filled from their
    snapshots once, so listing still shows every job."""
    await rig.spawn(*TWICE)
    job = await rig.client.submit("twice", {})
    await rig.client.wait(job.job_id, timeout=rig.within(30))
    admin = await harness(rig)
    try:
        js = admin.jetstream()
        await js.delete_key_value(rig.names.index_bucket)
        await ensure_topology(js, rig.names)
    finally:
        await admin.close()
    jobs, counts = await rig.client.job_page()
    assert [listed.job_id for listed in jobs] == [job.job_id]
    assert counts == {"waiting_human": 1}


async def test_a_cached_answer_expires(rig: Deployment) -> None:
    """An LLM cache entry is deleted by the server when its time is up, not kept for
    ever and only ignored."""
    admin = await harness(rig)
    try:
        kv = await admin.jetstream().key_value(rig.names.llm_cache_bucket)
        cache = ResponseCache(kv, ttl=1.0, scope="twice")
        await cache.put("k1", "an answer", "local", "m")
        assert (await cache.get("k1")) is not None

        async def expired() -> bool:
            return not (await kv_read(kv, "twice.k1"))[0]

        await eventually(expired, timeout=rig.within(30), message="the cache entry expires")
    finally:
        await admin.close()


async def test_the_clusters_ledger_drops_the_records_of_jobs_long_gone(
    rig: Deployment,
) -> None:
    """`rig up` prunes the cluster's ledger every hour by this rule: a finished record
    of a job whose snapshot expired (no snapshot, older than the retention) goes; one of
    a job still kept (parked for a person) stays, whatever its age."""
    await rig.spawn(*TWICE)
    parked = await rig.client.submit("twice", {})
    await rig.client.wait(parked.job_id, timeout=rig.within(30))
    admin = await harness(rig)
    try:
        js = admin.jetstream()
        ledger = await ClusterLedger.open(js, rig.names, owner="host:1")
        for key, job_id in (("k-gone", "long-gone"), ("k-parked", parked.job_id)):
            claim = await ledger.claim(key, job_id=job_id, tool="charge", args_hash="h", lease=60)
            assert await ledger.complete(key, claim.epoch, {"paid": key})
        # Both records are older than a retention that ended a minute from now.
        deleted = await prune_claims(js, rig.names, older_than=-60, retention=-60)
        assert deleted == 1
        assert await ledger.get("k-gone") is None
        assert await ledger.get("k-parked") is not None
    finally:
        await admin.close()


async def test_every_stream_is_bounded(rig: Deployment) -> None:
    """Each stream Rig makes has a limit: the journal and the dead letters by age, the
    work queue and the slots by count, refusing new work when full (a publish error the sender sees)
    rather than dropping queued work. A work stream made without one gets it."""
    admin = await harness(rig)
    try:
        js = admin.jetstream()
        for config in stream_configs(rig.names):
            info = await js.stream_info(str(config.name))
            limits = (info.config.max_age or 0, info.config.max_msgs or -1)
            assert limits[0] > 0 or limits[1] > 0, (config.name, limits)
        work = await js.stream_info(rig.names.work_stream)
        assert work.config.discard == DiscardPolicy.NEW
        # A work stream an older Rig made, without a limit, is given one.
        work.config.max_msgs, work.config.discard = -1, DiscardPolicy.OLD
        await js.update_stream(work.config)
        await ensure_topology(js, rig.names)
        work = await js.stream_info(rig.names.work_stream)
        assert (work.config.max_msgs or 0) > 0 and work.config.discard == DiscardPolicy.NEW
    finally:
        await admin.close()
