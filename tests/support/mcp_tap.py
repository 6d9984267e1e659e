"""Run an MCP stdio server and note every `tools/call` it is sent: a wire tap, so that
a test counts the calls that really reached the server (tests/integration/test_mcp.py).

    python -m tests.support.mcp_tap TAPFILE COMMAND ARGS...

Lines from stdin go to the server unchanged; each request whose method is `tools/call`
is also appended to TAPFILE (one JSON line, flushed) before it is passed on. The
server's stdout and stderr are this process's."""

from __future__ import annotations

import json
import subprocess
import sys


def main() -> int:
    tap, command = sys.argv[1], sys.argv[2:]
    server = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert server.stdin is not None
    with open(tap, "a", encoding="utf-8") as noted:
        for line in sys.stdin.buffer:
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict) and message.get("method") == "tools/call":
                noted.write(json.dumps(message.get("params")) + "\n")
                noted.flush()
            server.stdin.write(line)
            server.stdin.flush()
    server.stdin.close()
    return server.wait()


if __name__ == "__main__":
    raise SystemExit(main())
