"""Settings: every `RIG_*` variable a process reads, declared once in `SETTINGS`, read
once into a `RigConfig` (`RigConfig.from_env()`), typed, with the error a user gets for a
bad value (`ConfigError`, naming the variable). Modules receive a `RigConfig`; none reads
the environment itself (`scripts/structure.py` checks it). docs/reference/configuration.md
is this table, printed by `python -m actors.runtime.settings` (a test keeps them equal).

Variables that are not Rig's stay where their owners define them: OpenTelemetry's
`OTEL_*` (read by actors/runtime/tracing.py as the OpenTelemetry spec says), the
API-key variable a model provider names (`api_key_env` in its config), `$USER`,
`$XDG_CONFIG_HOME`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from protocols import ConfigError, InputLimits, Names

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_RETENTION_S = 7 * 86400.0
DEFAULT_GATEWAY_PORT = 8080

# How a provider is asked for a schema-shaped answer (a provider's `dialect`).
DIALECTS: dict[str, str] = {
    "openai": 'response_format {"type": "json_schema"} (OpenAI, vLLM, LM Studio, llama-server)',
    "llama_cpp": 'response_format {"type": "json_object", "schema": ...} (llama-cpp-python)',
    "ollama": "Ollama's own /api/chat with format: <schema>",
    "prompt_only": "no constraint: the schema goes in the prompt; every answer is validated",
}


@dataclass(frozen=True, slots=True)
class SizeLimits:
    """How large what enters Rig may be, each a setting (`RIG_MAX_*`): past one, the
    value gets a typed error where it enters, before anything deeper sees it. Sizes are
    bytes as Rig stores the value (msgpack, a little smaller than its JSON; a tool's
    result and a model's answer: their JSON and text)."""

    input: int = 256 * 1024  # a job's input, a signal's data, a person's arguments
    result: int = 64 * 1024 * 1024  # a tool's result (past RIG_INLINE_RESULT_BYTES: a reference)
    answer: int = 64 * 1024  # a model's answer, as text
    event: int = 512 * 1024  # one journal event
    snapshot: int | None = None  # a job's state (None: the server's max_payload less 4 KiB)
    thread_tokens: int = 32_000  # the most of a thread a turn's context may carry
    memory: int = 16 * 1024  # one entry an agent remembers (`actors.tools.memory`)


@dataclass(frozen=True, slots=True)
class Setting:
    """One `RIG_*` variable, as the reference shows it."""

    name: str
    default: str
    meaning: str
    group: str


def _group(group: str, *rows: tuple[str, str, str]) -> tuple[Setting, ...]:
    return tuple(Setting(name, default, meaning, group) for name, default, meaning in rows)


SETTINGS: tuple[Setting, ...] = (
    *_group(
        "Where Rig runs",
        ("RIG_NATS_URL", DEFAULT_NATS_URL, "the NATS server (comma-separate several)"),
        ("RIG_PREFIX", "rig", "namespace of every subject, stream and bucket"),
        ("RIG_HOME", "./.rig", "local data: the ledger file, `rig up`'s server, credentials"),
        (
            "RIG_CREDS",
            "the role's own",
            "nkey seed file to connect with; by default a process "
            "uses `$RIG_HOME/creds/<role>.nk` if it exists (`rig up` makes them)",
        ),
        (
            "RIG_TLS_CA",
            "`$RIG_HOME/tls/ca.pem` if `rig up --tls` made it",
            "the CA a TLS server's certificate must chain to",
        ),
        (
            "RIG_REPLICAS",
            "1",
            "copies of every stream and bucket Rig creates (1 to 5; `rig up --cluster` sets 3)",
        ),
        (
            "RIG_SUPERVISOR_PARTITIONS",
            "1 (`rig up`: 16 for several supervisors or a cluster)",
            "the supervisor's work split by job id (1 to 16; the same in every process)",
        ),
        (
            "RIG_LEDGER",
            "local",
            "where tool calls are claimed: `local`, an SQLite file per "
            "host; `cluster`, a replicated bucket every host shares",
        ),
        (
            "RIG_RETENTION",
            "7d",
            "how long an ended job (its snapshot, index entry, LLM cache "
            "entries, cluster ledger records) is kept: `30d`, `12h`, `90m`, seconds",
        ),
        ("RIG_LLM_CONFIG", "none (the agent's own)", "the model providers' TOML file"),
        ("RIG_NATS_CONTEXT", "1", "`0`: `rig up` writes no `nats` CLI context"),
    ),
    *_group(
        "How a process works",
        ("RIG_ACK_WAIT", "30", "seconds until an unacked message is redelivered"),
        ("RIG_CONCURRENCY", "64", "handlers one actor process runs at once"),
        (
            "RIG_MAX_DELIVER",
            "10",
            "deliveries of a failing message before it is "
            "dead-lettered (its job then goes to a person)",
        ),
        (
            "RIG_MAX_BACKLOG",
            "1000",
            "steps waiting for an agent's processes past which a submit answers `busy`",
        ),
        (
            "RIG_INLINE_RESULT_BYTES",
            "16384",
            "a tool result whose JSON is larger travels by reference (object store `RIG_RESULTS`)",
        ),
        ("RIG_LIMIT_DEPTH", str(InputLimits().depth), "deepest nesting one input may hold"),
        ("RIG_LIMIT_STRING", str(InputLimits().string), "longest string one input may hold"),
        ("RIG_LIMIT_ITEMS", str(InputLimits().items), "most items of one list in an input"),
        ("RIG_LIMIT_KEYS", str(InputLimits().keys), "most keys of one object in an input"),
        (
            "RIG_INSTANCE",
            "host-pid",
            "a supervisor's name among its replicas (`rig up` gives "
            "each slot one, so a restarted one takes its partitions back at once)",
        ),
        (
            "RIG_TIMER_SWEEP_S",
            "60",
            "every this many seconds a supervisor sends again the timers (deadline, stall, "
            "signal timeout, schedule tick) of its jobs that are overdue by as much: what "
            "the servers lost",
        ),
        ("RIG_HOSTNAME", "the system's", "this host's name in the local ledger's presence"),
        (
            "RIG_ALLOW_SECOND_LEDGER",
            "0",
            "`1`: serve a tool another host serves with its own "
            "local ledger (at most once then holds per host only)",
        ),
        ("RIG_UVLOOP", "1", "`0`: run on asyncio's own loop instead of uvloop"),
        ("RIG_PROFILE_DIR", "none", "`rig actor` writes a pyinstrument profile there on exit"),
    ),
    *_group(
        "How large things may be (each past its limit is a typed error where it enters)",
        (
            "RIG_MAX_INPUT_BYTES",
            str(SizeLimits().input),
            "a job's input, a signal's data, a person's arguments (`payload_too_large`; at "
            "most a quarter of the server's max_payload, since a job carries its input)",
        ),
        (
            "RIG_MAX_RESULT_BYTES",
            str(SizeLimits().result),
            "a tool's result, as JSON (`result_too_large`: the edge's failure path)",
        ),
        (
            "RIG_MAX_ANSWER_BYTES",
            str(SizeLimits().answer),
            "a model's answer (`answer_too_large`: asked again, then the safe edge)",
        ),
        (
            "RIG_MAX_EVENT_BYTES",
            str(SizeLimits().event),
            "one journal event (the job ends `failed`, `too_large`)",
        ),
        (
            "RIG_MAX_SNAPSHOT_BYTES",
            "the server's max_payload less 4096",
            "a job's state (the job ends `failed`, `too_large`)",
        ),
        (
            "RIG_MAX_MEMORY_BYTES",
            str(SizeLimits().memory),
            "one value an agent remembers (`remember` fails with `memory_too_large`)",
        ),
        (
            "RIG_MAX_THREAD_TOKENS",
            str(SizeLimits().thread_tokens),
            "the most of its thread a turn's context carries, whatever its agent's `thread_tokens`",
        ),
    ),
    *_group(
        "Logs and metrics",
        ("RIG_LOG_LEVEL", "info", "debug, info, warning or error"),
        ("RIG_LOG_FORMAT", "console on a terminal, else json", "`console` or `json`"),
        ("RIG_LOG_FILE", "none", "a file that also gets every line as JSON (`rig logs`)"),
        ("RIG_METRICS_PORT", "none", "serve Prometheus `/metrics` on this port (0: a free one)"),
        ("RIG_METRICS_HOST", "127.0.0.1", "... on this address"),
    ),
    *_group(
        "The gateway (HTTP)",
        ("RIG_GATEWAY_HOST", "127.0.0.1", "where `rig gateway` listens"),
        ("RIG_GATEWAY_PORT", str(DEFAULT_GATEWAY_PORT), "... its port (0: a free one)"),
        ("RIG_GATEWAY_KEYS", "`$RIG_HOME/gateway-keys`", "the API keys file (`rig keys`)"),
        (
            "RIG_GATEWAY_URL",
            "`http://127.0.0.1:8080`",
            "where clients reach the gateway (`rig agents --a2a`; `rig up` sets it)",
        ),
        (
            "RIG_GATEWAY_IDLE_S",
            "60",
            "seconds a connection may send no request before it is closed",
        ),
        (
            "RIG_WEBHOOK_SECRET",
            "none (`rig up` makes one)",
            "`whsec_...`: signs webhooks; unset, the gateway sends none",
        ),
        ("RIG_WEBHOOK_ATTEMPTS", "8", "deliveries of one webhook before it is dead-lettered"),
        ("RIG_WEBHOOK_BACKOFF_S", "2", "the first wait between attempts (doubling)"),
        ("RIG_WEBHOOK_TIMEOUT_S", "10", "seconds one delivery may take"),
        (
            "RIG_WEBHOOK_ALLOW",
            "none",
            "networks webhooks may reach although private (`127.0.0.1/32,10.0.0.0/8`)",
        ),
    ),
    *_group(
        "Fault injection (tests)",
        ("RIG_CRASH_AT", "none", "exit with 137 at these points (actors/runtime/faults.py)"),
        ("RIG_PAUSE_AT", "none", "SIGSTOP at these points"),
        ("RIG_CRASH_MARKER", "none", "a file: crash or pause once, leaving it behind"),
    ),
)
_DECLARED = frozenset(setting.name for setting in SETTINGS)


class _Env:
    """Typed reads of declared variables; an undeclared name is a bug, not a setting."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str:
        assert name in _DECLARED, f"{name} is not in SETTINGS"
        return self._environ.get(name, "").strip()

    def given(self) -> frozenset[str]:
        return frozenset(name for name in _DECLARED if self.text(name))

    def path(self, name: str) -> Path | None:
        return Path(raw) if (raw := self.text(name)) else None

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low:g} and {high:g}, not {raw}")
        return value

    def whole(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self.number(name, default, low=low, high=high)
        if value != int(value):
            raise ConfigError(f"{name} must be a whole number, not {self.text(name)}")
        return int(value)

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name).lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be 1 or 0, not {raw!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.text(name).lower() or default
        if raw not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
        return raw

    def duration(self, name: str, default: float) -> float:
        raw = self.text(name)
        if not raw:
            return default
        try:
            seconds = seconds_of(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if seconds < 1:
            raise ConfigError(f"{name} must be at least a second, not {raw!r}")
        return seconds

    def points(self, name: str) -> frozenset[str]:
        return frozenset(p.strip() for p in self.text(name).split(",") if p.strip())


@dataclass(frozen=True, kw_only=True)
class RigConfig:
    """Everything a process is told by its environment; `RigConfig.from_env()` reads
    `SETTINGS` once. Fields without a variable are fixed tunings tests may change."""

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
    sizes: SizeLimits = field(default_factory=SizeLimits)  # how large what enters may be
    creds: Path | None = None  # an nkey seed file to connect with (else the role's own)
    max_backlog: int = 1000  # steps waiting for an agent past which a submit is `busy`
    tls_ca: Path | None = None  # the CA to verify the server with (else $RIG_HOME/tls/ca.pem)
    replicas: int = 1  # copies of each stream and bucket Rig creates (3 in a cluster)
    ledger: Literal["local", "cluster"] = "local"  # where tool calls are claimed
    retention: float = DEFAULT_RETENTION_S  # seconds an ended job is kept
    gateway_host: str = "127.0.0.1"  # where `rig gateway` listens
    gateway_port: int = DEFAULT_GATEWAY_PORT  # ... and on which port (0: a free one)
    gateway_keys: Path | None = None  # the API keys file (else $RIG_HOME/gateway-keys)
    gateway_idle_s: float = 60.0
    gateway_url: str = f"http://127.0.0.1:{DEFAULT_GATEWAY_PORT}"  # where clients reach it
    webhook_secret: str | None = None
    webhook_attempts: int = 8
    webhook_backoff_s: float = 2.0
    webhook_timeout_s: float = 10.0
    webhook_allow: str = ""  # networks, parsed by the gateway (actors/gateway/webhooks.py)
    log_level: str = "info"
    log_format: Literal["console", "json"] | None = None  # None: console on a terminal
    log_file: Path | None = None
    uvloop: bool = True
    instance: str | None = None  # a supervisor's name among its replicas
    timer_sweep_s: float = 60.0  # how often, and how late, a lost timer is sent again
    hostname: str | None = None  # this host's name in the local ledger's presence
    allow_second_ledger: bool = False
    profile_dir: Path | None = None
    nats_context: bool = True  # `rig up` writes a nats CLI context
    given: frozenset[str] = frozenset()  # the variables that were set

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RigConfig:
        env = _Env(os.environ if environ is None else environ)
        metrics = env.whole("RIG_METRICS_PORT", -1, low=0, high=65535)
        return cls(
            nats_url=env.text("RIG_NATS_URL") or DEFAULT_NATS_URL,
            names=Names(
                env.text("RIG_PREFIX") or "rig",
                partitions=env.whole("RIG_SUPERVISOR_PARTITIONS", 1, low=1, high=16),
            ),
            home=env.path("RIG_HOME") or Path(".rig"),
            ack_wait=env.number("RIG_ACK_WAIT", 30.0, low=0.1, high=86400),
            concurrency=env.whole("RIG_CONCURRENCY", 64, low=1, high=100_000),
            max_deliver=env.whole("RIG_MAX_DELIVER", 10, low=2, high=10_000),
            inline_result_bytes=env.whole("RIG_INLINE_RESULT_BYTES", 16 * 1024, low=0, high=2**30),
            llm_config=env.path("RIG_LLM_CONFIG"),
            metrics_port=None if metrics < 0 else metrics,
            metrics_host=env.text("RIG_METRICS_HOST") or "127.0.0.1",
            limits=_limits(env),
            sizes=_sizes(env),
            creds=env.path("RIG_CREDS"),
            max_backlog=env.whole("RIG_MAX_BACKLOG", 1000, low=1, high=10**9),
            tls_ca=env.path("RIG_TLS_CA"),
            replicas=env.whole("RIG_REPLICAS", 1, low=1, high=5),
            ledger="cluster"
            if env.choice("RIG_LEDGER", "local", ("local", "cluster")) == "cluster"
            else "local",
            retention=env.duration("RIG_RETENTION", DEFAULT_RETENTION_S),
            gateway_host=env.text("RIG_GATEWAY_HOST") or "127.0.0.1",
            gateway_port=env.whole("RIG_GATEWAY_PORT", DEFAULT_GATEWAY_PORT, low=0, high=65535),
            gateway_keys=env.path("RIG_GATEWAY_KEYS"),
            gateway_idle_s=env.number("RIG_GATEWAY_IDLE_S", 60.0, low=0.1, high=3600),
            gateway_url=env.text("RIG_GATEWAY_URL") or f"http://127.0.0.1:{DEFAULT_GATEWAY_PORT}",
            webhook_secret=env.text("RIG_WEBHOOK_SECRET") or None,
            webhook_attempts=env.whole("RIG_WEBHOOK_ATTEMPTS", 8, low=1, high=100),
            webhook_backoff_s=env.number("RIG_WEBHOOK_BACKOFF_S", 2.0, low=0.01, high=600),
            webhook_timeout_s=env.number("RIG_WEBHOOK_TIMEOUT_S", 10.0, low=0.1, high=300),
            webhook_allow=env.text("RIG_WEBHOOK_ALLOW"),
            log_level=env.choice(
                "RIG_LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
            ),
            log_format="json"
            if (fmt := env.choice("RIG_LOG_FORMAT", "auto", ("auto", "console", "json"))) == "json"
            else "console"
            if fmt == "console"
            else None,
            log_file=env.path("RIG_LOG_FILE"),
            uvloop=env.flag("RIG_UVLOOP", True),
            instance=env.text("RIG_INSTANCE") or None,
            timer_sweep_s=env.number("RIG_TIMER_SWEEP_S", 60.0, low=0.1, high=86400),
            hostname=env.text("RIG_HOSTNAME") or None,
            allow_second_ledger=env.flag("RIG_ALLOW_SECOND_LEDGER", False),
            profile_dir=env.path("RIG_PROFILE_DIR"),
            nats_context=env.flag("RIG_NATS_CONTEXT", True),
            given=env.given(),
        )

    @property
    def servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def keys_file(self) -> Path:
        """The gateway's API keys: `RIG_GATEWAY_KEYS`, else `$RIG_HOME/gateway-keys`."""
        return self.gateway_keys or self.home / "gateway-keys"


@dataclass(frozen=True, slots=True)
class Faults:
    """The crash tests' fault points (actors/runtime/faults.py)."""

    crash_at: frozenset[str] = frozenset()
    pause_at: frozenset[str] = frozenset()
    marker: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Faults:
        env = _Env(os.environ if environ is None else environ)
        return cls(
            env.points("RIG_CRASH_AT"), env.points("RIG_PAUSE_AT"), env.path("RIG_CRASH_MARKER")
        )


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


def _limits(env: _Env) -> InputLimits:
    """`InputLimits` from RIG_LIMIT_DEPTH, _STRING, _ITEMS and _KEYS (unset: the default)."""
    default = InputLimits()

    def limit(name: str) -> int:
        return env.whole(f"RIG_LIMIT_{name.upper()}", getattr(default, name), low=1, high=2**31)

    return InputLimits(
        depth=limit("depth"), string=limit("string"), items=limit("items"), keys=limit("keys")
    )


def _sizes(env: _Env) -> SizeLimits:
    """`SizeLimits` from the RIG_MAX_*_BYTES and RIG_MAX_THREAD_TOKENS variables."""
    default = SizeLimits()

    def most(name: str, low: int = 64) -> int:
        value = getattr(default, name)
        return env.whole(f"RIG_MAX_{name.upper()}_BYTES", value, low=low, high=2**31)

    snapshot = env.whole("RIG_MAX_SNAPSHOT_BYTES", -1, low=1024, high=2**31)
    return SizeLimits(
        input=most("input"),
        result=most("result"),
        answer=most("answer"),
        event=most("event", low=1024),
        memory=most("memory"),
        snapshot=None if snapshot < 0 else snapshot,
        thread_tokens=env.whole("RIG_MAX_THREAD_TOKENS", default.thread_tokens, low=0, high=2**24),
    )


def reference() -> str:
    """The Markdown tables of docs/reference/configuration.md, one per group."""
    lines: list[str] = []
    for group in dict.fromkeys(setting.group for setting in SETTINGS):
        lines += [f"### {group}", "", "| variable | default | meaning |", "| --- | --- | --- |"]
        for setting in SETTINGS:
            if setting.group == group:
                default = (
                    setting.default
                    if "`" in setting.default or " " in setting.default
                    else f"`{setting.default}`"
                )
                lines.append(f"| `{setting.name}` | {default} | {setting.meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(reference())
