"""An MCP server's tools behind Rig's ledger: `McpTools`.

    from actors.tools.mcp import McpTools, stdio

    class FileTools(McpTools):
        name = "file-tools"
        server = stdio("mcp-server-filesystem", "/srv/reports")

The executor starts the server (a child process speaking MCP on its stdin and stdout, or
a Streamable HTTP endpoint: `http(url, headers=...)`), lists its tools, and serves each
as a Rig tool of the same name (made a subject token: `[A-Za-z0-9_-]`): each call's
arguments are checked against the tool's `inputSchema` before the server sees them
(`invalid_args`), then the call goes through the idempotency ledger like any tool's. A
result's structured content, else its text, is the tool's result; a result the server
marks `isError` is the tool's failure; a server that cannot be reached before a call is
an outage (the call waits, unclaimed), and one lost during a call is a call that may
have acted (`unknown`, for a side-effecting tool).

Side effects are declared, not guessed: a tool the server marks `readOnlyHint` runs
without the ledger's at-most-once (it may run again), every other tool with it; a tool
marked `openWorldHint` has untrusted output (`rig graph --lint`). `overrides` changes a
tool's behaviour (`McpTool(side_effects=..., timeout=..., reconcile=...)`), `allow`
limits the tools served (the others are never offered). `rig mcp ls` shows what a
server offers and how Rig classifies each tool.

Needs the `mcp` extra (`pip install 'rig[mcp]'`): the official MCP Python SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import fastjsonschema
import pydantic

from actors.tools.executor import ToolExecutor, ToolSpec, _Tool, lease_of
from protocols import (
    ConfigError,
    Graph,
    Names,
    NonRetryableError,
    RetryableError,
    ToolEntry,
    _permissions,
)
from protocols._permissions import Role

if TYPE_CHECKING:
    from mcp import Client

# How long a server may take to start and answer `initialize` and `tools/list`.
_CONNECT_S = 30.0


@dataclass(frozen=True)
class McpServer:
    """Where an MCP server is: a command to run (stdio) or a URL (Streamable HTTP)."""

    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.url is not None:
            return self.url
        return " ".join([self.command or "", *self.args])


def stdio(command: str, *args: str, env: dict[str, str] | None = None) -> McpServer:
    """A server Rig runs as a child process, talking MCP on its stdin and stdout (its
    stderr goes to the executor's). `$VAR` and `${VAR}` in the command and its arguments
    are the environment's when the server starts (`${RIG_HOME}/reports`)."""
    return McpServer(command=command, args=tuple(args), env=env)


def http(url: str, headers: dict[str, str] | None = None) -> McpServer:
    """A server reached over Streamable HTTP at `url` (with `headers` on each request)."""
    return McpServer(url=url, headers=dict(headers or {}))


@dataclass(frozen=True)
class McpTool:
    """What an executor class says of one of its server's tools, over the server's own
    annotations (None: as the annotations say)."""

    side_effects: bool | None = None
    timeout: float | None = None
    lease: float | None = None
    reconcile: str | None = None
    key: tuple[str, ...] | None = None
    untrusted_output: bool | None = None


@dataclass(frozen=True)
class Listed:
    """A tool as the server lists it, and how Rig serves it."""

    rig_name: str  # the Rig tool: the MCP name made a subject token
    mcp_name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool | None
    destructive: bool | None
    idempotent: bool | None
    open_world: bool | None
    spec: ToolSpec


class McpToolError(Exception):
    """The server answered the call with `isError`: the tool's own failure."""


class McpTools(ToolExecutor):
    """The tools of one MCP server, each served as a Rig tool (see the module's text).

    Subclass it with `name` and `server`; `allow` (MCP tool names) limits what is
    served, `overrides` (MCP tool name -> `McpTool`) changes a tool's defaults,
    `timeout` is every tool's unless overridden.
    """

    server: ClassVar[McpServer]
    allow: ClassVar[tuple[str, ...] | None] = None
    overrides: ClassVar[dict[str, McpTool]] = {}
    timeout: ClassVar[float] = 60.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client: Client | None = None
        self._holder: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._connecting = asyncio.Lock()
        self.listed: dict[str, Listed] = {}

    # --- what the server offers --------------------------------------------------------

    @classmethod
    def classify(cls, tools: list[Any]) -> dict[str, Listed]:
        """The server's tools (`mcp.types.Tool`) that this class serves, by Rig name."""
        found: dict[str, Listed] = {}
        for tool in tools:
            if cls.allow is not None and tool.name not in cls.allow:
                continue
            hints = tool.annotations
            read_only = getattr(hints, "read_only_hint", None)
            open_world = getattr(hints, "open_world_hint", None)
            own = cls.overrides.get(tool.name, McpTool())
            side_effects = own.side_effects if own.side_effects is not None else not read_only
            timeout = own.timeout if own.timeout is not None else cls.timeout
            rig_name = _token(tool.name)
            spec = ToolSpec(
                name=rig_name,
                side_effects=side_effects,
                timeout=timeout,
                lease=lease_of(timeout, own.lease),
                reconcile=own.reconcile,
                key_fields=own.key,
                untrusted_output=(
                    own.untrusted_output if own.untrusted_output is not None else bool(open_world)
                ),
            )
            found[rig_name] = Listed(
                rig_name=rig_name,
                mcp_name=tool.name,
                description=tool.description or "",
                input_schema=dict(tool.input_schema or {"type": "object"}),
                read_only=read_only,
                destructive=getattr(hints, "destructive_hint", None),
                idempotent=getattr(hints, "idempotent_hint", None),
                open_world=open_world,
                spec=spec,
            )
        missing = sorted(set(cls.allow or ()) - {t.mcp_name for t in found.values()})
        if missing:
            raise ConfigError(
                f"{cls.__qualname__} allows tools {missing} that the server ({cls.server}) "
                "does not offer (`rig mcp ls` lists what it does)"
            )
        return found

    @classmethod
    def list_tools(cls) -> dict[str, Listed]:
        """Start the server, list its tools, stop it: what this class would serve. A
        blocking call (its own event loop in a thread): for `rig up`'s grants and `rig
        mcp ls`, before any process runs."""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["tools"] = asyncio.run(_listed_once(cls.server))
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=run, name=f"mcp-list-{cls.__name__}")
        thread.start()
        thread.join()
        if "error" in box:
            raise ConfigError(
                f"{cls.__qualname__}: could not list the tools of MCP server {cls.server}: "
                f"{_reason(box['error'])}"
            ) from None
        return cls.classify(box["tools"])

    @classmethod
    def role(cls, names: Names, graphs: list[Graph]) -> Role:
        """The calls and reports of the tools the server lists now (asked when the
        deployment's users are made: a tool it adds later needs them made again)."""
        listed = cls.list_tools()
        verifiers = {
            edge.verifier
            for graph in graphs
            for state in graph.states.values()
            for edge in state.edges
            if edge.verifier is not None and any(edge.offers(t, cls.name) for t in listed)
        }
        return _permissions.tools(names, cls.role_name(), listed, verifiers, executor=cls.name)

    # --- the process ----------------------------------------------------------------

    def catalog(self) -> list[ToolEntry]:
        """What the server lists, as it describes it (`RIG_TOOLS`)."""
        return entries(self.name, self.listed)

    async def on_start(self) -> None:
        await self._connect()
        assert self._client is not None
        self.listed = self.classify((await self._client.list_tools()).tools)
        # This process's tools: the server's, as listed now (the class has none of its own).
        self.tools = {  # type: ignore[misc]
            name: _Tool(listed.spec, _caller(listed.mcp_name), _args_of(listed))
            for name, listed in self.listed.items()
        }
        self.log.info("mcp.tools", server=str(self.server), tools=sorted(self.tools))
        await super().on_start()

    async def on_stop(self) -> None:
        await super().on_stop()
        self._closing.set()
        if self._holder is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._holder, 10)

    async def execute(self, call: Any) -> Any:
        """A call, once the server is reachable: a server that cannot be reached is an
        outage before anything is claimed (the call is asked again later)."""
        try:
            await self._connect()
        except Exception as exc:
            raise RetryableError(
                f"MCP server {self.server} cannot be reached: {_reason(exc)}", delay=2.0
            ) from exc
        return await super().execute(call)

    async def call_mcp(self, tool: str, arguments: dict[str, Any]) -> Any:
        """One `tools/call`: the structured result, else the text, else the content."""
        client = self._client
        if client is None:
            raise RetryableError(f"MCP server {self.server} is not connected", delay=1.0)
        try:
            result = await client.call_tool(tool, arguments)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the session broke: the call may have acted
            self._client = None
            raise RetryableError(
                f"MCP server {self.server} was lost during {tool}: {_reason(exc)}", delay=1.0
            ) from exc
        if getattr(result, "is_error", False):
            raise McpToolError(_text(result) or f"{tool} failed")
        structured = getattr(result, "structured_content", None)
        if structured is not None:
            return structured
        blocks = list(getattr(result, "content", None) or [])
        if all(getattr(block, "type", "") == "text" for block in blocks):
            return {"text": "\n".join(block.text for block in blocks)}
        return {"content": [block.model_dump(mode="json") for block in blocks]}

    async def _connect(self) -> None:
        """Open the session (start the server) if it is not open: one at a time."""
        if self._client is not None and self._holder is not None and not self._holder.done():
            return
        async with self._connecting:
            if self._client is not None and self._holder is not None and not self._holder.done():
                return
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            self._holder = asyncio.create_task(self._hold(ready))
            self._client = await asyncio.wait_for(ready, _CONNECT_S)

    async def _hold(self, ready: asyncio.Future[Client]) -> None:
        """Keep one session open (its context lives in this task) until the executor
        stops or the session breaks; the next call opens another (a new server)."""
        try:
            async with _session(self.server) as client:
                ready.set_result(client)
                self.log.info("mcp.connected", server=str(self.server))
                await self._closing.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                self.log.warning("mcp.lost", server=str(self.server), error=_reason(exc))
        finally:
            self._client = None


def entries(executor: str, listed: dict[str, Listed]) -> list[ToolEntry]:
    """An MCP executor's catalog entries: its server's tools as Rig serves them."""
    return [
        ToolEntry(
            executor=executor,
            tool=name,
            description=tool.description,
            input_schema=tool.input_schema,
            side_effects=tool.spec.side_effects,
            untrusted_output=tool.spec.untrusted_output,
        )
        for name, tool in listed.items()
    ]


def _caller(mcp_name: str) -> Callable[..., Any]:
    """The method a Rig tool runs: the MCP call, its arguments as validated."""

    async def call(executor: McpTools, **arguments: Any) -> Any:
        try:
            return await executor.call_mcp(mcp_name, arguments)
        except McpToolError as exc:
            raise NonRetryableError(str(exc), tool=mcp_name) from None

    return call


class _SchemaArgs(pydantic.BaseModel):
    """A tool's arguments, checked against its JSON schema (`schema_check`)."""

    model_config = pydantic.ConfigDict(extra="allow", allow_inf_nan=False)
    schema_check: ClassVar[Callable[[Any], Any]]

    @pydantic.model_validator(mode="before")
    @classmethod
    def _fits(cls, data: Any) -> Any:
        try:
            cls.schema_check(data)
        except fastjsonschema.JsonSchemaException as exc:
            raise ValueError(str(getattr(exc, "message", exc))) from None
        return data


def _args_of(listed: Listed) -> type[pydantic.BaseModel]:
    check = fastjsonschema.compile(listed.input_schema)
    model: type[pydantic.BaseModel] = type(
        f"{listed.rig_name}_args", (_SchemaArgs,), {"schema_check": staticmethod(check)}
    )
    return model


async def _listed_once(server: McpServer) -> list[Any]:
    async with asyncio.timeout(_CONNECT_S), _session(server) as client:
        return list((await client.list_tools()).tools)


@contextlib.asynccontextmanager
async def _session(server: McpServer) -> AsyncIterator[Client]:
    """An open MCP session with `server` (and the HTTP client it needs, closed after)."""
    sdk = _sdk()
    async with contextlib.AsyncExitStack() as stack:
        target: Any
        if server.url is not None and server.headers:
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            http_client = create_mcp_http_client(headers=server.headers)
            await stack.enter_async_context(http_client)
            target = streamable_http_client(server.url, http_client=http_client)
        elif server.url is not None:
            target = server.url
        else:
            assert server.command is not None
            target = sdk.StdioServerParameters(
                command=os.path.expandvars(server.command),
                args=[os.path.expandvars(arg) for arg in server.args],
                env=server.env,
            )
        client = await stack.enter_async_context(sdk.Client(target, read_timeout_seconds=None))
        yield client


def _sdk() -> Any:
    """The MCP SDK, or a `ConfigError` saying how to install it."""
    try:
        import mcp
    except ModuleNotFoundError:
        raise ConfigError(
            "MCP servers need the MCP SDK, which is not installed: pip install 'rig[mcp]'"
        ) from None
    return mcp


def _text(result: Any) -> str:
    return "\n".join(
        getattr(block, "text", "") for block in getattr(result, "content", None) or []
    ).strip()


def _token(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "_"


def _reason(exc: BaseException) -> str:
    """The innermost message of an error an anyio task group may have wrapped."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def describe(listed: dict[str, Listed]) -> list[dict[str, Any]]:
    """The tools as `rig mcp ls --json` prints them."""
    return [
        {
            "tool": item.rig_name,
            "mcp_name": item.mcp_name,
            "read_only": item.read_only,
            "destructive": item.destructive,
            "idempotent": item.idempotent,
            "open_world": item.open_world,
            "side_effects": item.spec.side_effects,
            "ledger": "at most once" if item.spec.side_effects else "may run again",
            "arguments": sorted((item.input_schema.get("properties") or {}).keys()),
            "description": item.description,
        }
        for item in listed.values()
    ]


__all__ = ["McpServer", "McpTool", "McpTools", "describe", "http", "stdio"]
