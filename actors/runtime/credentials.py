"""A process's identity on the wire: the nkey seed it connects with (`credentials`), and
the seeds `rig up` makes, one per role, under `$RIG_HOME/creds/<role>.nk` (mode 0600, in
a 0700 folder; a seed is never logged). actors/deploy/roles.py makes the roles and the
server's accounts from them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from protocols import ConfigError

if TYPE_CHECKING:
    from actors.runtime.settings import RigConfig

CREDS = "creds"
ADMIN = "admin"
CLIENT = "client"


def creds_dir(home: Path) -> Path:
    return home / CREDS


def seed_path(home: Path, role: str) -> Path:
    return creds_dir(home) / f"{role}.nk"


def ensure_home(home: Path) -> Path:
    """`home`, made readable by its owner alone if it does not exist yet (Rig keeps seeds,
    the ledger's tool results, API keys and logs there); one that exists keeps its mode."""
    if not home.exists():
        with contextlib.suppress(FileExistsError):  # another process made it first
            home.mkdir(parents=True, mode=0o700)
    return home


def ensure_seed(home: Path, role: str) -> str:
    """The public key of `role`'s nkey, making its seed file (0600) the first time."""
    import nkeys  # type: ignore[import-untyped]

    path = seed_path(home, role)
    if not path.exists():
        ensure_home(home)
        folder = creds_dir(home)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
        seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(seed + b"\n")
        try:
            os.link(tmp, path)  # whole or not at all; another process's first seed wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return public_key(path)


def public_key(path: Path) -> str:
    import nkeys

    seed = bytearray(path.read_bytes().strip())
    try:
        return str(nkeys.from_seed(seed).public_key.decode())
    except Exception as exc:
        raise ConfigError(f"{path} is not an nkey seed ({exc})", path=str(path)) from None


def credentials(config: RigConfig, role: str | None) -> Path | None:
    """The seed file a process of `role` connects with: `RIG_CREDS` if set, else the
    role's file under `$RIG_HOME/creds` if it exists, else None (an open server)."""
    if config.creds is not None:
        if not config.creds.is_file():
            raise ConfigError(f"RIG_CREDS names {config.creds}, which is not a file")
        return config.creds
    if role is None:
        return None
    path = seed_path(config.home, role)
    if path.is_file():
        return path
    folder = creds_dir(config.home)
    if folder.is_dir() and any(folder.glob("*.nk")):  # a secured deployment, not this role
        raise ConfigError(
            f"no NATS identity for role {role!r} in {folder}: the deployment runs with "
            "security on, and `rig up` makes identities for the classes of its config; "
            "admit this class to the running deployment first: `rig admit MODULE:CLASS`",
            role=role,
        )
    return None


def makes_topology(config: RigConfig, role: str | None) -> bool:
    """Whether this connection creates missing streams and buckets: on an open server
    anyone does; on a secured one only the admin (`rig up` does it before any actor)."""
    seed = credentials(config, role)
    return seed is None or seed.stem == ADMIN
