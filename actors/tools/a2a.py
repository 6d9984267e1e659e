"""Remote A2A agents as Rig tools: `A2aAgents`.

    from actors.tools.a2a import A2aAgents, remote

    class Partners(A2aAgents):
        name = "partners"
        agents = {"partner_refund": remote("https://partner.example/a2a/refund",
                                           key="$PARTNER_KEY")}

Each entry is a tool (here `partner_refund`) that an edge calls like any other: its
arguments are the message's data part, its result the remote task's. A call is a tool
step through the ledger, with side effects: the message's id is the call's idempotency
key, so a redelivered call, or one repeated after its executor died mid-call (`unknown`,
then this class's reconcile), sends the same message again, which an A2A server takes
as the same task (Rig's gateway does): the remote task is created once. The call then
waits for the remote task, polling it (`GetTask`, backing off to `poll_max`), within the
tool's timeout and the job's deadline; a call that stops waiting (cancelled, out of
time) cancels the remote task.

- `TASK_STATE_COMPLETED`: the call succeeds with `{"task_id", "context_id", "state",
  "output", "text", "artifacts"}` (`output`: the data of its `output` artifact, else of
  its first data part).
- `TASK_STATE_INPUT_REQUIRED`: the call fails (`RemoteInputRequired`, with the remote's
  words): the edge's failure path decides, a person or a declared edge.
- `FAILED`, `CANCELED`, `REJECTED`: the call fails, saying which and why.
- unreachable: an outage, asked again (the same message: the same task).

Needs the `a2a` extra (`pip install 'rig[a2a]'`): the official A2A Python SDK's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pydantic

from actors.tools.executor import ToolExecutor, ToolSpec, _Tool, lease_of, tool_context
from protocols import ConfigError, NonRetryableError, RetryableError, check_token

if TYPE_CHECKING:
    from a2a.client import Client

_FINAL = {"TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"}
_SETTLED = _FINAL | {"TASK_STATE_COMPLETED", "TASK_STATE_INPUT_REQUIRED"}


@dataclass(frozen=True)
class Remote:
    """A remote A2A agent: its card's url (or the base its card is under; `$VAR` from the
    environment), the bearer key it wants (`$VAR` too), how long a task of it may take."""

    url: str
    key: str | None = None
    timeout: float = 600.0
    lease: float | None = None
    poll: float = 0.2
    poll_max: float = 5.0


def remote(
    url: str,
    *,
    key: str | None = None,
    timeout: float = 600.0,
    lease: float | None = None,
    poll: float = 0.2,
    poll_max: float = 5.0,
) -> Remote:
    """A remote A2A agent (see `Remote`)."""
    return Remote(url, key, timeout, lease, poll, poll_max)


class RemoteInputRequired(NonRetryableError):
    """The remote task asks for input: the edge's failure path decides (a person, or a
    declared edge)."""

    code = "input_required"


class _Input(pydantic.BaseModel):
    """A remote agent's input: any JSON object (the remote checks it against its own)."""

    model_config = pydantic.ConfigDict(extra="allow", allow_inf_nan=False)


class A2aAgents(ToolExecutor):
    """Remote A2A agents, each served as a Rig tool (see the module's text)."""

    agents: ClassVar[dict[str, Remote]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found = dict(cls.tools)
        for name, agent in cls.agents.items():
            check_token(name, what="tool name")
            spec = ToolSpec(
                name=name,
                side_effects=True,
                timeout=agent.timeout,
                lease=lease_of(agent.timeout, agent.lease),
                reconcile="_again",  # the same message again: the same remote task
            )
            found[name] = _Tool(spec, _caller(name), _Input)
        cls.tools = found

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clients: dict[str, tuple[Client, Any]] = {}

    async def on_stop(self) -> None:
        for client, http in self._clients.values():
            with contextlib.suppress(Exception):
                await client.close()
                await http.aclose()
        await super().on_stop()

    async def _again(self, **arguments: Any) -> Any:
        """Reconcile a call that may have sent its message: send it again (the same id:
        the same task at the remote) and wait for the task, as the call would have."""
        return await self.delegate(tool_context().tool, arguments)

    async def delegate(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Send `arguments` to remote agent `name` as the message of this call (its id the
        call's key), and wait for the task it starts."""
        from a2a.types import (
            CancelTaskRequest,
            GetTaskRequest,
            Message,
            Part,
            Role,
            SendMessageConfiguration,
            SendMessageRequest,
        )
        from a2a.utils.errors import A2AError, InternalError
        from google.protobuf.struct_pb2 import Value

        agent = self.agents[name]
        data = Value()
        data.struct_value.update(arguments)
        message = Message(
            message_id=f"rig-{tool_context().key}", role=Role.ROLE_USER, parts=[Part(data=data)]
        )
        request = SendMessageRequest(
            message=message, configuration=SendMessageConfiguration(return_immediately=True)
        )
        task = None
        try:
            client = await self._client(name)  # its card read once, then kept
            async for event in client.send_message(request):
                task = event.task if event.HasField("task") else task
            if task is None:
                raise NonRetryableError(f"remote agent {name!r} answered with no task")
            pause = agent.poll
            while _state(task) not in _SETTLED:
                await asyncio.sleep(pause)
                pause = min(pause * 1.5, agent.poll_max)
                task = await client.get_task(GetTaskRequest(id=task.id))
        except asyncio.CancelledError:
            if task is not None:  # the job stopped waiting: so does the remote
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        asyncio.wait_for(client.cancel_task(CancelTaskRequest(id=task.id)), 5.0)
                    )
            raise
        except (NonRetryableError, RetryableError, ConfigError):
            raise
        except A2AError as exc:  # the remote refused the request itself: asking again won't help
            if isinstance(exc, InternalError):  # ... unless it failed on its side
                raise RetryableError(f"remote agent {name!r}: {exc}") from exc
            raise NonRetryableError(
                f"remote agent {name!r} refused the message: {type(exc).__name__}: {exc}"
            ) from exc
        except Exception as exc:  # the network, the remote's errors: ask again
            self._clients.pop(name, None)
            raise RetryableError(f"remote agent {name!r}: {type(exc).__name__}: {exc}") from exc
        return _ended(name, task)

    async def _client(self, name: str) -> Client:
        if name not in self._clients:
            import httpx
            from a2a.client import ClientConfig, ClientFactory

            agent = self.agents[name]
            headers = {}
            if agent.key is not None:
                key = os.path.expandvars(agent.key)
                if key.startswith("$"):
                    raise ConfigError(f"remote agent {name!r}: {agent.key} is not set")
                headers["Authorization"] = f"Bearer {key}"
            http = httpx.AsyncClient(headers=headers, timeout=30.0)
            config = ClientConfig(streaming=False, httpx_client=http)
            url = os.path.expandvars(agent.url)  # `${PARTNER}/a2a/refund`
            base = url.rsplit("/.well-known/", 1)[0] if url.endswith(".json") else url
            client = await ClientFactory(config).create_from_url(base)
            self._clients[name] = (client, http)
        return self._clients[name][0]


def _caller(name: str) -> Any:
    async def call(executor: A2aAgents, **arguments: Any) -> Any:
        return await executor.delegate(name, arguments)

    return call


def _state(task: Any) -> str:
    from a2a.types import TaskState

    return str(TaskState.Name(task.status.state))


def _said(task: Any) -> str:
    return " ".join(part.text for part in task.status.message.parts if part.text)


def _ended(name: str, task: Any) -> dict[str, Any]:
    """The call's result for a remote task that ended or asks for input."""
    from google.protobuf.json_format import MessageToDict

    state = _state(task)
    if state == "TASK_STATE_INPUT_REQUIRED":
        raise RemoteInputRequired(
            f"remote agent {name!r} asks for input (task {task.id}): {_said(task)}",
            task_id=task.id,
        )
    if state in _FINAL:
        raise NonRetryableError(
            f"remote agent {name!r}: task {task.id} ended {state}: {_said(task)}", task_id=task.id
        )
    artifacts = [MessageToDict(artifact) for artifact in task.artifacts]
    data = [
        (artifact.artifact_id, MessageToDict(part)["data"])
        for artifact in task.artifacts
        for part in artifact.parts
        if part.HasField("data")
    ]
    output = next((d for a, d in data if a == "output"), data[0][1] if data else None)
    text = " ".join(p.text for a in task.artifacts for p in a.parts if p.text)
    return {
        "task_id": task.id,
        "context_id": task.context_id,
        "state": "completed",
        "output": output,
        "text": text,
        "artifacts": artifacts,
    }
