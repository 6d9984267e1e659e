"""FSM validation: a broken graph fails when it is built, naming the state and the problem."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from actors import Agent, RuleLLM
from protocols import Edge, Graph, GraphError, State
from tests.support.inject import mailer_graph
from tests.unit.test_readme import RIG, ROOT

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


def test_untrusted_output_reaching_a_consequential_edge_unchecked_is_found() -> None:
    """A page's text is in the prompts of every later state: an unverified `send` two
    states on is reported with its path; a verifier on it, or a person on the way, is
    what the rule asks for; a tool nobody marked untrusted starts no path."""
    [path] = mailer_graph().injection_paths({"fetch_page"})
    assert (path.tool, path.source_edge, path.edge) == ("fetch_page", "fetch", "send")
    assert path.states == ("reading", "summarizing", "sending")
    assert "edge 'send' is consequential, has no verifier" in str(path)
    assert mailer_graph(verifier="v").injection_paths({"fetch_page"}) == []
    assert mailer_graph(person=True).injection_paths({"fetch_page"}) == []
    assert mailer_graph().injection_paths({"send_mail"}) == []
    assert mailer_graph().injection_paths(set()) == []


def test_rig_graph_lint_reports_the_unguarded_path_and_exits_1(tmp_path: Path) -> None:
    """`rig graph --lint`: the tools' executors (from rig up's config) say which outputs
    are untrusted; an unguarded path prints and exits 1, a checked graph exits 0, and the
    refund example (its consequential refund verified) passes even counting the order
    lookup as untrusted."""
    config = tmp_path / "up.toml"
    config.write_text('[[actor]]\nclass = "tests.support.inject:MailTools"\n')

    def lint(*args: str) -> tuple[int, str]:
        done = subprocess.run(
            [RIG, "graph", "--lint", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        return done.returncode, done.stdout + done.stderr

    code, out = lint("tests.support.inject:Mailer", "--config", str(config))
    assert code == 1, out
    assert "UNGUARDED  fetch_page (edge fetch) -> summarizing -> sending" in out
    code, out = lint("tests.support.inject:CheckedMailer", "--config", str(config), "--json")
    assert code == 0 and json.loads(out)["paths"] == []
    assert json.loads(out)["untrusted"] == ["fetch_page"]
    code, out = lint("actors.examples.refund:RefundAgent", "--untrusted", "lookup_order")
    assert code == 0 and "ok: no untrusted output" in out, out
    code, out = lint("actors.examples.refund:RefundAgent", "--config", "/nowhere.toml")
    assert code == 2 and out.startswith("rig: ") and "Traceback" not in out
