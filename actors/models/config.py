"""The LLM config file (`RIG_LLM_CONFIG`): providers, and the policy each agent routes
with. Every key is checked (a typo is a `ConfigError` naming the file and section).

    [providers.local]                  # an LLM config file (see `load_llm_config`)
    base_url = "http://127.0.0.1:8400/v1"
    model = "chaos-1"
    dialect = "openai"                 # how the schema is asked for (`DIALECTS`)
    api_key_env = "OPENAI_API_KEY"     # optional: the variable holding the key
    price = { input_per_mtok = 0.15, output_per_mtok = 0.60 }
    max_concurrency = 8                # slots shared by every agent process, in turn
    requests_per_minute = 600          # shared token buckets
    tokens_per_minute = 200000
    require_schema = true              # refuse to start if the schema is not enforced
    probe = true                       # check the provider when an agent starts
    server_tokenizer = false           # count unreported usage with the server's tokenizer

    [agents.refund]
    providers = ["local"]              # tried in order: a fallback chain
    timeout = 30.0                     # per attempt, never past the job's deadline
    max_attempts = 4                   # per provider
    backoff = 0.2                      # first retry waits up to this (full jitter)
    max_backoff = 5.0
    stream = true                      # stream tokens to rig.tokens.<job_id>
    breaker_failure_rate = 0.5         # a provider's breaker opens when this share of a
    breaker_window = 50                #   process's last `window` calls (at least
    breaker_min_calls = 20             #   `min_calls`) were outages (5xx, timeouts)
    breaker_cooldown = 30.0            # seconds open before one probe is let through
    hedge_after = 5.0                  # a second request if the first takes longer (off
    hedge_percentile = 95              #   by default; or past this latency percentile)
    cache = false                      # exact-match response cache (temperature 0) in
    cache_ttl = 3600.0                 #   the KV bucket RIG_LLM_CACHE, per agent
    temperature = 0.0                  # above 0 the model samples; a job's seed
                                       #   (`Sampling`, set per eval trial) replays it
    queue_timeout = 60.0               # longest wait for a slot; `timeout` starts after
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.models.breaker import BreakerPolicy
from actors.models.dialects import OpenAICompatible, Provider
from actors.models.limits import ProviderLimits
from actors.models.llm import Price
from actors.models.router import RetryPolicy
from actors.runtime import tracing as tracing
from actors.runtime.settings import DIALECTS
from protocols import ConfigError

# --- configuration -----------------------------------------------------------------

_PROVIDER_KEYS = frozenset(
    {
        "kind",
        "base_url",
        "model",
        "api_key_env",
        "price",
        "max_concurrency",
        "requests_per_minute",
        "tokens_per_minute",
        "dialect",
        "server_tokenizer",
        "require_schema",
        "probe",
    }
)
_POLICY_KEYS = (
    "timeout",
    "max_attempts",
    "backoff",
    "max_backoff",
    "hedge_after",
    "hedge_percentile",
    "queue_timeout",
)
_BREAKER_KEYS = ("failure_rate", "window", "min_calls", "cooldown")
_AGENT_KEYS = frozenset(
    {"providers", "stream", "cache", "cache_ttl", "temperature", *_POLICY_KEYS}
    | {f"breaker_{key}" for key in _BREAKER_KEYS}
)


@dataclass(frozen=True, slots=True)
class AgentLLMConfig:
    providers: list[Provider]
    policy: RetryPolicy
    breaker: BreakerPolicy
    stream: bool
    cache_ttl: float | None  # None: no response cache
    temperature: float = 0.0
    # Per provider name: probe it when the agent starts, and refuse to start if it does
    # not enforce the schema (False: rely on validation and re-asks).
    probe: dict[str, bool] = field(default_factory=dict)
    require_schema: dict[str, bool] = field(default_factory=dict)


def load_llm_config(path: Path, agent: str) -> AgentLLMConfig | None:
    """The configured model of `agent` in the TOML file at `path`; None if it has none.
    A file that cannot work raises `ConfigError` saying where and why."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", path=str(path)) from None
    section = (data.get("agents") or {}).get(agent)
    if section is None:
        return None
    _known(path, f"agents.{agent}", section, _AGENT_KEYS)
    stream = bool(section.get("stream", False))
    providers: list[Provider] = []
    probe: dict[str, bool] = {}
    require: dict[str, bool] = {}
    for name in section.get("providers") or []:
        spec = (data.get("providers") or {}).get(name)
        if spec is None:
            raise ConfigError(
                f"{path}: agent {agent!r} names provider {name!r}, which is not defined",
                path=str(path),
            )
        providers.append(_provider(name, spec, stream=stream, path=path))
        probe[name] = bool(spec.get("probe", True))
        require[name] = bool(spec.get("require_schema", True))
    if not providers:
        raise ConfigError(f"{path}: agent {agent!r} lists no providers", path=str(path))
    try:
        policy = RetryPolicy(**{k: section[k] for k in _POLICY_KEYS if k in section})
        breaker = BreakerPolicy(
            **{k: section[f"breaker_{k}"] for k in _BREAKER_KEYS if f"breaker_{k}" in section}
        )
    except TypeError as exc:
        raise ConfigError(f"{path}: [agents.{agent}]: {exc}", path=str(path)) from None
    cache_ttl = float(section.get("cache_ttl", 3600.0)) if section.get("cache", False) else None
    temperature = section.get("temperature", 0.0)
    number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not number or not 0 <= temperature <= 2:
        raise ConfigError(
            f"{path}: [agents.{agent}] temperature must be a number from 0 to 2, "
            f"not {temperature!r}",
            path=str(path),
        )
    return AgentLLMConfig(
        providers=providers,
        policy=policy,
        breaker=breaker,
        stream=stream,
        cache_ttl=cache_ttl,
        temperature=float(temperature),
        probe=probe,
        require_schema=require,
    )


def load_providers(path: Path) -> dict[str, OpenAICompatible]:
    """Every provider the LLM config file at `path` defines, by name."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such LLM config file", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", path=str(path)) from None
    specs = data.get("providers") or {}
    return {name: _provider(name, spec, stream=False, path=path) for name, spec in specs.items()}


def _known(path: Path, where: str, section: dict[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(
            f"{path}: [{where}] has unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}",
            path=str(path),
        )


def _provider(name: str, spec: dict[str, Any], *, stream: bool, path: Path) -> OpenAICompatible:
    _known(path, f"providers.{name}", spec, _PROVIDER_KEYS)
    kind = spec.get("kind", "openai")
    if kind != "openai":
        raise ConfigError(
            f"{path}: provider {name!r} has kind {kind!r}; supported: openai "
            "(choose how structured output is asked for with `dialect`)",
            path=str(path),
        )
    missing = [k for k in ("base_url", "model") if k not in spec]
    if missing:
        raise ConfigError(f"{path}: provider {name!r} needs {', '.join(missing)}", path=str(path))
    dialect = spec.get("dialect", "openai")
    if dialect not in DIALECTS:
        choices = "; ".join(f"{k}: {v}" for k, v in DIALECTS.items())
        raise ConfigError(
            f"{path}: provider {name!r} has dialect {dialect!r}; choose one of: {choices}",
            path=str(path),
        )
    key_env = spec.get("api_key_env")
    price = spec.get("price")
    limits = ProviderLimits(
        **{
            k: spec[k]
            for k in ("max_concurrency", "requests_per_minute", "tokens_per_minute")
            if k in spec
        }
    )
    return OpenAICompatible(
        limits=limits,
        name=name,
        base_url=os.path.expandvars(spec["base_url"]),
        model=spec["model"],
        api_key=os.environ.get(key_env) if key_env else None,
        price=Price(**price) if price else None,
        stream=stream,
        dialect=dialect,
        server_tokenizer=bool(spec.get("server_tokenizer", False)),
    )
