"""A free port on loopback, for a server that binds it a moment later."""

from __future__ import annotations

import random
import socket

# Below every OS's ephemeral range (Linux starts at 32768, BSD, macOS and Windows at
# 49152): the local end of an outgoing connection is never given a port from here, so
# a port found free stays free until its server binds it (unless another picks it too).
_QUIET = range(20000, 32768)
_TRIES = 50
_CHOICE = random.SystemRandom()  # not the shared generator, which a test may have seeded


def free_port() -> int:
    """A port free on loopback now (for a server that binds it a moment later), taken
    at random from below the ephemeral range: a busy test machine opens thousands of
    connections, and one of them could take a port the OS handed out between our check
    and the server's bind."""
    for port in _CHOICE.sample(_QUIET, _TRIES):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # all taken: let the OS choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
