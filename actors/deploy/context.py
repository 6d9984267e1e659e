"""A `nats` CLI context for the deployment `rig up` runs, so that sending a task with the
`nats` CLI is one short command:

    nats --context rig request rig.api.submit '{"agent": "refund", "input": {...}}'

The file follows the nats CLI's context format (NATS ADR-21: `<XDG_CONFIG_HOME or
~/.config>/nats/context/<name>.json`): the servers' URLs, the client role's nkey seed
file, its inbox prefix (the only one its NATS user may subscribe to), its JetStream API
prefix (the client's account reaches JetStream through imports), and the CA when the
server requires TLS. It names files, never a secret; `RIG_NATS_CONTEXT=0` writes none.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from actors.runtime.credentials import CLIENT, seed_path
from actors.runtime.settings import RigConfig
from protocols._permissions import api_prefix, inbox_prefix


def context_of(config: RigConfig) -> dict[str, Any]:
    """The context of `config`'s deployment, as its client role connects."""
    seed = seed_path(config.home, CLIENT)
    secured = seed.is_file()
    return {
        "description": f"Rig deployment {config.names.prefix!r}, as its client role "
        "(written by rig up)",
        "url": config.nats_url,
        "nkey": str(seed.resolve()) if secured else "",
        "ca": str(config.tls_ca.resolve()) if config.tls_ca is not None else "",
        "inbox_prefix": inbox_prefix(config.names, CLIENT) if secured else "",
        "jetstream_api_prefix": api_prefix(config.names, CLIENT) if secured else "",
    }


def context_path(name: str) -> Path:
    """Where the nats CLI looks for context `name`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nats" / "context" / f"{name}.json"


def write_context(config: RigConfig) -> Path | None:
    """Write the deployment's context, named as its prefix; None when `RIG_NATS_CONTEXT`
    is `0` (`config.nats_context`). Another deployment's context of the same name is
    replaced."""
    if not config.nats_context:
        return None
    path = context_path(config.names.prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(context_of(config), indent=2) + "\n")
    return path
