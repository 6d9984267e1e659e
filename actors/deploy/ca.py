"""TLS for the server `rig up` starts: a local CA and a server certificate, made once.

`rig up --tls` keeps them in `$RIG_HOME/tls/` (`ca.pem`; `server.pem` and its key, 0600;
the CA's key, 0600, so that a certificate for another host can be made with it later)
and adds a `tls { ... }` block to the server's config; or it takes given files
(`--tls-cert`, `--tls-key`, and `--tls-ca` for what clients verify with). Every Rig
client verifies the server against `RIG_TLS_CA`, else `$RIG_HOME/tls/ca.pem` when it
exists: a client without the CA is refused by its own TLS check, never downgraded.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path

from actors.runtime.tls import TlsFiles, tls_dir
from protocols import ConfigError

VALID_DAYS = 825  # what browsers and most TLS stacks still accept for a leaf


def ensure_tls(home: Path) -> TlsFiles:
    """The local CA and a server certificate for this host (127.0.0.1, ::1, localhost
    and the host's name), made the first time and kept."""
    folder = tls_dir(home)
    files = TlsFiles(folder / "server.pem", folder / "server-key.pem", folder / "ca.pem")
    if files.cert.exists() and files.key.exists() and files.ca.exists():
        return files
    try:
        from cryptography import x509
    except ImportError:
        raise ConfigError(
            "rig up --tls makes its certificates with the `cryptography` package: "
            "pip install 'rig[server]'"
        ) from None
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"Rig local CA ({socket.gethostname()})")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    if host and host != "localhost":
        names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(host or "localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    private = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    _write(folder / "ca-key.pem", ca_key.private_bytes(pem, private, plain), private_file=True)
    _write(files.key, key.private_bytes(pem, private, plain), private_file=True)
    _write(files.cert, cert.public_bytes(pem), private_file=False)
    _write(files.ca, ca.public_bytes(pem), private_file=False)
    return files


def _write(path: Path, data: bytes, *, private_file: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private_file else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
