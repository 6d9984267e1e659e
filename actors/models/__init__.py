"""The agent and everything between it and a model: the agent (`agent`), the LLM
interface (`llm`), what a model is sent in each dialect (`dialects`), the router's retries,
hedging and cache (`router`), the LLM config file (`config`), circuit
breakers (`breaker`), shared limits (`limits`), the probe (`probe`) and the local model
server (`local`).
"""

from __future__ import annotations

from actors.runtime.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Agent": "agent",
        "LLM": "llm",
        "LLMReply": "llm",
        "Price": "llm",
        "RoutePrompt": "llm",
        "RuleLLM": "llm",
    },
)
