"""The benchmark's graph in Rig's peers: LangGraph (SQLite checkpointer, in memory) and DBOS.

    python scripts/bench_peers.py PEER RUNS CONCURRENCY

prints `{"steps_per_s": ..., "runs": ..., "seconds": ...}`. Each peer runs in a process
of its own (DBOS keeps global state), on the same graph as Rig's pipeline example:
five times, decide an edge (a zero-latency rule, the same as Rig's stand-in), run the
side-effecting tool, verify its result. CONCURRENCY 1 calls the sync API one run after
another; more runs that many at once with the peer's asyncio API.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

STEPS = 5


def decide(state: int) -> str:
    """The routing rule: the same every system runs, standing in for a zero-latency LLM."""
    return "next" if state <= STEPS else "stop"


def work(n: int, state: int) -> dict[str, Any]:
    return {"state": f"s{state}", "n": n, "done": True}


def verify(result: dict[str, Any]) -> bool:
    return bool(result.get("done"))


# --- LangGraph -------------------------------------------------------------------------


class PipelineState(TypedDict):
    n: int
    step: int
    edge: str
    result: dict[str, Any]
    passed: bool


def langgraph_builder() -> Any:
    from langgraph.graph import END, START, StateGraph

    def decide_node(state: PipelineState) -> dict[str, Any]:
        return {"edge": decide(state["step"] + 1)}

    def tool_node(state: PipelineState) -> dict[str, Any]:
        return {"result": work(state["n"], state["step"] + 1)}

    def verify_node(state: PipelineState) -> dict[str, Any]:
        return {"passed": verify(state["result"]), "step": state["step"] + 1}

    graph = StateGraph(PipelineState)
    graph.add_node("decide", decide_node)
    graph.add_node("tool", tool_node)
    graph.add_node("verify", verify_node)
    graph.add_edge(START, "decide")
    graph.add_conditional_edges("decide", lambda s: "tool" if s["edge"] == "next" else END)
    graph.add_edge("tool", "verify")
    graph.add_conditional_edges(
        "verify", lambda s: "decide" if s["passed"] and s["step"] < STEPS else END
    )
    return graph


def initial(n: int) -> PipelineState:
    return {"n": n, "step": 0, "edge": "", "result": {}, "passed": False}


def run_langgraph(saver: str, runs: int, concurrency: int, folder: Path) -> float:
    builder = langgraph_builder()
    if concurrency == 1:
        if saver == "sqlite":
            import sqlite3

            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(folder / "lg.sqlite", check_same_thread=False)
            graph = builder.compile(checkpointer=SqliteSaver(conn))
        else:
            from langgraph.checkpoint.memory import InMemorySaver

            graph = builder.compile(checkpointer=InMemorySaver())
        started = time.perf_counter()
        for n in range(runs):
            out = graph.invoke(initial(n), {"configurable": {"thread_id": f"t{n}"}})
            assert out["step"] == STEPS
        return time.perf_counter() - started
    return asyncio.run(_run_langgraph_async(builder, saver, runs, concurrency, folder))


async def _run_langgraph_async(
    builder: Any, saver: str, runs: int, concurrency: int, folder: Path
) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def drive(graph: Any) -> float:
        async def one(n: int) -> None:
            async with gate:
                out = await graph.ainvoke(initial(n), {"configurable": {"thread_id": f"t{n}"}})
                assert out["step"] == STEPS

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(runs)))
        return time.perf_counter() - started

    if saver == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(folder / "lg.sqlite")) as checkpointer:
            return await drive(builder.compile(checkpointer=checkpointer))
    from langgraph.checkpoint.memory import InMemorySaver

    return await drive(builder.compile(checkpointer=InMemorySaver()))


# --- DBOS ------------------------------------------------------------------------------


def run_dbos(runs: int, concurrency: int, folder: Path) -> float:
    import logging

    from dbos import DBOS, DBOSConfig

    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {
        "name": "rig-bench",
        "system_database_url": f"sqlite:///{folder / 'dbos.sqlite'}",
        "log_level": "WARNING",
    }
    DBOS(config=config)

    @DBOS.step()
    def decide_step(state: int) -> str:
        return decide(state)

    @DBOS.step()
    def work_step(n: int, state: int) -> dict[str, Any]:
        return work(n, state)

    @DBOS.step()
    def verify_step(result: dict[str, Any]) -> bool:
        return verify(result)

    @DBOS.workflow()
    def pipeline(n: int) -> int:
        for state in range(1, STEPS + 1):
            if decide_step(state) != "next":
                break
            assert verify_step(work_step(n, state))
        return STEPS

    @DBOS.step()
    async def decide_async(state: int) -> str:
        return decide(state)

    @DBOS.step()
    async def work_async(n: int, state: int) -> dict[str, Any]:
        return work(n, state)

    @DBOS.step()
    async def verify_async(result: dict[str, Any]) -> bool:
        return verify(result)

    @DBOS.workflow()
    async def pipeline_async(n: int) -> int:
        for state in range(1, STEPS + 1):
            if await decide_async(state) != "next":
                break
            assert await verify_async(await work_async(n, state))
        return STEPS

    DBOS.launch()
    try:
        if concurrency == 1:
            started = time.perf_counter()
            for n in range(runs):
                assert pipeline(n) == STEPS
            return time.perf_counter() - started

        async def drive() -> float:
            gate = asyncio.Semaphore(concurrency)

            async def one(n: int) -> None:
                async with gate:
                    assert await pipeline_async(n) == STEPS

            started = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(runs)))
            return time.perf_counter() - started

        return asyncio.run(drive())
    finally:
        DBOS.destroy()


def main() -> None:
    peer, runs, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if peer == "langgraph-sqlite":
            seconds = run_langgraph("sqlite", runs, concurrency, folder)
        elif peer == "langgraph-memory":
            seconds = run_langgraph("memory", runs, concurrency, folder)
        elif peer == "dbos-sqlite":
            seconds = run_dbos(runs, concurrency, folder)
        else:
            raise SystemExit(f"unknown peer {peer!r}")
    print(json.dumps({"steps_per_s": runs * STEPS / seconds, "runs": runs, "seconds": seconds}))


if __name__ == "__main__":
    main()
