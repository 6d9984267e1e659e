"""The same rules, two runtimes: random graphs with scripted answers (tests/support/randomgraphs.py)
end with the same path, edges and status whether `actors.testing.run_job` runs them in
one process or a supervisor, agents, a tool executor and a verifier run them as
processes on a real server; so do the child jobs their sub-agent and fan-out edges
start."""

from __future__ import annotations

from typing import Any

import pytest

from actors.testing import Deployment, edges_of, path_of, run_job
from protocols import Event
from tests.support.randomgraphs import AGENTS, LEAF_AGENTS, EchoTools, EvenChecks

pytestmark = [pytest.mark.integration]


def decisions(journal: list[Event]) -> list[tuple[Any, ...]]:
    """What each decision was: its state, edge, whether the safe one, and its re-asks."""
    return [
        tuple(e.data.get(k) for k in ("state", "edge", "tool", "fallback", "reasks", "args"))
        for e in journal
        if e.type == "decision"
    ]


async def test_run_job_and_real_processes_agree_on_random_graphs(rig: Deployment) -> None:
    every = [*AGENTS.values(), *LEAF_AGENTS]
    targets = [f"tests.support.randomgraphs:{cls.__name__}" for cls in every]
    await rig.spawn(
        "actors:Supervisor",
        "tests.support.randomgraphs:EchoTools",
        "tests.support.randomgraphs:EvenChecks",
        *targets,
    )
    local = {
        seed: await run_job(
            cls,
            {"case": seed},
            tools=[EchoTools],
            verifiers=[EvenChecks],
            agents=LEAF_AGENTS,
            job_id=f"random-{seed}",
        )
        for seed, cls in AGENTS.items()
    }
    for seed, cls in AGENTS.items():
        await rig.client.submit(cls.name, {"case": seed}, job_id=f"random-{seed}")
    ends, children = set(), 0
    for seed, parent in local.items():
        for run in [parent, *parent.children]:
            journal = [
                event
                async for event in rig.client.events(
                    run.job_id, timeout=rig.within(30), until_parked=True
                )
            ]
            status = journal[-1].data["status"]
            assert (path_of(journal), edges_of(journal), status) == (
                run.path,
                run.edges,
                run.status,
            ), f"seed {seed}, job {run.job_id}"
            # The journals agree event by event, in type and order, not only in the end.
            assert [e.type for e in journal] == [e.type for e in run.journal], run.job_id
            assert decisions(journal) == decisions(run.journal), f"seed {seed}, {run.job_id}"
            if run is parent:
                ends.add(status)
        children += len(parent.children)
    assert children >= 5  # the seeds start child jobs, fan-outs among them
    # The seeds cover each way a job can end here.
    assert ends == {"succeeded", "failed", "step_limit", "waiting_human"}, ends
