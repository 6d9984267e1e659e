"""Everything that runs in Rig: the actor kinds you subclass, and the runtime around them.

To add an agent, a tool or a verifier, subclass `Agent`, `ToolExecutor` or `Verifier`
in your own module and start it with `rig actor run your_module:YourClass`.

The names below are imported when first used, so that a command that needs few of them
(`rig --help`, `rig status`) starts without loading the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.runtime.lazy import import_nats_lazily, lazy_exports

import_nats_lazily()  # nats-py without aiohttp, which few processes use (actors.runtime.lazy)

if TYPE_CHECKING:  # `X as X`: re-exported, for type checkers
    from actors.gateway.app import Gateway as Gateway
    from actors.jobs.supervisor import Supervisor as Supervisor
    from actors.models.agent import Agent as Agent
    from actors.models.llm import (
        LLM as LLM,
        LLMReply as LLMReply,
        Price as Price,
        RoutePrompt as RoutePrompt,
        RuleLLM as RuleLLM,
    )
    from actors.runtime.actor import (
        Actor as Actor,
        Delivery as Delivery,
        Endpoint as Endpoint,
        Inbox as Inbox,
    )
    from actors.runtime.client import RigClient as RigClient
    from actors.runtime.settings import RigConfig as RigConfig
    from actors.tools.decisions import Claim as Claim, LedgerRecord as LedgerRecord
    from actors.tools.executor import (
        ToolContext as ToolContext,
        ToolExecutor as ToolExecutor,
        tool as tool,
        tool_context as tool_context,
    )
    from actors.tools.ledger import Ledger as Ledger
    from actors.tools.verifier import Verifier as Verifier, verifier as verifier

_WHERE = {
    "Actor": "runtime.actor",
    "Delivery": "runtime.actor",
    "Endpoint": "runtime.actor",
    "Inbox": "runtime.actor",
    "Agent": "models.agent",
    "RigClient": "runtime.client",
    "RigConfig": "runtime.settings",
    "Gateway": "gateway.app",
    "Claim": "tools.decisions",
    "Ledger": "tools.ledger",
    "LedgerRecord": "tools.decisions",
    "LLM": "models.llm",
    "LLMReply": "models.llm",
    "Price": "models.llm",
    "RoutePrompt": "models.llm",
    "RuleLLM": "models.llm",
    "Supervisor": "jobs.supervisor",
    "ToolContext": "tools.executor",
    "ToolExecutor": "tools.executor",
    "tool": "tools.executor",
    "tool_context": "tools.executor",
    "Verifier": "tools.verifier",
    "verifier": "tools.verifier",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _WHERE)
