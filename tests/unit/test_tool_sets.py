"""Many tools without an edge each: an edge that offers a set of tools, and lookups
before a state's decision (`Edge.tools`, `State.lookup`), in one process (`run_job`)
and in the supervisor's rules."""

from __future__ import annotations

import pytest

from actors.jobs.rules import Rules
from actors.models.toolsets import as_edge
from actors.testing import ScriptedLLM, Text, run_job
from actors.tools.catalog import Catalog
from protocols import (
    LOOKUP,
    Budget,
    Decision,
    Edge,
    Graph,
    GraphError,
    JobSnapshot,
    Names,
    ResolveRequest,
    SchemaError,
    StartJob,
    State,
    ToolCall,
    decode_as,
)
from tests.support.library import Librarian, Shelf

NAMES = Names("t")
LEND = {"tool": "lend_book", "args": {"title": "dune", "reader": "ada"}}


async def test_a_state_looks_around_then_its_edge_calls_the_tool_the_model_picked() -> None:
    run = await run_job(Librarian, tools=[Shelf])
    assert (run.status, run.path) == ("succeeded", ["desk", "done"])
    decisions = run.events("decision")
    assert [(d.data["edge"], d.data["tool"], d.step) for d in decisions] == [
        (LOOKUP, "find_book", 1),
        (LOOKUP, "count_books", 2),
        ("act", "lend_book", 3),
    ]
    assert decisions[2].data["args"] == LEND["args"]  # the tool's own arguments
    # What a lookup found stays with its question, for the model; the job's results
    # are what its edges did.
    notes = run.snapshot.decisions
    assert notes[0]["result"] == {"title": "dune", "copies": 2}
    assert notes[1] == notes[1] | {"tool": "count_books", "args": {}, "result": {"titles": 3}}
    assert run.result == {"state": "done", "results": {"lend_book": {"lent": "dune", "to": "ada"}}}
    assert run.snapshot.visits == {"desk": 1, "done": 1}  # a lookup is a step, not a visit


async def test_a_lookup_that_finds_nothing_leads_the_model_elsewhere() -> None:
    run = await run_job(Librarian, {"title": "emma", "reader": "ada"}, tools=[Shelf])
    assert (run.status, run.edges) == ("failed", ["give_up"])  # lookups: no transition
    assert [d.data["edge"] for d in run.events("decision")] == [LOOKUP, LOOKUP, "give_up"]


async def test_the_model_is_offered_each_tool_with_its_schema_and_no_lookup_past_the_last() -> None:
    again = ("_lookup", {"tool": "find_book", "args": {"title": "dune"}})
    llm = ScriptedLLM([again, again, again, ("act", LEND)])
    run = await run_job(Librarian, tools=[Shelf], llm=llm)
    assert run.status == "succeeded"
    first, _second, third, fourth = llm.prompts
    offered = {edge.name: edge for edge in first.edges}
    assert set(offered) == {"act", "give_up", LOOKUP}
    lookup = offered[LOOKUP].args or {}
    # Only the read-only tools are looked up with; the set's are its two, each with its schema.
    assert [b["properties"]["tool"]["enum"] for b in lookup["anyOf"]] == [
        ["count_books"],
        ["find_book"],
    ]
    act = offered["act"].args or {}
    [lend, _return] = act["anyOf"]
    assert lend["properties"]["args"]["required"] == ["title", "reader"]
    assert "lend_book: Lend a copy of a title to a reader." in offered["act"].description
    # Two lookups were allowed: the third answer is not an edge it is offered.
    assert LOOKUP not in {edge.name for edge in third.edges}
    assert "'_lookup' is not one of act, give_up" in fourth.feedback[0]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (("act", {"tool": "find_book", "args": {"title": "dune"}}), "not tool 'find_book'"),
        (
            ("act", {"tool": "lend_book", "args": {"title": "dune"}}),
            "args must contain ['reader']",
        ),
        (("act", {"tool": "lend_book", "args": []}), "must be a JSON object"),
        (Text('{"edge": "act", "args": {"lend_book": {}}}'), "not tool None"),
    ],
)
async def test_a_pick_the_set_does_not_offer_is_asked_again(answer: object, problem: str) -> None:
    llm = ScriptedLLM(
        [("_lookup", {"tool": "count_books", "args": {}})] * 2 + [answer, ("act", LEND)]
    )
    run = await run_job(Librarian, tools=[Shelf], llm=llm)
    assert run.status == "succeeded"
    assert problem in llm.prompts[3].feedback[0]


def test_a_graph_s_sets_of_tools_are_checked_when_it_is_built() -> None:
    def graph(*edges: Edge, **state: object) -> Graph:
        desk = State(edges=(*edges, Edge(name="no", to="end")), safe_edge="no", **state)  # type: ignore[arg-type]
        return Graph(initial="desk", states={"desk": desk, "end": State(terminal="failed")})

    for edge, problem in [
        (Edge(name="a", to="end", tool="x", tools=("y",)), "also calls a tool"),
        (Edge(name="a", to="end", tools=("x", "x")), "names one twice"),
        (Edge(name="a", to="end", tools=("bad tool",)), "must be letters"),
        (Edge(name=LOOKUP, to="end"), "the name of a lookup"),
    ]:
        with pytest.raises(GraphError, match=problem):
            graph(edge)
    with pytest.raises(GraphError, match="offers a set of tools: taken when"):
        Graph(
            initial="a",
            states={
                "a": State(edges=(Edge(name="x", to="b", tools=("t",)),), safe_edge="x"),
                "b": State(terminal="failed"),
            },
        )
    with pytest.raises(GraphError, match="lookup= needs a state the LLM decides"):
        Graph(
            initial="a",
            states={
                "a": State(human=True, lookup=("t",), edges=(Edge(name="x", to="b"),)),
                "b": State(terminal="failed"),
            },
        )
    assert graph(Edge(name="a", to="end", tools=Shelf.all), lookup=("find_book",)).states


def _at_desk(budget: Budget | None = None) -> JobSnapshot:
    start = StartJob(
        job_id="j",
        agent="librarian",
        input=Librarian.example_input or {},
        budget=budget or Budget(),
    )
    rules = Rules(NAMES, 1000.0)
    job = rules.start(rules.new_snapshot(start), Librarian.graph)
    assert job is not None
    return job


def _decide(
    job: JobSnapshot, edge: str, tool: str | None, owners: dict[str, str] | None = None
) -> JobSnapshot:
    decision = Decision(job_id="j", step=job.step, edge=edge, tool=tool, args={"title": "dune"})
    after = Rules(NAMES, 1001.0, owners=owners).report(
        job, decision, Librarian.graph, sender=("agent", "librarian")
    )
    assert after is not None
    return after


def test_the_supervisor_takes_the_safe_edge_for_a_tool_the_edge_does_not_offer() -> None:
    """An agent's seed in the wrong hands picks a tool the edge does not offer: the
    supervisor does not call it."""
    for edge, tool, owners, why in [
        ("act", "find_book", {}, "tool 'find_book' is not one of the tools edge 'act' offers"),
        ("act", None, {}, "the decision names none"),
        (
            LOOKUP,
            "lend_book",
            {},
            "not one of the tools a lookup offers (shelf.*)",
        ),  # owner unknown
        (LOOKUP, "lend_book", {"lend_book": "other"}, "a lookup offers (shelf.*)"),
    ]:
        after = _decide(_at_desk(), edge, tool, owners)
        [decision] = [e for e in _events(after) if e.type == "decision"]
        assert (decision.data["edge"], decision.data["fallback"]) == ("give_up", True)
        assert why in decision.data["reason"]
        assert after.status == "failed" and not _calls(after)


def test_a_lookup_is_a_read_only_call_that_comes_back_to_its_state() -> None:
    job = _decide(_at_desk(), LOOKUP, "find_book", {"find_book": "shelf"})
    [call] = _calls(job)
    assert (call.tool, call.lookup, job.pending_tool, job.lookups) == (
        "find_book",
        True,
        "find_book",
        1,
    )
    job = _decide(_at_desk(Budget(max_steps=1)), LOOKUP, "count_books", {"count_books": "shelf"})
    assert job.phase == "tool"  # the step budget counts it when it ends, as any step's


async def test_an_executor_refuses_a_lookup_of_a_tool_with_side_effects() -> None:
    shelf = Shelf()
    call = ToolCall(job_id="j", step=1, tool="lend_book", args=LEND["args"], lookup=True)
    result = await shelf.execute(call)
    assert not result.ok and result.error is not None
    assert result.error["code"] == "not_read_only"
    assert "a lookup may only call a read-only tool" in result.error["message"]


def test_a_person_picks_a_tool_of_the_set_by_name() -> None:
    job = _decide(_at_desk(), "give_up", None)  # to a terminal: build a parked job instead
    assert job.terminal
    graph = Graph(
        initial="desk",
        states={
            "desk": State(edges=(Edge(name="ask", to="person"),), safe_edge="ask"),
            "person": State(human=True, edges=(Edge(name="act", to="done", tools=Shelf.all),)),
            "done": State(terminal="succeeded"),
        },
    )
    start = StartJob(job_id="j", agent="librarian", input={}, budget=Budget())
    rules = Rules(NAMES, 1000.0, owners={"lend_book": "shelf"})
    parked = rules.start(rules.new_snapshot(start), graph)
    assert parked is not None
    parked = rules.report(parked, Decision(job_id="j", step=1, edge="ask"), graph)
    assert parked is not None and parked.status == "waiting_human"
    with pytest.raises(SchemaError, match="tool 'nope' is not one of the tools"):
        rules.check_resolve(
            parked, graph, ResolveRequest(job_id="j", edge="act", args={"tool": "nope"})
        )
    after = rules.resolve(parked, graph, ResolveRequest(job_id="j", edge="act", args=LEND))
    [call] = _calls(after)
    assert (call.tool, call.args, call.lookup) == ("lend_book", LEND["args"], False)


async def test_an_agent_offers_only_what_the_catalog_has() -> None:
    catalog = Catalog.of(Shelf().catalog(), NAMES)
    assert list(await catalog.tools(Shelf.all)) == [
        "count_books",
        "find_book",
        "lend_book",
        "return_book",
    ]
    assert list(await catalog.tools(("lend_book", "nope"))) == ["lend_book"]
    entry = (await catalog.tools(("find_book",)))["find_book"]
    assert (entry.executor, entry.side_effects) == ("shelf", False)
    edge = as_edge(Edge(name="x", to="y", description="Pick."), {"find_book": entry})
    assert (
        edge.description
        == "Pick. Tools: find_book: Whether the shelf has a title, and how many copies."
    )


def _events(job: JobSnapshot) -> list:  # type: ignore[type-arg]
    from protocols import Event

    return [decode_as(Event, out.data)[0] for out in job.outbox if out.subject == NAMES.events("j")]


def _calls(job: JobSnapshot) -> list[ToolCall]:
    return [
        decode_as(ToolCall, out.data)[0]
        for out in job.outbox
        if out.subject.startswith("t.work.tool.")
    ]


def test_an_executor_may_hand_a_result_to_the_verifier_of_a_set_it_is_in() -> None:
    def graph(tools: tuple[str, ...]) -> Graph:
        act = Edge(name="act", to="end", tools=tools, verifier="check_loan")
        desk = State(edges=(act, Edge(name="no", to="end")), safe_edge="no")
        return Graph(initial="desk", states={"desk": desk, "end": State(terminal="failed")})

    verifier = NAMES.verifier("check_loan")
    for tools, granted in [(Shelf.all, True), (("lend_book",), True), (("other",), False)]:
        role = Shelf.role(NAMES, [graph(tools)])
        assert (verifier in role.grants.publish) is granted, tools


def test_a_drawing_shows_each_set_of_tools_and_the_lookups() -> None:
    drawn = Librarian.graph.to_mermaid("librarian")
    assert "desk --> done : act [lend_book, return_book]" in drawn
    assert "desk --> desk : _lookup [shelf.*] x2" in drawn
    assert (
        '"desk" -> "desk" [label="_lookup [shelf.*] x2", style=dotted];' in Librarian.graph.to_dot()
    )
