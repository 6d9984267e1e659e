"""A job's life: the pure transition rules (`rules`: `Rules`, no I/O) and the supervisor
that applies them to the snapshot in `RIG_JOBS` and publishes their outbox
(`supervisor`).
"""

from __future__ import annotations

from actors.runtime.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Rules": "rules",
        "Supervisor": "supervisor",
    },
)
