"""`rig up --tls`: the server requires TLS with a certificate from a local CA that
`rig up` makes; every Rig client verifies it, so one without the CA is refused."""

from __future__ import annotations

import json
import signal
import ssl
from pathlib import Path

import nats
import pytest

from actors import RigConfig
from actors.runtime.client import RigClient
from protocols import RigConnectionError
from tests.chaos.test_up import EXAMPLE, start_up

pytestmark = [pytest.mark.integration]


async def test_with_tls_a_client_without_the_ca_is_refused_and_with_it_all_runs(
    tmp_path: Path,
) -> None:
    up = await start_up(tmp_path, "--tls")
    try:
        made = await up.until("tls.on")
        home = Path(up.env["RIG_HOME"])
        assert made["ca"] == str(home / "tls" / "ca.pem")
        assert (home / "tls" / "server-key.pem").stat().st_mode & 0o077 == 0
        url = up.env["RIG_NATS_URL"] = (await up.until("server.started"))["url"]
        conf = (home / "nats-server.conf").read_text()
        assert '"cert_file"' in conf and "accounts" in conf  # TLS and users both
        await up.until("up.ready", timeout=120)

        # Without the CA: its TLS check refuses the server, whatever the credentials.
        stranger = RigConfig(
            nats_url=url,
            home=tmp_path / "elsewhere",
            creds=home / "creds" / "client.nk",
            connect_timeout=5.0,
        )
        with pytest.raises(RigConnectionError, match="not one this client trusts"):
            await RigClient.connect(stranger)
        with pytest.raises((ssl.SSLError, OSError, nats.errors.Error)):
            await nats.connect(
                url,
                nkeys_seed=str(home / "creds" / "client.nk"),
                allow_reconnect=False,
                connect_timeout=5,
            )

        # With it ($RIG_HOME/tls/ca.pem, found by itself): the refund example runs.
        code, out, err = await up.rig("submit", "refund", "--input", EXAMPLE, "--wait", "--json")
        assert code == 0, err
        assert json.loads(out)["status"] == "succeeded"
        code, out, err = await up.rig("jobs", "--json")
        assert code == 0 and len(json.loads(out)) == 1, err
    finally:
        up.proc.send_signal(signal.SIGTERM)
        await up.proc.wait()
    assert up.proc.returncode == 0


async def test_insecure_keeps_an_open_server_and_says_so(tmp_path: Path) -> None:
    """`rig up --insecure`: a warning, no users, no seeds; a client with no credentials
    at all runs the example (as every client could before identities)."""
    up = await start_up(tmp_path, "--insecure", "--no-gateway")
    try:
        warned = await up.until("security.off")
        assert "anyone who reaches its port" in warned["warning"]
        up.env["RIG_NATS_URL"] = (await up.until("server.started"))["url"]
        await up.until("up.ready", timeout=120)
        home = Path(up.env["RIG_HOME"])
        assert not (home / "creds").exists()
        assert "authorization" not in (home / "nats-server.conf").read_text()
        code, out, err = await up.rig("submit", "refund", "--input", EXAMPLE, "--wait", "--json")
        assert code == 0 and json.loads(out)["status"] == "succeeded", err
    finally:
        up.proc.send_signal(signal.SIGTERM)
        await up.proc.wait()
