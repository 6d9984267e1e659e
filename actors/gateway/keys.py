"""The gateway's API keys: a keys file of names and SHA-256 hashes, never the keys.

A key is `rig_` and 32 random bytes (base64url): far too much entropy to guess, so one
SHA-256 is the right hash (a slow password hash would only slow every request). A
request's key is hashed and compared with every stored hash in constant time.

The file (`RIG_GATEWAY_KEYS`, default `$RIG_HOME/gateway-keys`) has a line per key,
`<name> <sha256 hex>`; `#` starts a comment. `rig keys add NAME` writes one and prints
the key once; `rig keys revoke NAME` removes it. A gateway reads the file again when it
changes, so a revoked key stops working within `RELOAD_S` without a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from actors.runtime.settings import RigConfig
from protocols import ConfigError, check_token

KEY_PREFIX = "rig_"
RELOAD_S = 2.0  # how often a gateway looks whether the keys file changed
_LINE = re.compile(r"^([A-Za-z0-9_-]{1,64})\s+([0-9a-f]{64})$")


def keys_path(config: RigConfig | None = None) -> Path:
    """The API keys file: `RIG_GATEWAY_KEYS`, else `$RIG_HOME/gateway-keys`."""
    return (config or RigConfig.from_env()).keys_file


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys a gateway accepts, by name."""

    hashes: tuple[tuple[str, str], ...]

    def check(self, presented: str) -> str | None:
        """The name of the key `presented` is, or None. Every stored hash is compared,
        each in constant time, so the answer's timing says nothing of which was close."""
        digest = key_hash(presented).encode()
        found = None
        for name, stored in self.hashes:
            if hmac.compare_digest(digest, stored.encode()):
                found = name
        return found

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.hashes]


def load_keys(path: Path) -> KeyRing:
    """The keys of `path`; a line that is not `<name> <sha256 hex>` is a `ConfigError`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the keys file {path}: {exc.strerror or exc}") from None
    hashes = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            raise ConfigError(
                f"{path}:{number}: a key line is `<name> <sha256 hex>` (rig keys add writes them)"
            )
        hashes.append((match[1], match[2]))
    return KeyRing(tuple(hashes))


def add_key(path: Path, name: str) -> str:
    """Make a key named `name`, store its hash in `path` (created 0600), return the key."""
    check_token(name, what="key name")
    ring = load_keys(path) if path.exists() else KeyRing(())
    if name in ring.names:
        raise ConfigError(f"{path} has a key named {name!r} already (rig keys revoke {name})")
    key = new_key()
    lines = [f"{old} {stored}" for old, stored in ring.hashes] + [f"{name} {key_hash(key)}"]
    _write(path, lines)
    return key


def revoke_key(path: Path, name: str) -> None:
    ring = load_keys(path)
    if name not in ring.names:
        raise ConfigError(f"{path} has no key named {name!r}")
    _write(path, [f"{old} {stored}" for old, stored in ring.hashes if old != name])


def _write(path: Path, lines: list[str]) -> None:
    """Replace `path` at once (a gateway reading it sees the old file or the new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# rig gateway keys: <name> <sha256 of the key>; see `rig keys --help`\n"
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".gateway-keys.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(header + "".join(line + "\n" for line in lines))
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
