"""The tool step, at most once: the executor (`executor`), the ledger's pure decisions and
the `LedgerStore` protocol (`decisions`), its SQLite store (`ledger`) and its cluster
store (`cluster`), and the verifier (`verifier`).
"""

from __future__ import annotations

from actors.runtime.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ToolExecutor": "executor",
        "ToolContext": "executor",
        "tool": "executor",
        "tool_context": "executor",
        "Ledger": "ledger",
        "ClusterLedger": "cluster",
        "Claim": "decisions",
        "LedgerRecord": "decisions",
        "LedgerStore": "decisions",
        "Verifier": "verifier",
        "verifier": "verifier",
    },
)
