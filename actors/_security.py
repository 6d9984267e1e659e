"""Identities on the wire: an nkey per role, and the server's authorization block.

`rig up` makes a seed per role under `$RIG_HOME/creds/<role>.nk` (mode 0600, in a 0700
folder; a seed is never logged), writes the server's config with one user per role (the
public key and the role's grants, `protocols._permissions`), and starts the server with
it. Every Rig process then finds its own seed there: an actor by its class's role
(`Actor.role_name()`), the CLI as `client` (or `admin` for the operator's commands), or
whatever `RIG_CREDS` names. A server started with `--insecure` has no users, and a
process with no seed connects without one.

Roles are made from actor classes: an agent's from its name; a tool executor's from its
tools and the verifiers the deployment's graphs put after them; a verifier's from its
checks. A server's users may change while it runs: its config is written again and
the server reloaded (SIGHUP, `actors._up.NatsServer.reload`), which applies new
permissions to open connections too; the tests and the bench add each deployment's
users so.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocols import ConfigError, Graph, Names, _permissions as perms
from protocols._permissions import Role

if TYPE_CHECKING:
    from actors._actor import Actor
    from actors._config import RigConfig
    from actors._tls import TlsFiles

CREDS = "creds"
ADMIN = "admin"
CLIENT = "client"


def creds_dir(home: Path) -> Path:
    return home / CREDS


def seed_path(home: Path, role: str) -> Path:
    return creds_dir(home) / f"{role}.nk"


def ensure_seed(home: Path, role: str) -> str:
    """The public key of `role`'s nkey, making its seed file (0600) the first time."""
    import nkeys  # type: ignore[import-untyped]

    path = seed_path(home, role)
    if not path.exists():
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
    return path if path.is_file() else None


def makes_topology(config: RigConfig, role: str | None) -> bool:
    """Whether this connection creates missing streams and buckets: on an open server
    anyone does; on a secured one only the admin (`rig up` does it before any actor)."""
    seed = credentials(config, role)
    return seed is None or seed.stem == ADMIN


# --- roles from actor classes ----------------------------------------------------------


def graphs_of(classes: Iterable[type[Actor]]) -> list[Graph]:
    from actors._agent import Agent

    return [cls.graph for cls in classes if issubclass(cls, Agent)]


def roles_for(names: Names, classes: Iterable[type[Actor]]) -> list[Role]:
    """Every role a deployment of these actor classes needs: theirs, and the client's,
    the gateway's and the admin's, which every deployment has. Classes that share a
    role (two executors of one name) get the union of their grants."""
    actor_classes = list(classes)
    graphs = graphs_of(actor_classes)
    found: dict[str, Role] = {}
    for role in [
        *(cls.role(names, graphs) for cls in actor_classes),
        perms.client(names),
        perms.gateway(names),
        perms.admin(names),
    ]:
        same = found.get(role.name)
        if same is not None and same != role:
            role = Role(
                role.name,
                same.purpose,
                same.grants | role.grants,
                same.responses or role.responses,
                same.everything or role.everything,
            )
        found[role.name] = role
    return sorted(found.values(), key=lambda r: r.name)


# --- the server's side -----------------------------------------------------------------


def user_entry(names: Names, role: Role, key: str) -> dict[str, Any]:
    """One user of the server's `authorization { users = [...] }`."""
    if role.everything:
        return {"nkey": key}
    inbox = f"{role.inbox(names)}.>"
    permissions: dict[str, Any] = {
        "publish": {"allow": sorted(role.grants.publish)},
        "subscribe": {"allow": sorted(role.grants.subscribe | {inbox})},
    }
    if role.deny_publish:
        permissions["publish"]["deny"] = sorted(role.deny_publish)
    if role.responses:
        permissions["allow_responses"] = True
    return {"nkey": key, "permissions": permissions}


def server_config(
    base: Path, users: Iterable[dict[str, Any]] | None, tls: TlsFiles | None = None
) -> str:
    """A server config: the project's `nats.conf` and one user per entry. (The server's
    `include` takes paths relative to the including file only, so the base is copied
    in.) JSON is valid in NATS's config syntax, and quoted strings keep their `$`."""
    text = f"# Written by Rig from {base}: edits are lost.\n{base.read_text()}"
    if users is not None:
        text += "\nauthorization " + json.dumps({"users": list(users)}, indent=1) + "\n"
    if tls is not None:  # clients must speak TLS, and may verify the server by its CA
        files = {"cert_file": str(tls.cert.resolve()), "key_file": str(tls.key.resolve())}
        text += "\ntls " + json.dumps(files | {"timeout": 5}, indent=1) + "\n"
    return text


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def deployment_config(
    home: Path,
    names: Names,
    classes: Iterable[type[Actor]] | None,
    base: Path,
    tls: TlsFiles | None = None,
) -> Path:
    """Make every role's seed under `home` and write `home/nats-server.conf` for them
    (`classes` None: no users, an open server); with `tls`, the server requires TLS."""
    users = None
    if classes is not None:
        users = [
            user_entry(names, role, ensure_seed(home, role.name))
            for role in roles_for(names, classes)
        ]
    path = home / "nats-server.conf"
    write_private(path, server_config(base, users, tls))
    return path


def role_table(names: Names, roles: Iterable[Role]) -> str:
    """Every role's grants as Markdown: what `rig roles` prints, and docs/security.md
    shows for the default deployment (a test keeps the two equal)."""
    rows = [
        "| role | for | may publish to | may subscribe to |",
        "| --- | --- | --- | --- |",
    ]
    for role in roles:
        if role.everything:
            rows.append(f"| `{role.name}` | {role.purpose} | everything | everything |")
            continue
        publish = sorted(role.grants.publish)
        if role.responses:
            publish.append("replies to what it receives (`allow_responses`)")
        subscribe = sorted(role.grants.subscribe | {f"{role.inbox(names)}.>"})
        rows.append(f"| `{role.name}` | {role.purpose} | {_cells(publish)} | {_cells(subscribe)} |")
    return "\n".join(rows) + "\n"


def _cells(subjects: list[str]) -> str:
    return "<br>".join(s if s.startswith("replies") else f"`{s}`" for s in subjects)
