"""One process's machinery, knowing no actor kind: the `Actor` template (`actor`), the
NATS connection and topology (`nats`), settings (`settings`, the one reader of `RIG_*`),
credentials and the TLS client context, results by reference, discovery (`rig ps`),
metrics, tracing, logging, and `RigClient` (`client`), the NATS API's client.
"""

from __future__ import annotations

from actors.runtime.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Actor": "actor",
        "Delivery": "actor",
        "Endpoint": "actor",
        "Inbox": "actor",
        "RigClient": "client",
        "RigConfig": "settings",
    },
)
