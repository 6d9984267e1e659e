"""Everything that runs in Rig: the actor kinds you subclass, and the runtime around them.

To add an agent, a tool or a verifier, subclass `Agent`, `ToolExecutor` or `Verifier`
in your own module and start it with `rig actor run your_module:YourClass`.

The names below are imported when first used, so that a command that needs few of them
(`rig --help`, `rig status`) starts without loading the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from actors._lazy import import_nats_lazily

import_nats_lazily()  # nats-py without aiohttp, which few processes use (actors._lazy)

if TYPE_CHECKING:  # `X as X`: re-exported, for type checkers
    from actors._actor import (
        Actor as Actor,
        Delivery as Delivery,
        Endpoint as Endpoint,
        Inbox as Inbox,
    )
    from actors._agent import Agent as Agent
    from actors._client import RigClient as RigClient
    from actors._config import RigConfig as RigConfig
    from actors._gateway import Gateway as Gateway
    from actors._ledger import Claim as Claim, Ledger as Ledger, LedgerRecord as LedgerRecord
    from actors._llm import (
        LLM as LLM,
        LLMReply as LLMReply,
        Price as Price,
        RoutePrompt as RoutePrompt,
        RuleLLM as RuleLLM,
    )
    from actors._supervisor import Supervisor as Supervisor
    from actors._tools import (
        ToolContext as ToolContext,
        ToolExecutor as ToolExecutor,
        tool as tool,
        tool_context as tool_context,
    )
    from actors._verifier import Verifier as Verifier, verifier as verifier

_WHERE = {
    "Actor": "_actor",
    "Delivery": "_actor",
    "Endpoint": "_actor",
    "Inbox": "_actor",
    "Agent": "_agent",
    "RigClient": "_client",
    "RigConfig": "_config",
    "Gateway": "_gateway",
    "Claim": "_ledger",
    "Ledger": "_ledger",
    "LedgerRecord": "_ledger",
    "LLM": "_llm",
    "LLMReply": "_llm",
    "Price": "_llm",
    "RoutePrompt": "_llm",
    "RuleLLM": "_llm",
    "Supervisor": "_supervisor",
    "ToolContext": "_tools",
    "ToolExecutor": "_tools",
    "tool": "_tools",
    "tool_context": "_tools",
    "Verifier": "_verifier",
    "verifier": "_verifier",
}

__all__ = sorted(_WHERE, key=str.casefold)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'actors' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"actors.{module}"), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
