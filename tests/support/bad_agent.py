"""An agent whose graph is broken: importing this module fails with a GraphError."""

from actors import Agent, RuleLLM
from protocols import Edge, Graph, State


class BrokenAgent(Agent):
    name = "broken"
    graph = Graph(
        initial="triage",
        states={
            "triage": State(edges=(Edge(name="lookup", to="nowhere"),), safe_edge="lookup"),
            "done": State(terminal="succeeded"),
        },
    )
    example_input: dict[str, str] = {}
    llm = RuleLLM(lambda prompt: "lookup")
