"""Settings have one source (`RigConfig.from_env`): each is parsed once, with its type,
and a bad value is a `ConfigError` naming the variable; a deployment rule lives with the
deployment (`check_cluster_size`), not in the command line."""

from __future__ import annotations

import pytest

from actors import RigConfig
from actors.deploy.up import UpConfigError, check_cluster_size
from actors.runtime.settings import SETTINGS, reference
from protocols import ConfigError
from scripts.docs import shown


def test_the_gateway_s_address_and_the_retention_are_read_once_with_their_types(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RIG_GATEWAY_HOST", "0.0.0.0")
    monkeypatch.setenv("RIG_GATEWAY_PORT", "9090")
    monkeypatch.setenv("RIG_RETENTION", "2h")
    config = RigConfig.from_env()
    assert (config.gateway_host, config.gateway_port, config.retention) == (
        "0.0.0.0",
        9090,
        7200.0,
    )
    for name, value, says in (
        ("RIG_GATEWAY_PORT", "http", "RIG_GATEWAY_PORT must be a number, not 'http'"),
        ("RIG_GATEWAY_PORT", "70000", "RIG_GATEWAY_PORT must be between 0 and 65535"),
        ("RIG_RETENTION", "soon", "RIG_RETENTION: 'soon' is not a duration"),
    ):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=says):
            RigConfig.from_env()
        monkeypatch.delenv(name)


def test_a_cluster_has_three_or_five_servers() -> None:
    assert [check_cluster_size(n) for n in (3, 5)] == [3, 5]
    for servers in (1, 2, 4, 7):
        with pytest.raises(UpConfigError, match=f"3 or 5 servers .*not {servers}"):
            check_cluster_size(servers)


def test_every_variable_is_typed_and_a_bad_one_is_named() -> None:
    """Read from a mapping, not the process's environment: each kind of value, and the
    sentence a user gets for each kind of mistake."""
    config = RigConfig.from_env(
        {
            "RIG_LOG_LEVEL": "DEBUG",
            "RIG_LOG_FORMAT": "json",
            "RIG_UVLOOP": "0",
            "RIG_ALLOW_SECOND_LEDGER": "yes",
            "RIG_WEBHOOK_ATTEMPTS": "3",
            "RIG_GATEWAY_KEYS": "/etc/rig/keys",
            "RIG_METRICS_PORT": "0",
            "RIG_HOME": "/var/rig",
        }
    )
    assert (config.log_level, config.log_format, config.uvloop) == ("debug", "json", False)
    assert (config.allow_second_ledger, config.webhook_attempts) == (True, 3)
    assert (str(config.keys_file), config.metrics_port) == ("/etc/rig/keys", 0)
    assert "RIG_GATEWAY_KEYS" in config.given and "RIG_PREFIX" not in config.given
    assert str(RigConfig.from_env({"RIG_HOME": "/var/rig"}).keys_file) == "/var/rig/gateway-keys"
    for name, value, says in (
        ("RIG_LOG_LEVEL", "loud", "RIG_LOG_LEVEL must be one of debug, info"),
        ("RIG_UVLOOP", "maybe", "RIG_UVLOOP must be 1 or 0, not 'maybe'"),
        ("RIG_CONCURRENCY", "2.5", "RIG_CONCURRENCY must be a whole number, not 2.5"),
        ("RIG_MAX_DELIVER", "1", "RIG_MAX_DELIVER must be between 2 and 10000, not 1"),
        ("RIG_LEDGER", "shared", "RIG_LEDGER must be one of local, cluster, not 'shared'"),
    ):
        with pytest.raises(ConfigError, match=says):
            RigConfig.from_env({name: value})


def test_the_configuration_reference_is_the_settings_table() -> None:
    """docs/reference/configuration.md shows every variable `SETTINGS` declares, as
    `python -m actors.runtime.settings` prints it (no table that drifts)."""
    assert shown("docs/reference/configuration.md", "rig settings") == reference()
    assert len(SETTINGS) == len({setting.name for setting in SETTINGS}) >= 40
