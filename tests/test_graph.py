"""FSM validation: a broken graph fails when it is built, naming the state and the problem."""

from __future__ import annotations

import pytest

from actors import Agent, RuleLLM
from protocols import Edge, Graph, GraphError, State

DONE = State(terminal="succeeded")


def graph(**states: State) -> Graph:
    return Graph(initial="start", states=states)


def test_sound_graph() -> None:
    g = graph(
        start=State(
            edges=(Edge(name="go", to="done", tool="t"), Edge(name="stop", to="human")),
            safe_edge="stop",
        ),
        human=State(human=True),
        done=DONE,
    )
    assert g.fail_target("start", g.state("start").edges[0]) == "human"


@pytest.mark.parametrize(
    ("states", "state", "problem"),
    [
        (
            {"start": State(edges=(Edge(name="go", to="nowhere"),), safe_edge="go"), "done": DONE},
            "start",
            "goes to unknown state 'nowhere'",
        ),
        (
            {
                "start": State(edges=(Edge(name="go", to="done"),), safe_edge="go"),
                "done": DONE,
                "island": State(terminal="failed"),
            },
            "island",
            "unreachable",
        ),
        (
            {"start": State(edges=(Edge(name="go", to="start"),), safe_edge="go")},
            None,
            "no terminal state",
        ),
        (
            {"start": State(edges=(Edge(name="go", to="done"),)), "done": DONE},
            "start",
            "no safe_edge",
        ),
        (
            {"start": State(edges=(Edge(name="go", to="done"),), safe_edge="nope"), "done": DONE},
            "start",
            "safe_edge 'nope' is not one of its edges",
        ),
        (
            {
                "start": State(
                    edges=(Edge(name="go", to="done"), Edge(name="go", to="done")), safe_edge="go"
                ),
                "done": DONE,
            },
            "start",
            "edge 'go' appears twice",
        ),
        (
            {
                "start": State(edges=(Edge(name="go", to="done", on_fail="gone"),), safe_edge="go"),
                "done": DONE,
            },
            "start",
            "on_fail to unknown state 'gone'",
        ),
        (
            {
                "start": State(edges=(Edge(name="go", to="loop"),), safe_edge="go"),
                "loop": State(edges=(Edge(name="again", to="loop"),), safe_edge="again"),
                "done": DONE,
            },
            "done",
            "unreachable",
        ),
        (
            {
                "start": State(edges=(Edge(name="go", to="done"),), safe_edge="go"),
                "done": State(terminal="succeeded", edges=(Edge(name="x", to="start"),)),
            },
            "done",
            "terminal state cannot have edges",
        ),
        (
            {
                "start": State(edges=(Edge(name="bad name", to="done"),), safe_edge="bad name"),
                "done": DONE,
            },
            "start",
            "edge name 'bad name'",
        ),
    ],
)
def test_invalid_graphs(states: dict, state: str | None, problem: str) -> None:
    """Each broken graph raises GraphError with the state at fault and what is wrong."""
    with pytest.raises(GraphError) as caught:
        Graph(initial="start", states=states)
    assert caught.value.state == state
    assert problem in caught.value.problem


def test_initial_state_must_exist() -> None:
    with pytest.raises(GraphError, match="initial state 'begin'"):
        Graph(initial="begin", states={"done": DONE})


def test_loop_without_exit_is_rejected() -> None:
    """A state from which no terminal or human state can be reached is an error."""
    with pytest.raises(GraphError) as caught:
        graph(
            start=State(
                edges=(Edge(name="a", to="spin"), Edge(name="b", to="done")), safe_edge="b"
            ),
            spin=State(edges=(Edge(name="again", to="spin"),), safe_edge="again"),
            done=DONE,
        )
    assert caught.value.state == "spin"


def test_agent_with_invalid_graph_fails_when_the_class_loads() -> None:
    """Defining an agent class with a broken graph raises at once, not at the first job."""
    with pytest.raises(GraphError, match="state 'start'"):

        class Broken(Agent):
            name = "broken"
            graph = Graph(
                initial="start",
                states={
                    "start": State(edges=(Edge(name="x", to="y"),), safe_edge="x"),
                    "done": DONE,
                },
            )
            example_input = {}
            llm = RuleLLM(lambda prompt: "x")


def test_agent_needs_example_input() -> None:
    with pytest.raises(TypeError, match="example_input"):

        class NoExample(Agent):
            name = "no-example"
            graph = graph(
                start=State(edges=(Edge(name="go", to="done"),), safe_edge="go"), done=DONE
            )
