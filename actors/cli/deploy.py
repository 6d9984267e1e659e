"""`rig up`, `rig actor run`, `rig new`, `rig roles`, `rig admit`, `rig gateway`, `rig
keys`, `rig cluster`: starting a deployment and what it runs with.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.cli.common import (
    EXIT_OK,
    help_of,
    load_actor_class,
    print_json,
    usage_error,
    with_client,
)
from actors.gateway.keys import add_key, keys_path, load_keys, revoke_key
from actors.runtime.loop import run_async
from actors.runtime.settings import RigConfig
from protocols import (
    RigError,
)

if TYPE_CHECKING:  # each command imports what it needs: `rig --help` starts at once
    from actors.runtime.client import RigClient


def add(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Add this family's verbs to `rig`'s parser (`common`: the options every verb takes)."""
    up = verbs.add_parser(
        "up",
        parents=[common],
        help="start nats-server and the actors, restart any that die",
        description="Start nats-server (unless RIG_NATS_URL is set, then use that server) "
        "and the actor processes the config lists; restart an actor that dies; stop "
        "everything on Ctrl-C or SIGTERM.",
    )
    up.add_argument(
        "--config",
        type=Path,
        help="TOML file of [[actor]] class/count entries "
        "(default: the refund example, one process each)",
    )
    up.add_argument(
        "--port",
        type=int,
        help="client port of the started nats-server (default: nats.conf's, 4222; 0: a free one)",
    )
    up.add_argument(
        "--monitor-port",
        type=int,
        help="monitoring port of the started server (default: nats.conf's, 8222; 0: a free one)",
    )
    up.add_argument(
        "--gateway-port",
        type=int,
        metavar="PORT",
        help="port of the HTTP gateway it starts on loopback (default: RIG_GATEWAY_PORT or "
        "8080; 0: a free one). Its API key is made once, in $RIG_HOME/gateway.key",
    )
    up.add_argument("--no-gateway", action="store_true", help="start no HTTP gateway")
    up.add_argument(
        "--cluster",
        type=int,
        metavar="N",
        help="start N nats-servers (3 or 5) as one cluster on this machine, with "
        "nats-cluster.conf: every stream and bucket has N copies, the tool ledger lives in "
        "the cluster, and the actors are spread over the servers (client ports --port and "
        "up, default 4222; routes --cluster-port and up; docs/design/cluster.md)",
    )
    up.add_argument(
        "--cluster-port",
        type=int,
        metavar="PORT",
        help="with --cluster: the first node's route port (default 6222)",
    )
    up.add_argument(
        "--join",
        metavar="URL[,URL...]",
        help="start only the actors, against a cluster that runs elsewhere (as a second "
        "host does): its servers' client URLs. The first host's $RIG_HOME/creds (and "
        "tls/ca.pem) must be copied here",
    )
    up.add_argument(
        "--insecure",
        action="store_true",
        help="start the server with no users: anyone who reaches its port may do anything "
        "(for experiments only). By default every role has a NATS user of its own, its "
        "nkey seed in $RIG_HOME/creds, and may publish and subscribe only where its work is",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="make the server require TLS: a local CA and a certificate for this host are "
        "made once in $RIG_HOME/tls (every Rig client verifies the server with its ca.pem), "
        "unless --tls-cert and --tls-key give the server's own",
    )
    up.add_argument("--tls-cert", type=Path, metavar="PEM", help="with --tls: the certificate")
    up.add_argument("--tls-key", type=Path, metavar="PEM", help="with --tls: its private key")
    up.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        help="with --tls-cert: the CA clients verify it with (also RIG_TLS_CA for them)",
    )
    up.set_defaults(run=_up)
    actor = verbs.add_parser("actor", help="run one actor process")
    actor.set_defaults(run=help_of(actor))
    actor_verbs = actor.add_subparsers(title="commands", metavar="COMMAND")
    run = actor_verbs.add_parser(
        "run",
        parents=[common],
        help="run MODULE:CLASS as an actor process",
        description="Run one actor process; the current directory is importable.",
    )
    run.add_argument(
        "target",
        metavar="MODULE:CLASS",
        help="e.g. actors:Supervisor or examples.greeter:GreeterAgent",
    )
    run.add_argument(
        "--profile",
        metavar="DIR",
        help="profile with pyinstrument; write DIR/CLASS-PID.txt on exit (also RIG_PROFILE_DIR)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://RIG_METRICS_HOST:PORT/metrics (also "
        "RIG_METRICS_PORT; rig up gives each process one)",
    )
    run.set_defaults(run=_actor_run)
    new = verbs.add_parser(
        "new",
        parents=[common],
        help="write a new agent, tool or verifier module, with a test that passes",
        description="Write a module to start from and a test beside it that uses "
        "actors.testing (it passes as written; run it with pytest). `agent` writes an "
        "agent with a graph, a tool executor whose tool has a ledger-friendly key and a "
        "reconcile, a verifier, their test, and a rig up config (NAME.toml). NAME is the "
        "agent's (or executor's, verifier's) name; its module is NAME with - as _. "
        "See docs/guide/first-agent.md.",
    )
    new.add_argument("kind", choices=["agent", "tool", "verifier"], help="what to write")
    new.add_argument("name", metavar="NAME", help="e.g. support-triage")
    new.add_argument("--dir", type=Path, default=Path("."), help="where to write (default: here)")
    new.add_argument("--force", action="store_true", help="overwrite files that exist")
    new.set_defaults(run=_new)
    roles = verbs.add_parser(
        "roles",
        parents=[common],
        help="print the NATS users a deployment gets, and what each may do",
        description="Print every role `rig up` makes a NATS user for (each actor class of "
        "the config, and the client, gateway and admin), with the subjects it may publish "
        "and subscribe to: generated from the subject layout and the agents' graphs, as "
        "the server enforces them. No server needed.",
    )
    roles.add_argument(
        "--config",
        type=Path,
        help="rig up's TOML file of [[actor]] entries (default: the refund example)",
    )
    roles.add_argument(
        "--format",
        choices=["markdown", "conf"],
        default="markdown",
        help="a Markdown table, or the server config's users (with placeholder keys)",
    )
    roles.set_defaults(run=_roles)
    admit = verbs.add_parser(
        "admit",
        parents=[common],
        help="give new actor classes their NATS identities in a running `rig up`",
        description="With security on, an actor process needs a NATS identity made for its "
        "role, and `rig up` makes them for the classes of its config. This asks the running "
        "`rig up` (as the admin: its $RIG_HOME/creds/admin.nk) to make them for more "
        "classes and load them into the server without a restart; it remembers them "
        "($RIG_HOME/admitted.json) when it starts again. Then start each with "
        "`rig actor run MODULE:CLASS`. The classes must import where `rig up` runs.",
    )
    admit.add_argument("targets", nargs="+", metavar="MODULE:CLASS", help="actor classes to admit")
    admit.set_defaults(run=_admit)
    gateway = verbs.add_parser(
        "gateway",
        help="serve Rig over HTTP (202 + job id, SSE with resume, long poll) and the web console",
        description="Run the HTTP gateway (actors:Gateway) on loopback: POST /v1/jobs "
        "answers 202 with the job id; GET /v1/jobs/{id}/events streams the journal as "
        "Server-Sent Events that resume by Last-Event-ID on any replica. Stateless: start "
        "as many as you like. The routes are in docs/reference/http-api.md. With a keys file "
        "(RIG_GATEWAY_KEYS, default $RIG_HOME/gateway-keys) every /v1 route needs "
        "Authorization: Bearer <key>. With RIG_WEBHOOK_SECRET it delivers webhooks. The "
        "web console is at /console/ (it asks for a key once; docs/guide/console.md).",
    )
    gateway.add_argument(
        "--host",
        help="address to bind (default: RIG_GATEWAY_HOST or 127.0.0.1); any but loopback "
        "needs API keys (rig keys add NAME)",
    )
    gateway.add_argument("--port", type=int, help="port (default: RIG_GATEWAY_PORT or 8080)")
    gateway.set_defaults(run=_gateway)
    keys = verbs.add_parser(
        "keys",
        help="the gateway's API keys",
        description="API keys of `rig gateway`, kept as SHA-256 hashes in a keys file "
        "(RIG_GATEWAY_KEYS, default $RIG_HOME/gateway-keys). Gateways re-read it when it "
        "changes: a revoked key stops working within seconds.",
    )
    keys.set_defaults(run=help_of(keys))
    keys_file = argparse.ArgumentParser(add_help=False)
    keys_file.add_argument("--file", type=Path, help="the keys file (default: as above)")
    keys_verbs = keys.add_subparsers(title="commands", metavar="COMMAND")
    keys_add = keys_verbs.add_parser(
        "add",
        parents=[common, keys_file],
        help="make a key; it is printed once, only its hash is kept",
    )
    keys_add.add_argument("name", help="what the key is for (letters, digits, _ and -)")
    keys_add.set_defaults(run=_keys_add)
    keys_ls = keys_verbs.add_parser("ls", parents=[common, keys_file], help="the keys' names")
    keys_ls.set_defaults(run=_keys_ls)
    keys_revoke = keys_verbs.add_parser(
        "revoke", parents=[common, keys_file], help="remove a key by name"
    )
    keys_revoke.add_argument("name")
    keys_revoke.set_defaults(run=_keys_revoke)
    cluster = verbs.add_parser(
        "cluster",
        help="the health of the NATS servers Rig runs on",
        description="Servers, streams and consumers as JetStream reports them.",
    )
    cluster.set_defaults(run=help_of(cluster))
    cluster_verbs = cluster.add_subparsers(title="commands", metavar="COMMAND")
    cluster_status = cluster_verbs.add_parser(
        "status",
        parents=[common],
        help="leaders, copies in sync and lag per stream and consumer (exit 1 if unhealthy)",
        description="Every stream and bucket of the deployment and every consumer of its "
        "work stream: its leader, how many of its copies are current and how far behind "
        "the others are, what waits in it; and, for a `rig up --cluster` of this RIG_HOME, "
        "each server's connections, routes and sync setting (from its monitoring port). "
        "Exit 0 when nothing is wrong, 1 with the problems listed.",
    )
    cluster_status.set_defaults(run=_cluster_status)


def _up(args: argparse.Namespace) -> int:
    from actors.deploy.up import UpConfig, check_cluster_size, run_up

    config = UpConfig.load(args.config)
    gateway_port = args.gateway_port
    if gateway_port is None:
        gateway_port = RigConfig.from_env().gateway_port
    if not 0 <= gateway_port < 65536:
        raise usage_error(f"--gateway-port must be a port number, not {gateway_port}")
    if args.cluster is not None:
        check_cluster_size(args.cluster)
    if args.cluster_port is not None and args.cluster is None:
        raise usage_error("--cluster-port goes with --cluster")
    join: list[str] | None = None
    if args.join is not None:
        join = [url.strip() for url in args.join.split(",") if url.strip()]
        clashes = [
            flag
            for flag, given in (
                ("--cluster", args.cluster),
                ("--port", args.port),
                ("--monitor-port", args.monitor_port),
                ("--tls", args.tls),
                ("--insecure", args.insecure),
            )
            if given
        ]
        if clashes:
            raise usage_error(f"--join starts no server: {', '.join(clashes)} cannot go with it")
        if not join or not all(re.match(r"^(nats|tls)://[^/\s]+:\d+$", url) for url in join):
            raise usage_error(
                f"--join takes servers' URLs, nats://HOST:PORT[,...], not {args.join!r}"
            )
    return run_async(
        run_up(
            config,
            port=args.port,
            monitor_port=args.monitor_port,
            gateway_port=None if args.no_gateway else gateway_port,
            json_output=args.json,
            insecure=args.insecure,
            tls=_tls_files(args),
            cluster=args.cluster or 0,
            cluster_port=args.cluster_port,
            join=join,
        )
    )


def _tls_files(args: argparse.Namespace) -> Any:
    """`rig up`'s TLS: False, True (made in $RIG_HOME/tls), or the given files."""
    from actors.runtime.tls import TlsFiles

    given = (args.tls_cert, args.tls_key, args.tls_ca)
    if not args.tls:
        if any(given):
            raise usage_error("--tls-cert, --tls-key and --tls-ca go with --tls")
        return False
    if not any(given):
        return True
    if not all(given):
        raise usage_error("--tls-cert, --tls-key and --tls-ca go together (or none: a local CA)")
    for path in given:
        if not path.is_file():
            raise usage_error(f"{path} is not a file")
    return TlsFiles(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)


def _actor_run(args: argparse.Namespace) -> int:
    cls = load_actor_class(args.target)
    config = RigConfig.from_env()
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port < 65536:
            raise usage_error(f"--metrics-port must be a port number, not {args.metrics_port}")
        config = dataclasses.replace(config, metrics_port=args.metrics_port)
    if args.json and config.log_format is None:
        config = dataclasses.replace(config, log_format="json")
    profile = args.profile or config.profile_dir
    if not profile:
        run_async(cls(config=config).run())
        return EXIT_OK
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise usage_error("--profile needs pyinstrument: pip install 'rig[bench]'") from None
    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        run_async(cls(config=config).run())
    finally:
        profiler.stop()
        folder = Path(profile)
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{cls.__name__}-{os.getpid()}.txt"
        out.write_text(profiler.output_text(unicode=True, show_all=False))
    return EXIT_OK


def _new(args: argparse.Namespace) -> int:
    from actors.cli.scaffold import scaffold, write

    made = scaffold(args.kind, args.name)
    try:
        paths = write(made, args.dir, force=args.force)
    except FileExistsError as exc:
        raise usage_error(str(exc)) from None
    except OSError as exc:
        raise usage_error(f"cannot write into {args.dir}: {exc.strerror or exc}") from None
    if args.json:
        print_json({"files": [str(p) for p in paths], "next": made.next_steps})
        return EXIT_OK
    for path in paths:
        print(f"wrote {path}")
    print("next:")
    for step in made.next_steps:
        print(f"  {step}")
    return EXIT_OK


def _roles(args: argparse.Namespace) -> int:
    from actors.deploy.roles import accounts_of, role_table, roles_for
    from actors.deploy.up import UpConfig

    config = UpConfig.load(args.config)
    names = RigConfig.from_env().names
    roles = roles_for(names, [load_actor_class(spec.target) for spec in config.actors])
    if args.json or args.format == "conf":
        keys = {role.name: f"<{role.name}'s public key>" for role in roles}
        accounts = accounts_of(names, roles, keys)
        if args.json:
            print_json({"prefix": names.prefix, "accounts": accounts})
        else:
            print("accounts " + json.dumps(accounts, indent=1))
        return EXIT_OK
    print(role_table(names, roles), end="")
    return EXIT_OK


def _gateway(args: argparse.Namespace) -> int:
    from actors.gateway.app import Gateway

    config = RigConfig.from_env()
    if args.host is not None:
        config = dataclasses.replace(config, gateway_host=args.host)
    if args.port is not None:
        if not 0 < args.port < 65536:
            raise usage_error("--port must be between 1 and 65535")
        config = dataclasses.replace(config, gateway_port=args.port)
    run_async(Gateway(config=config).run())
    return EXIT_OK


def _admit(args: argparse.Namespace) -> int:
    for target in args.targets:
        load_actor_class(target)  # a mistake is said here, before anything is asked

    async def ask(rig: RigClient) -> dict[str, Any]:
        subject = rig.names.admit
        request = json.dumps({"classes": args.targets}).encode()
        from nats.errors import NoRespondersError

        try:
            msg = await rig.nc.request(subject, request, timeout=60)
        except NoRespondersError:
            raise RigError(
                f"no `rig up` of deployment {rig.names.prefix!r} answers on {subject}: "
                "admit classes while `rig up` runs (it owns the server's config); with a "
                "server of your own, add them to its users (`rig roles --format conf`)"
            ) from None
        answer: dict[str, Any] = json.loads(msg.data)
        return answer

    answer = with_client(ask, role="admin")
    if "error" in answer:
        raise RigError(f"rig up did not admit them: {answer['error'].get('message')}")
    if args.json:
        print_json(answer)
        return EXIT_OK
    print(f"admitted {', '.join(args.targets)} (roles {', '.join(answer['roles'])})")
    print("start each with: " + "; ".join(f"rig actor run {t}" for t in args.targets))
    return EXIT_OK


def _keys_add(args: argparse.Namespace) -> int:
    path = args.file or keys_path()
    key = add_key(path, args.name)
    if args.json:
        print_json({"name": args.name, "key": key, "file": str(path)})
    else:
        print(key)
        print(
            f"rig: the key {args.name!r} is stored hashed in {path}; it is not shown again",
            file=sys.stderr,
        )
    return EXIT_OK


def _keys_ls(args: argparse.Namespace) -> int:
    path = args.file or keys_path()
    names = load_keys(path).names if path.exists() else []
    if args.json:
        print_json({"file": str(path), "keys": names})
    elif not names:
        print(f"no keys in {path}")
    else:
        print("\n".join(names))
    return EXIT_OK


def _keys_revoke(args: argparse.Namespace) -> int:
    path = args.file or keys_path()
    revoke_key(path, args.name)
    if args.json:
        print_json({"name": args.name, "revoked": True})
    else:
        print(f"revoked {args.name}")
    return EXIT_OK


def _cluster_status(args: argparse.Namespace) -> int:
    from actors.deploy.health import cluster_status, status_lines

    status = with_client(
        lambda rig: cluster_status(rig.js, rig.names, rig.config.home), role="admin"
    )
    if args.json:
        print_json(status)
    else:
        print("\n".join(status_lines(status)))
    return EXIT_OK if status["healthy"] else 1
