"""Identities on the wire: an nkey per role, and the server's authorization block.

`rig up` makes a seed per role under `$RIG_HOME/creds/<role>.nk` (mode 0600, in a 0700
folder; a seed is never logged), writes the server's config with the deployment's
accounts (`accounts_of`: the state account with the supervisor's and the admin's users,
one account per other role with its user, the public key and the role's grants,
`protocols._permissions`, and the imports and exports between them), and starts the
server with it. Every Rig process then finds its own seed there: an actor by its class's role
(`Actor.role_name()`), the CLI as `client` (or `admin` for the operator's commands), or
whatever `RIG_CREDS` names. A server started with `--insecure` has no users, and a
process with no seed connects without one.

Roles are made from actor classes: an agent's from its name; a tool executor's from its
tools and the verifiers the deployment's graphs put after them; a verifier's from its
checks. A server's accounts may change while it runs: its config is written again and
the server reloaded (SIGHUP, `actors.deploy.up.NatsServer.reload`), which applies new
permissions to open connections too; `rig admit`, the tests and the bench add
deployments' roles so.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.runtime.credentials import (
    ensure_home,
    ensure_seed,
)
from protocols import ConfigError, Graph, Names, _permissions as perms
from protocols._permissions import Role

if TYPE_CHECKING:
    from actors.runtime.actor import Actor
    from actors.runtime.tls import TlsFiles

# --- roles from actor classes ----------------------------------------------------------


def check_sub_agents(classes: Iterable[type[Actor]]) -> None:
    """Refuse a deployment whose agents start child jobs of an agent it does not list
    (its child jobs would fail at once); a class listed with `count = 0` counts, for
    one run elsewhere."""
    from actors.models.agent import Agent

    agents = [cls for cls in classes if issubclass(cls, Agent)]
    known = {cls.name for cls in agents}
    for cls in agents:
        missing = sorted(cls.graph.sub_agents() - known)
        if missing:
            raise ConfigError(
                f"agent {cls.name!r} starts child jobs of {', '.join(map(repr, missing))}, "
                "which this deployment does not list: add its class as an [[actor]] "
                "(count = 0 if it runs elsewhere)"
            )


def graphs_of(classes: Iterable[type[Actor]]) -> list[Graph]:
    from actors.models.agent import Agent

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
    """One user of an account: its public key and its permissions, in the subjects its
    account sees (JetStream's API under the account's import prefix, `api_prefix`)."""
    if role.everything:
        return {"nkey": key}
    inbox = f"{role.inbox(names)}.>"
    publish = {perms.local_subject(names, role.name, s) for s in role.grants.publish}
    permissions: dict[str, Any] = {
        "publish": {"allow": sorted(publish)},
        "subscribe": {"allow": sorted(role.grants.subscribe | {inbox})},
    }
    if role.deny_publish:
        permissions["publish"]["deny"] = sorted(role.deny_publish)
    if role.responses:
        permissions["allow_responses"] = True
    return {"nkey": key, "permissions": permissions}


def accounts_of(
    names: Names, roles: Iterable[Role], keys: Mapping[str, str], *, state: str | None = None
) -> dict[str, Any]:
    """The server's accounts for one deployment: its state account (JetStream: every
    stream and bucket; the supervisor's and the admin's users), and one account per
    other role (`keys`: each role's public key). `state` names the state account
    (default `perms.state_account`; the bench shares one among its deployments).

    What crosses between them is derived from the roles' grants, never listed by hand:

    - each subject a role may publish to is a service the state account exports to that
      role's account alone (JetStream's API imported under `api_prefix`): a publish
      lands in the state account, and any answer to it (an API response, a stream's
      acknowledgement) comes back to the requester's account only;
    - each subject a role subscribes to (and its inbox, where its ordered consumers
      deliver) is a stream the state account exports to it;
    - what one outside role publishes and another subscribes to (an agent's tokens, an
      actor's answer to `rig ps`) is a stream the publisher's account exports to the
      subscriber's (a message a service brought into the state account goes no further).
    """
    roles = list(roles)
    if state is None:
        state = perms.state_account(names)
    outside = [r for r in roles if r.name not in perms.STATE_ROLES]
    state_exports: dict[tuple[str, str], set[str]] = defaultdict(set)
    role_exports: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    blocks: dict[str, Any] = {
        state: {
            "jetstream": "enabled",
            "users": [
                user_entry(names, r, keys[r.name]) for r in roles if r.name in perms.STATE_ROLES
            ],
        }
    }
    for role in outside:
        account = perms.account_of(names, role.name)
        imports: dict[tuple[str, str, str], dict[str, Any]] = {}
        for subject in sorted(role.grants.publish):
            state_exports[("service", subject)].add(account)
            entry: dict[str, Any] = {"service": {"account": state, "subject": subject}}
            local = perms.local_subject(names, role.name, subject)
            if local != subject:
                entry["to"] = local
            imports[("service", state, subject)] = entry
        for subject in sorted(role.grants.subscribe | {f"{role.inbox(names)}.>"}):
            state_exports[("stream", subject)].add(account)
            imports[("stream", state, subject)] = {"stream": {"account": state, "subject": subject}}
        for other in outside:
            if other.name == role.name:
                continue
            source = perms.account_of(names, other.name)
            for published in sorted(other.grants.publish):
                for wanted in sorted(role.grants.subscribe):
                    shared = perms.narrower(published, wanted)
                    if shared is not None:
                        role_exports[other.name][shared].add(account)
                        imports[("stream", source, shared)] = {
                            "stream": {"account": source, "subject": shared}
                        }
        blocks[account] = {
            "users": [user_entry(names, role, keys[role.name])],
            "imports": list(imports.values()),
        }
    for role in outside:
        exported = role_exports.get(role.name)
        if exported:
            blocks[perms.account_of(names, role.name)]["exports"] = [
                {"stream": subject, "accounts": sorted(accounts)}
                for subject, accounts in sorted(exported.items())
            ]
    exports = []
    for (kind, subject), accounts in sorted(state_exports.items()):
        export: dict[str, Any] = {kind: subject, "accounts": sorted(accounts)}
        if kind == "service" and ".CONSUMER.MSG.NEXT." in subject:
            export["response_type"] = "stream"  # a pull is answered with many messages
        exports.append(export)
    blocks[state]["exports"] = exports
    return blocks


def server_config(
    base: Path, accounts: Mapping[str, Any] | None, tls: TlsFiles | None = None
) -> str:
    """A server config: the project's `nats.conf` and the deployments' accounts
    (`accounts_of`; None: an open server). (The server's `include` takes paths relative
    to the including file only, so the base is copied in.) JSON is valid in NATS's
    config syntax, and quoted strings keep their `$`."""
    text = f"# Written by Rig from {base}: edits are lost.\n{base.read_text()}"
    if accounts is not None:
        text += "\naccounts " + json.dumps(dict(accounts), indent=1) + "\n"
    if tls is not None:  # clients must speak TLS, and may verify the server by its CA
        files = {"cert_file": str(tls.cert.resolve()), "key_file": str(tls.key.resolve())}
        text += "\ntls " + json.dumps(files | {"timeout": 5}, indent=1) + "\n"
    return text


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by its owner only."""
    ensure_home(path.parent)
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
    accounts = None
    if classes is not None:
        roles = roles_for(names, classes)
        accounts = accounts_of(names, roles, {r.name: ensure_seed(home, r.name) for r in roles})
    path = home / "nats-server.conf"
    write_private(path, server_config(base, accounts, tls))
    return path


def role_table(names: Names, roles: Iterable[Role]) -> str:
    """Every role's grants as Markdown: what `rig roles` prints, and docs/design/security.md
    shows for the default deployment (a test keeps the two equal)."""
    rows = [
        "| role | account | for | may publish to | may subscribe to |",
        "| --- | --- | --- | --- | --- |",
    ]
    for role in roles:
        account = f"`{perms.account_of(names, role.name)}`"
        if role.everything:
            rows.append(f"| `{role.name}` | {account} | {role.purpose} | everything | everything |")
            continue
        publish = sorted(role.grants.publish)
        if role.responses:
            publish.append("replies to what it receives (`allow_responses`)")
        subscribe = sorted(role.grants.subscribe | {f"{role.inbox(names)}.>"})
        rows.append(
            f"| `{role.name}` | {account} | {role.purpose} | {_cells(publish)} "
            f"| {_cells(subscribe)} |"
        )
    return "\n".join(rows) + "\n"


def _cells(subjects: list[str]) -> str:
    return "<br>".join(s if s.startswith("replies") else f"`{s}`" for s in subjects)
