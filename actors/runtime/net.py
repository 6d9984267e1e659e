"""A free port on loopback, for a server that binds it a moment later."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port free on loopback now (for a server that binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
