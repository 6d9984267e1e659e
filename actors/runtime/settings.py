"""Settings shared by every actor and the CLI, read from the environment.

| variable          | default                   | meaning                                         |
| ----------------- | ------------------------- | ----------------------------------------------- |
| `RIG_NATS_URL`    | `nats://127.0.0.1:4222`   | the NATS server (comma-separate several)        |
| `RIG_PREFIX`      | `rig`                     | namespace of every subject, stream and bucket   |
| `RIG_HOME`        | `./.rig`                  | local data: the ledger file, `rig up`'s server  |
| `RIG_ACK_WAIT`    | `30`                      | seconds until an unacked message is redelivered |
| `RIG_CONCURRENCY` | `64`                      | handlers one actor process runs at once         |
| `RIG_MAX_DELIVER` | `10`                      | deliveries of a failing message before it is    |
|                   |                           | dead-lettered (its job then goes to a person)   |
| `RIG_INLINE_RESULT_BYTES` | `16384`           | a tool result whose JSON is larger travels by   |
|                   |                           | reference (object store `RIG_RESULTS`)          |
| `RIG_METRICS_PORT` | (none)                   | serve Prometheus `/metrics` on this port        |
| `RIG_METRICS_HOST` | `127.0.0.1`              | ... on this address                             |
| `RIG_MAX_BACKLOG` | `1000`                    | steps waiting for an agent's processes past     |
|                   |                           | which a submit answers `busy` (retry later)     |
| `RIG_TLS_CA`      | `$RIG_HOME/tls/ca.pem`    | the CA a TLS server's certificate must chain to |
|                   | (if `rig up --tls` made it) |                                               |
| `RIG_CREDS`       | (the role's own)          | nkey seed file to connect with; by default a    |
|                   |                           | process uses `$RIG_HOME/creds/<role>.nk` if     |
|                   |                           | it exists (`rig up` makes them)                 |
| `RIG_REPLICAS`    | `1`                       | copies of every stream and bucket Rig creates   |
|                   |                           | (3 in a cluster; `rig up --cluster` sets it)    |
| `RIG_SUPERVISOR_PARTITIONS` | `1`             | the supervisor's work split by job id (1-16; |
|                   | (`rig up`: 16 for several | the same in every process of a deployment)      |
|                   | supervisors or a cluster) |                                                 |
| `RIG_LEDGER`      | `local`                   | where tool calls are claimed: `local`, an SQLite |
|                   |                           | file per host; `cluster`, a replicated bucket   |
|                   |                           | that every host shares (docs/cluster.md)        |
| `RIG_GATEWAY_HOST` | `127.0.0.1`              | where `rig gateway` listens                     |
| `RIG_GATEWAY_PORT` | `8080`                   | ... its port (0: a free one; `rig up`'s too)    |
| `RIG_RETENTION`   | `7d`                      | how long an ended job is kept (its snapshot,    |
|                   |                           | its index entry; `30d`, `12h`, `90m`, seconds)  |
|                   |                           | and an LLM cache entry; with the cluster ledger |
|                   |                           | `rig up` prunes ended jobs' records as old      |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from protocols import ConfigError, InputLimits, Names

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"

# How a provider is asked for a schema-shaped answer (a provider's `dialect`).
DIALECTS: dict[str, str] = {
    "openai": 'response_format {"type": "json_schema"} (OpenAI, vLLM, LM Studio, llama-server)',
    "llama_cpp": 'response_format {"type": "json_object", "schema": ...} (llama-cpp-python)',
    "ollama": "Ollama's own /api/chat with format: <schema>",
    "prompt_only": "no constraint: the schema goes in the prompt; every answer is validated",
}


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None


def env_number(name: str, default: float, *, low: float, high: float) -> float:
    """A number from the environment between `low` and `high`, or a `ConfigError`."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, not {raw}")
    return value


DEFAULT_RETENTION_S = 7 * 86400.0
DEFAULT_GATEWAY_PORT = 8080


@dataclass(frozen=True, kw_only=True)
class RigConfig:
    """Where Rig connects and keeps its data; `RigConfig.from_env()` reads the variables above."""

    nats_url: str = DEFAULT_NATS_URL
    names: Names = field(default_factory=Names)
    home: Path = Path(".rig")
    ack_wait: float = 30.0
    concurrency: int = 64
    batch: int = 32
    fetch_timeout: float = 2.0
    max_deliver: int = 10
    nak_delay: float = 1.0
    drain_timeout: float = 10.0
    connect_timeout: float = 30.0
    # Give up sooner when every server refuses the connection for this long (nothing
    # listens: the CLI says so at once); None waits out `connect_timeout` (an actor
    # outlives a server's restart).
    refused_wait: float | None = None
    inline_result_bytes: int = 16 * 1024
    llm_config: Path | None = None
    metrics_port: int | None = None  # serve /metrics on it (None: do not serve)
    metrics_host: str = "127.0.0.1"
    limits: InputLimits = field(default_factory=InputLimits)  # what one input may hold
    creds: Path | None = None  # an nkey seed file to connect with (else the role's own)
    max_backlog: int = 1000  # steps waiting for an agent past which a submit is `busy`
    tls_ca: Path | None = None  # the CA to verify the server with (else $RIG_HOME/tls/ca.pem)
    replicas: int = 1  # copies of each stream and bucket Rig creates (3 in a cluster)
    ledger: Literal["local", "cluster"] = "local"  # where tool calls are claimed
    retention: float = DEFAULT_RETENTION_S  # seconds an ended job is kept
    gateway_host: str = "127.0.0.1"  # where `rig gateway` listens
    gateway_port: int = DEFAULT_GATEWAY_PORT  # ... and on which port (0: a free one)

    @classmethod
    def from_env(cls) -> RigConfig:
        return cls(
            nats_url=os.environ.get("RIG_NATS_URL") or DEFAULT_NATS_URL,
            names=Names(
                os.environ.get("RIG_PREFIX") or "rig",
                partitions=int(env_number("RIG_SUPERVISOR_PARTITIONS", 1, low=1, high=16)),
            ),
            home=Path(os.environ.get("RIG_HOME") or ".rig"),
            ack_wait=_env_float("RIG_ACK_WAIT", 30.0),
            concurrency=int(_env_float("RIG_CONCURRENCY", 64)),
            max_deliver=max(2, int(_env_float("RIG_MAX_DELIVER", 10))),
            inline_result_bytes=max(0, int(_env_float("RIG_INLINE_RESULT_BYTES", 16 * 1024))),
            llm_config=Path(os.environ["RIG_LLM_CONFIG"])
            if os.environ.get("RIG_LLM_CONFIG")
            else None,
            metrics_port=int(env_number("RIG_METRICS_PORT", -1, low=0, high=65535))
            if os.environ.get("RIG_METRICS_PORT")
            else None,
            metrics_host=os.environ.get("RIG_METRICS_HOST") or "127.0.0.1",
            limits=_limits_from_env(),
            creds=Path(os.environ["RIG_CREDS"]) if os.environ.get("RIG_CREDS") else None,
            max_backlog=int(env_number("RIG_MAX_BACKLOG", 1000, low=1, high=10**9)),
            tls_ca=Path(os.environ["RIG_TLS_CA"]) if os.environ.get("RIG_TLS_CA") else None,
            replicas=int(env_number("RIG_REPLICAS", 1, low=1, high=5)),
            ledger=_ledger_from_env(),
            retention=_retention_from_env(),
            gateway_host=os.environ.get("RIG_GATEWAY_HOST") or "127.0.0.1",
            gateway_port=int(
                env_number("RIG_GATEWAY_PORT", DEFAULT_GATEWAY_PORT, low=0, high=65535)
            ),
        )

    @property
    def servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]


def seconds_of(text: str, *, zero: bool = False) -> float:
    """`30d`, `12h`, `90m`, `45s` or a plain number of seconds; finite, and positive
    unless `zero` allows 0. A `ValueError` saying so otherwise."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text[-1:] in units else float(text)
    except ValueError:
        seconds = -1.0
    if not (0 <= seconds if zero else 0 < seconds) or seconds == float("inf"):
        raise ValueError(f"{text!r} is not a duration (e.g. 30d, 12h, 90m, 45s)")
    return seconds


def _retention_from_env() -> float:
    raw = os.environ.get("RIG_RETENTION")
    if not raw:
        return DEFAULT_RETENTION_S
    try:
        seconds = seconds_of(raw)
    except ValueError as exc:
        raise ConfigError(f"RIG_RETENTION: {exc}") from None
    if seconds < 1:
        raise ConfigError(f"RIG_RETENTION must be at least a second, not {raw!r}")
    return seconds


def _ledger_from_env() -> Literal["local", "cluster"]:
    raw = os.environ.get("RIG_LEDGER") or "local"
    if raw not in ("local", "cluster"):
        raise ConfigError(f"RIG_LEDGER must be local or cluster, not {raw!r}")
    return "cluster" if raw == "cluster" else "local"


def _limits_from_env() -> InputLimits:
    """`InputLimits` from RIG_LIMIT_DEPTH, _STRING, _ITEMS and _KEYS (unset: the default)."""
    default = InputLimits()

    def limit(name: str) -> int:
        return int(
            env_number(f"RIG_LIMIT_{name.upper()}", getattr(default, name), low=1, high=2**31)
        )

    return InputLimits(
        depth=limit("depth"), string=limit("string"), items=limit("items"), keys=limit("keys")
    )
