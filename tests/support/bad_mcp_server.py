"""An MCP server over stdio that misbehaves on purpose, for tests/integration/test_mcp.py:
`ok` answers, `hang` never does, `garble` answers with a line that is not JSON.
Written by hand (JSON-RPC lines), since no real server misbehaves on demand."""

from __future__ import annotations

import json
import sys

TOOLS = [
    {
        "name": name,
        "description": what,
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": {"readOnlyHint": True},
    }
    for name, what in (("ok", "answers"), ("hang", "never answers"), ("garble", "answers garbage"))
]


def send(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        ident, method = message.get("id"), message.get("method")
        if ident is None:
            continue  # a notification
        params = message.get("params") or {}
        if method == "initialize":
            result = {
                "protocolVersion": params.get("protocolVersion"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "bad", "version": "1"},
            }
            send({"jsonrpc": "2.0", "id": ident, "result": result})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": ident, "result": {"tools": TOOLS}})
        elif method == "tools/call" and params.get("name") == "ok":
            content = [{"type": "text", "text": "fine"}]
            send({"jsonrpc": "2.0", "id": ident, "result": {"content": content}})
        elif method == "tools/call" and params.get("name") == "garble":
            sys.stdout.write("this is not JSON {\n")
            sys.stdout.flush()
        elif method == "tools/call":
            pass  # hang: never answer
        else:
            error = {"code": -32601, "message": f"no method {method}"}
            send({"jsonrpc": "2.0", "id": ident, "error": error})


if __name__ == "__main__":
    main()
