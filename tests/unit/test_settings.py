"""Settings have one source (`RigConfig.from_env`): each is parsed once, with its type,
and a bad value is a `ConfigError` naming the variable; a deployment rule lives with the
deployment (`check_cluster_size`), not in the command line."""

from __future__ import annotations

import pytest

from actors import RigConfig
from actors.deploy.up import UpConfigError, check_cluster_size
from protocols import ConfigError


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
