"""The TLS client side of every Rig process: which CA it verifies the server with
(`RIG_TLS_CA`, else `$RIG_HOME/tls/ca.pem` when `rig up --tls` made it); a client without
the CA is refused by its own TLS check, never downgraded. actors/deploy/ca.py makes the
CA and the server's certificate.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from protocols import ConfigError

if TYPE_CHECKING:
    from actors.runtime.settings import RigConfig

TLS = "tls"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path


def tls_dir(home: Path) -> Path:
    return home / TLS


def ca_file(config: RigConfig) -> Path | None:
    """The CA a client verifies the server with: `RIG_TLS_CA`, else `$RIG_HOME/tls/ca.pem`
    if `rig up --tls` made one, else None (the system's CAs, if the server asks for TLS)."""
    if config.tls_ca is not None:
        if not config.tls_ca.is_file():
            raise ConfigError(f"RIG_TLS_CA names {config.tls_ca}, which is not a file")
        return config.tls_ca
    made = tls_dir(config.home) / "ca.pem"
    return made if made.is_file() else None


def client_context(config: RigConfig) -> ssl.SSLContext | None:
    ca = ca_file(config)
    return ssl.create_default_context(cafile=str(ca)) if ca is not None else None
