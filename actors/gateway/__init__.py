"""HTTP: the gateway's routes, OpenAPI, handlers and SSE (`app`), API keys (`keys`),
webhooks (`webhooks`), and the console's files (`console/`).
"""

from __future__ import annotations

from actors.runtime.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Gateway": "app",
    },
)
