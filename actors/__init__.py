"""Everything that runs in Rig: the actor kinds you subclass, and the runtime around them.

To add an agent, a tool or a verifier, subclass `Agent`, `ToolExecutor` or `Verifier`
in your own module and start it with `rig actor run your_module:YourClass`.
"""

from actors._actor import Actor, Delivery, Endpoint, Inbox
from actors._agent import Agent
from actors._client import RigClient
from actors._config import RigConfig
from actors._gateway import Gateway
from actors._ledger import Claim, Ledger, LedgerRecord
from actors._llm import LLM, LLMReply, Price, RoutePrompt, RuleLLM
from actors._supervisor import Supervisor
from actors._tools import ToolContext, ToolExecutor, tool, tool_context
from actors._verifier import Verifier, verifier

__all__ = [
    "LLM",
    "Actor",
    "Agent",
    "Claim",
    "Delivery",
    "Endpoint",
    "Gateway",
    "Inbox",
    "LLMReply",
    "Ledger",
    "LedgerRecord",
    "Price",
    "RigClient",
    "RigConfig",
    "RoutePrompt",
    "RuleLLM",
    "Supervisor",
    "ToolContext",
    "ToolExecutor",
    "Verifier",
    "tool",
    "tool_context",
    "verifier",
]
