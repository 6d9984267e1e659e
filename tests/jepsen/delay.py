"""Hold each packet of an NFQUEUE queue for a while, then let it through: the latency
fault (this kernel has no netem). Run inside a host's namespace by the nemesis, beside
an iptables rule that queues the link's packets (`-j NFQUEUE --queue-num N
--queue-bypass`: packets pass untouched when no delayer listens).

    python -m tests.jepsen.delay QUEUE DELAY_S [JITTER_S]

It speaks nfnetlink_queue itself (a socket and a few structs): bind the queue, ask for
the packets' metadata only, and answer each with ACCEPT `DELAY_S` (+- `JITTER_S`,
which reorders packets as a real network does) after it came.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import sys

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQNL_CFG_CMD_BIND, NFQNL_COPY_META = 1, 1
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(kind: int, queue: int, *attrs: bytes) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attrs)
    header = struct.pack(
        "=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, NLM_F_REQUEST, 0, 0
    )
    return header + body


def packet_ids(data: bytes) -> list[int]:
    """The ids of the queued packets in one read from the socket."""
    found, at = [], 0
    while at + 16 <= len(data):
        length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, at)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            a = at + 20  # past the netlink and nfgen headers
            while a + 4 <= at + length:
                size, attr = struct.unpack_from("=HH", data, a)
                if attr & 0x7FFF == NFQA_PACKET_HDR:
                    found.append(struct.unpack_from("!I", data, a + 4)[0])
                a += max((size + 3) & ~3, 4)
        elif kind == NLMSG_ERROR and struct.unpack_from("=i", data, at + 16)[0]:
            raise OSError(-struct.unpack_from("=i", data, at + 16)[0], "nfnetlink_queue refused")
        at += (length + 3) & ~3
    return found


async def serve(queue: int, delay: float, jitter: float) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    bind = struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0)
    sock.send(_message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_CMD, bind)))
    params = struct.pack("!IB", 0, NFQNL_COPY_META)
    sock.send(_message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_PARAMS, params)))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    rng = random.Random(queue)

    def accept(packet: int) -> None:
        verdict = struct.pack("!II", NF_ACCEPT, packet)
        sock.send(_message(NFQNL_MSG_VERDICT, queue, _attr(NFQA_VERDICT_HDR, verdict)))

    def readable() -> None:
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            for packet in packet_ids(data):
                hold = max(delay + rng.uniform(-jitter, jitter), 0.0)
                loop.call_later(hold, accept, packet)

    loop.add_reader(sock, readable)
    print(f"delaying queue {queue} by {delay} s (+-{jitter})", flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    queue, delay = int(sys.argv[1]), float(sys.argv[2])
    jitter = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    asyncio.run(serve(queue, delay, jitter))
