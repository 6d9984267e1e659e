"""Rig's agents over A2A 1.0 at the gateway's `/a2a/{agent}`, driven by the official A2A
Python client (`a2a-sdk`), and by plain HTTP where a client would misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from a2a.client import Client, ClientConfig, ClientFactory
from a2a.types import (
    AuthenticationInfo,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import (
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from aiohttp import web
from google.protobuf.json_format import MessageToDict, Parse
from google.protobuf.struct_pb2 import Value

from actors.gateway.webhooks import new_secret
from actors.testing import Deployment
from tests.conftest import REFUND, ROOT
from tests.integration.test_cli import rig_cli
from tests.integration.test_gateway import start_gateway
from tests.integration.test_webhooks import Receiver, serve
from tests.support.family import FAMILY

pytestmark = pytest.mark.integration

QUESTION = {"question": "why is the sky blue"}
ANSWER = {"text": "the researcher says researched: why is the sky blue"}


@contextlib.asynccontextmanager
async def a2a_client(base: str, agent: str, key: str, *, streaming: bool) -> AsyncIterator[Client]:
    """The official client for one agent, from its card, with the gateway's API key."""
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
    config = ClientConfig(streaming=streaming, httpx_client=http)
    client = await ClientFactory(config).create_from_url(f"{base}/a2a/{agent}")
    try:
        yield client
    finally:
        await client.close()
        await http.aclose()


def message(data: dict[str, Any] | None = None, *, text: str = "", **ids: str) -> Message:
    found = Message(message_id=ids.pop("message_id", uuid.uuid4().hex), role=Role.ROLE_USER, **ids)
    if data is not None:
        part = Part()
        part.data.CopyFrom(_value(data))
        found.parts.append(part)
    if text:
        found.parts.append(Part(text=text))
    return found


def _value(data: dict[str, Any]) -> Value:
    value = Value()
    value.struct_value.update(data)
    return value


async def events(client: Client, request: SendMessageRequest) -> list[StreamResponse]:
    return [event async for event in client.send_message(request)]


async def test_the_card_says_what_an_agent_takes_and_a_message_gets_a_completed_task(
    rig: Deployment, api_key: str, http: aiohttp.ClientSession
) -> None:
    await rig.spawn(*FAMILY)
    base, _ = await start_gateway(rig)
    async with http.get(f"{base}/a2a") as listing:  # no key needed: the cards are public
        assert listing.status == 200
        cards = {a["name"]: a["card"] for a in (await listing.json())["agents"]}
    assert cards["asker"] == f"{base}/a2a/asker/.well-known/agent-card.json"
    code, out, err = await rig_cli(rig, "agents", "--a2a", base, "--json")  # the same urls
    assert code == 0 and {a["name"]: a["card"] for a in json.loads(out)} == cards, err
    async with http.get(cards["asker"]) as found:
        card = await found.json()
    [interface] = card["supportedInterfaces"]
    assert interface == {
        "url": f"{base}/a2a/asker",
        "protocolBinding": "JSONRPC",
        "protocolVersion": "1.0",
    }
    [schema] = card["capabilities"]["extensions"]
    assert schema["params"]["inputSchema"]["required"] == ["question"]
    assert "rig" in card["securitySchemes"]

    async with a2a_client(base, "asker", api_key, streaming=False) as client:
        [reply] = await events(client, SendMessageRequest(message=message(QUESTION)))
        task = reply.task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        output = next(a for a in task.artifacts if a.artifact_id == "output")
        assert MessageToDict(output.parts[0].data) == ANSWER
        assert output.parts[1].text == ANSWER["text"]
        info = await rig.client.status(task.id)
        assert info.status == "succeeded" and task.context_id == info.labels["a2a.context"]
        again = await client.get_task(GetTaskRequest(id=task.id))
        assert again.status.state == TaskState.TASK_STATE_COMPLETED
        assert again.context_id == task.context_id
        # Text, for an agent whose input is one string; the context is kept.
        [reply] = await events(
            client,
            SendMessageRequest(message=message(text="why is the sky blue", context_id="ctx-1")),
        )
        assert reply.task.status.state == TaskState.TASK_STATE_COMPLETED
        assert reply.task.context_id == "ctx-1"
        # An input that does not fit the agent: the task is rejected, saying why.
        [reply] = await events(client, SendMessageRequest(message=message({"words": 3})))
        assert reply.task.status.state == TaskState.TASK_STATE_REJECTED
        assert "input schema" in reply.task.status.message.parts[0].text
        with pytest.raises(TaskNotFoundError, match="no task"):
            await client.get_task(GetTaskRequest(id=reply.task.id))


async def test_a_task_streams_to_its_end_and_a_message_sent_again_is_the_same_task(
    rig: Deployment, api_key: str
) -> None:
    await rig.spawn(*FAMILY)
    base, _ = await start_gateway(rig)
    async with a2a_client(base, "asker", api_key, streaming=True) as client:
        sent = message(QUESTION, message_id="m-stream-1")
        stream = await events(client, SendMessageRequest(message=sent))
        first, *rest = stream
        task_id = first.task.id
        journal = await rig.client.journal(task_id)
        # The task, then a status update per journal event after it, in order.
        updates = [e.status_update for e in rest if e.HasField("status_update")]
        assert len(updates) >= 1 and all(u.task_id == task_id for u in updates)
        assert updates[-1].status.state == TaskState.TASK_STATE_COMPLETED
        said = f"step {journal[-1].step}: status succeeded"  # the journal's last event
        assert len(updates) <= len(journal) and updates[-1].status.message.parts[0].text == said
        [artifact] = [e.artifact_update.artifact for e in rest if e.HasField("artifact_update")][:1]
        assert MessageToDict(artifact.parts[0].data) == ANSWER
        # The same message again (a retry): the same task, not a second job.
        [again, *_] = await events(client, SendMessageRequest(message=sent))
        assert again.task.id == task_id
    jobs = await rig.client.jobs(agent="asker")
    assert [job.job_id for job in jobs] == [task_id]


async def test_a_task_waiting_for_a_person_is_input_required_and_a_message_continues_it(
    rig: Deployment, api_key: str
) -> None:
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    big = {"order_id": "A-1000", "amount": 600.0, "reason": "arrived damaged"}  # a person's
    async with a2a_client(base, "refund", api_key, streaming=False) as client:
        [reply] = await events(client, SendMessageRequest(message=message(big)))
        task = reply.task
        assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        assert "approve, close" in task.status.message.parts[0].text
        # Not an edge of the wait: a typed error, the task as it was.
        follow = message(text="maybe", task_id=task.id, context_id=task.context_id)
        with pytest.raises(InvalidParamsError, match="waits for a person to pick one of"):
            await events(client, SendMessageRequest(message=follow))
        follow = message(text="approve", task_id=task.id, context_id=task.context_id)
        [reply] = await events(client, SendMessageRequest(message=follow))
        assert reply.task.id == task.id
        assert reply.task.status.state == TaskState.TASK_STATE_COMPLETED
        # The follow-up sent again is answered, not a second resolve; a done task takes
        # no new message.
        [again] = await events(client, SendMessageRequest(message=follow))
        assert again.task.status.state == TaskState.TASK_STATE_COMPLETED
        late = message(text="approve", task_id=task.id, context_id=task.context_id)
        with pytest.raises(UnsupportedOperationError, match="TASK_STATE_COMPLETED"):
            await events(client, SendMessageRequest(message=late))
    info = await rig.client.status(task.id)
    assert info.status == "succeeded" and info.path[-1] == "done"


async def test_a_task_waiting_for_a_signal_takes_its_data_from_a_message(
    rig: Deployment, api_key: str
) -> None:
    await rig.spawn("actors:Supervisor", "tests.support.waiter:Waiter")
    base, _ = await start_gateway(rig)
    async with a2a_client(base, "waiter", api_key, streaming=True) as client:
        stream = await events(client, SendMessageRequest(message=message({"ticket": "T-9"})))
        task_id = stream[0].task.id
        last = _last_status(stream)
        assert last.state == TaskState.TASK_STATE_INPUT_REQUIRED
        assert "customer_reply" in last.message.parts[0].text
        follow = message({"text": "yes please"}, task_id=task_id)
        stream = await events(client, SendMessageRequest(message=follow))
        assert _last_status(stream).state == TaskState.TASK_STATE_COMPLETED
    info = await rig.client.status(task_id)
    assert info.result is not None and info.result["output"] == {
        "text": "the customer said: yes please"
    }


async def test_a_task_is_canceled_and_a_stream_resumes_after_the_last_event_it_got(
    rig: Deployment, api_key: str, http: aiohttp.ClientSession
) -> None:
    await rig.spawn("actors:Supervisor", "tests.support.waiter:Waiter")
    base, _ = await start_gateway(rig)
    headers = {"Authorization": f"Bearer {api_key}", "A2A-Version": "1.0"}
    async with a2a_client(base, "waiter", api_key, streaming=True) as client:
        stream = await events(client, SendMessageRequest(message=message({"ticket": "T-1"})))
        task_id = stream[0].task.id
        # Resumed by raw SSE after the first event: every later event once, in order.
        body = {"jsonrpc": "2.0", "id": 1, "method": "SubscribeToTask", "params": {"id": task_id}}
        seen = await _sse(http, f"{base}/a2a/waiter", body, {**headers, "Last-Event-ID": "1"})
        journal = await rig.client.journal(task_id)
        assert [seq for seq, _ in seen] == [e.seq for e in journal if e.seq > 1]
        canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        with pytest.raises(TaskNotCancelableError, match="already ended"):
            await client.cancel_task(CancelTaskRequest(id=task_id))
        with pytest.raises(UnsupportedOperationError, match="already ended"):
            async for _ in client.subscribe(SubscribeToTaskRequest(id=task_id)):
                pass


async def test_bad_requests_get_the_protocol_s_typed_errors_and_the_gateway_serves_on(
    rig: Deployment, api_key: str, http: aiohttp.ClientSession
) -> None:
    await rig.spawn(*FAMILY)
    base, _ = await start_gateway(rig)
    headers = {"Authorization": f"Bearer {api_key}"}
    url = f"{base}/a2a/asker"

    async def post(body: Any, more: dict[str, str] | None = None) -> dict[str, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with http.post(url, data=data, headers={**headers, **(more or {})}) as r:
            assert r.status == 200
            answer: dict[str, Any] = await r.json()
            return answer

    def rpc(method: str, params: Any) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": "r1", "method": method, "params": params}

    send = rpc(
        "SendMessage",
        {"message": {"messageId": "x", "role": "ROLE_USER", "parts": [{"text": "hi"}]}},
    )
    for body, code in [
        (b"{not json", -32700),
        ({"jsonrpc": "1.0", "id": 1, "method": "GetTask"}, -32600),
        (rpc("message/send", {}), -32601),
        (rpc("GetTask", {"id": "nope"}), -32001),
        (rpc("GetTask", []), -32602),
        (rpc("SendMessage", {"message": {"messageId": "x"}}), -32602),
        (rpc("CancelTask", {}), -32602),
        (rpc("CreateTaskPushNotificationConfig", {"taskId": "t", "url": "https://x"}), -32001),
        (rpc("ListTasks", {}), -32004),
        (rpc("GetExtendedAgentCard", {}), -32007),
    ]:
        answer = await post(body)
        assert answer["error"]["code"] == code, (body, answer)
    answer = await post(send, {"A2A-Version": "0.3"})
    assert answer["error"]["code"] == -32009
    async with http.post(url, data=io.BytesIO(b"x" * (2 * 1024 * 1024)), headers=headers) as r:
        assert r.status == 413  # over the gateway's body limit: its problem document
    async with (
        aiohttp.ClientSession() as stranger,
        stranger.post(f"{base}/a2a/asker", data=json.dumps(send)) as r,
    ):
        assert r.status == 401  # the endpoint wants the key the card names
    answer = await post(send)  # the gateway serves on
    assert answer["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


def _last_status(stream: list[StreamResponse]) -> Any:
    """The task's status as the stream last said it (a task, or a status update)."""
    last = stream[-1]
    return last.status_update.status if last.HasField("status_update") else last.task.status


async def _sse(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> list[tuple[int, dict[str, Any]]]:
    """The `(id, result)` of each SSE event of a streamed JSON-RPC answer, to its end."""
    return [event async for event in _sse_events(http, url, body, headers)]


async def _sse_events(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Each SSE event's `(id, result)` as it comes."""
    async with http.post(url, data=json.dumps(body), headers=headers) as response:
        assert response.status == 200
        seq, data = 0, ""
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("id: "):
                seq = int(line[4:])
            elif line.startswith("data: "):
                data = line[6:]
            elif not line and data:
                yield seq, json.loads(data)["result"]
                data = ""


async def test_the_official_javascript_client_sends_streams_cancels_and_continues(
    rig: Deployment, api_key: str, secret: str
) -> None:
    receiver = PushReceiver(secret)
    push_url, runner = await serve(receiver)
    await rig.spawn(
        *FAMILY,
        "tests.support.waiter:Waiter",
        *(target for target in REFUND if target != "actors:Supervisor"),
    )
    base, _ = await start_gateway(rig)
    sdk = ROOT / ".venv" / "npm" / "node_modules" / "@a2a-js" / "sdk"
    node = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "support" / "a2a_client.mjs"),
        str(sdk),
        base,
        api_key,
        push_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), rig.within(120))
    assert node.returncode == 0, err.decode()
    seen = json.loads(out)
    assert seen["card"] == "asker"
    assert seen["send"]["state"] == "COMPLETED" and seen["send"]["artifacts"] == [
        "output",
        "results",
    ]
    assert (await rig.client.status(seen["send"]["id"])).status == "succeeded"
    stream = seen["stream"]
    assert stream[0].startswith("task:") and stream[-1] == "status:COMPLETED"
    assert "artifact:output" in stream
    assert seen["cancel"]["state"] == "CANCELED"
    assert (await rig.client.status(seen["cancel"]["id"])).status == "cancelled"
    assert seen["continue"] == {"asked": "INPUT_REQUIRED", "approved": "COMPLETED", "same": True}
    assert seen["missing"] == "JsonRpcTaskNotFoundError"  # A2A's -32001, typed
    # The config it registered got the task's end, signed, with its token.
    assert seen["push"]["id"] == "js"
    await receiver.wait_for(1, rig.within(30))
    await runner.cleanup()
    [(webhook_id, body)] = receiver.bodies.items()
    assert webhook_id.endswith(".js") and receiver.forged == 0
    assert receiver.headers[webhook_id]["X-A2A-Notification-Token"] == "js-token"
    assert body["task"]["id"] == seen["push"]["taskId"]
    assert body["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_ten_concurrent_sends_of_one_message_are_one_task(
    rig: Deployment, api_key: str, http: aiohttp.ClientSession
) -> None:
    await rig.spawn(*FAMILY)
    base, _ = await start_gateway(rig)
    send = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "SendMessage",
        "params": {
            "message": {"messageId": "m-ten", "role": "ROLE_USER", "parts": [{"data": QUESTION}]},
            "configuration": {"returnImmediately": True},
        },
    }

    async def post() -> str:
        async with http.post(f"{base}/a2a/asker", data=json.dumps(send)) as r:
            task_id: str = (await r.json())["result"]["task"]["id"]
            return task_id

    ids = await asyncio.gather(*(post() for _ in range(10)))
    assert len(set(ids)) == 1
    assert [job.job_id for job in await rig.client.jobs(agent="asker")] == [ids[0]]
    assert (await rig.client.wait(ids[0], timeout=rig.within())).status == "succeeded"


async def test_a_stream_cut_by_a_killed_gateway_resumes_on_another_with_every_event_once(
    rig: Deployment, api_key: str, http: aiohttp.ClientSession
) -> None:
    """A task streamed through gateway one, which is SIGKILLed mid-task; the client
    resumes through gateway two from the last event it got: every event once, in order."""
    await rig.spawn("actors:Supervisor", "tests.support.gated:GatedAgent", *REFUND[2:])
    one, first = await start_gateway(rig)
    two, _ = await start_gateway(rig)
    thinking = await rig.nc.subscribe(f"{rig.names.prefix}.test.thinking")
    order = {"order_id": "A-1001", "amount": 25.0, "reason": "damaged"}
    send = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {
            "message": {"messageId": "m-gated", "role": "ROLE_USER", "parts": [{"data": order}]},
            "configuration": {"returnImmediately": True},
        },
    }
    async with http.post(f"{one}/a2a/gated", data=json.dumps(send)) as r:
        task_id = (await r.json())["result"]["task"]["id"]
    subscribe = {"jsonrpc": "2.0", "id": 2, "method": "SubscribeToTask", "params": {"id": task_id}}
    got: list[int] = []
    streaming = asyncio.Event()

    async def read(base: str, after: int | None) -> None:
        headers = {"Last-Event-ID": str(after)} if after is not None else {}
        async for seq, _ in _sse_events(http, f"{base}/a2a/gated", subscribe, headers):
            got.append(seq)
            streaming.set()

    reader = asyncio.create_task(read(one, None))
    await thinking.next_msg(timeout=rig.within(30))  # the job is mid-step, held at the gate
    await asyncio.wait_for(streaming.wait(), rig.within(30))  # and its stream is open
    first.kill()  # SIGKILL: no goodbye on the stream
    await first.wait()
    with contextlib.suppress(aiohttp.ClientError):
        await asyncio.wait_for(reader, rig.within(30))
    assert got, "gateway one sent the task before it died"
    await rig.nc.publish(f"{rig.names.prefix}.test.gate", b"go")
    await read(two, got[-1])
    journal = await rig.client.journal(task_id)
    assert journal[-1].data["status"] == "succeeded"
    snapshot, *updates = got
    # Each journal event once, in order; the last also carries the result's artifacts,
    # which share its id (a client resuming after it has them all).
    assert list(dict.fromkeys(updates)) == [e.seq for e in journal if e.seq > snapshot]
    assert [seq for seq in updates if updates.count(seq) > 1] in ([], [journal[-1].seq] * 2)


class PushReceiver(Receiver):
    """A push endpoint: verifies each POST's signature, keeps its body and headers."""

    def __init__(self, secret: str) -> None:
        super().__init__(secret)
        self.headers: dict[str, dict[str, str]] = {}
        self.arrived = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        answer = await super().handle(request)
        async with self.arrived:
            self.headers[request.headers["webhook-id"]] = dict(request.headers)
            self.arrived.notify_all()
        return answer

    async def wait_for(self, count: int, timeout: float) -> None:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.verified) >= count), timeout
            )


@pytest.fixture
def secret(rig: Deployment) -> str:
    """The gateway signs pushes with it; the receivers listen on loopback, which the
    operator allows."""
    value = new_secret()
    rig.extra_env |= {
        "RIG_WEBHOOK_SECRET": value,
        "RIG_WEBHOOK_ALLOW": "127.0.0.1",
        "RIG_WEBHOOK_BACKOFF_S": "0.05",  # a refused first attempt is tried again soon
    }
    return value


async def test_push_configs_get_each_status_signed_with_their_token(
    rig: Deployment, api_key: str, secret: str
) -> None:
    await rig.spawn(*REFUND)
    base, _ = await start_gateway(rig)
    receiver = PushReceiver(secret)
    url, runner = await serve(receiver)
    try:
        async with a2a_client(base, "refund", api_key, streaming=False) as client:
            big = {"order_id": "A-1000", "amount": 600.0, "reason": "arrived damaged"}
            config = TaskPushNotificationConfig(id="first", url=url, token="tok-1")
            request = SendMessageRequest(
                message=message(big),
                configuration=SendMessageConfiguration(task_push_notification_config=config),
            )
            [reply] = await events(client, request)
            task = reply.task
            assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
            # The wait for a person goes to the first, registered with the message (kept
            # before the job starts); a config gets the statuses delivered after it.
            await receiver.wait_for(1, rig.within(30))
            second = TaskPushNotificationConfig(
                task_id=task.id,
                id="second",
                url=url,
                token="tok-2",
                authentication=AuthenticationInfo(scheme="Bearer", credentials="s3cret"),
            )
            made = await client.create_task_push_notification_config(second)
            assert (made.id, made.task_id) == ("second", task.id)
            listed = await client.list_task_push_notification_configs(
                ListTaskPushNotificationConfigsRequest(task_id=task.id)
            )
            assert sorted(c.id for c in listed.configs) == ["first", "second"]
            got = await client.get_task_push_notification_config(
                GetTaskPushNotificationConfigRequest(task_id=task.id, id="first")
            )
            assert got.token == "tok-1"
            follow = message(text="approve", task_id=task.id, context_id=task.context_id)
            [reply] = await events(client, SendMessageRequest(message=follow))
            assert reply.task.status.state == TaskState.TASK_STATE_COMPLETED
            await receiver.wait_for(3, rig.within(30))  # the end, to both
            await client.delete_task_push_notification_config(
                DeleteTaskPushNotificationConfigRequest(task_id=task.id, id="second")
            )
            listed = await client.list_task_push_notification_configs(
                ListTaskPushNotificationConfigsRequest(task_id=task.id)
            )
            assert [c.id for c in listed.configs] == ["first"]
    finally:
        await runner.cleanup()
    assert receiver.forged == 0 and set(receiver.verified.values()) == {1}
    pushed = []
    for webhook_id, body in receiver.bodies.items():
        found = Parse(json.dumps(body), StreamResponse())  # the protocol's own shape
        headers = receiver.headers[webhook_id]
        status = found.task.status if found.HasField("task") else found.status_update.status
        pushed.append(
            (
                webhook_id.rsplit(".", 1)[1],
                headers["X-A2A-Notification-Token"],
                headers.get("Authorization"),
                TaskState.Name(status.state),
                [a.artifact_id for a in found.task.artifacts],
            )
        )
    assert sorted(pushed) == [
        ("first", "tok-1", None, "TASK_STATE_COMPLETED", ["results"]),
        ("first", "tok-1", None, "TASK_STATE_INPUT_REQUIRED", []),
        ("second", "tok-2", "Bearer s3cret", "TASK_STATE_COMPLETED", ["results"]),
    ]


async def test_the_tasks_of_a_context_are_turns_of_one_conversation(
    rig: Deployment, api_key: str
) -> None:
    await rig.spawn("actors:Supervisor", "tests.support.chat:Chatter")
    base, _ = await start_gateway(rig)
    async with a2a_client(base, "chatter", api_key, streaming=False) as client:
        said = []
        for text in ("my parcel came broken", "any news?"):
            sent = message({"text": text}, context_id="conv-x")
            [reply] = await events(client, SendMessageRequest(message=sent))
            assert reply.task.status.state == TaskState.TASK_STATE_COMPLETED
            output = next(a for a in reply.task.artifacts if a.artifact_id == "output")
            said.append(MessageToDict(output.parts[0].data))
    assert said[1]["seen"] == ["my parcel came broken"]  # the second turn saw the first
    info = await rig.client.status(reply.task.id)
    assert info.thread is not None
    assert [t.input["text"] for t in (await rig.client.thread(info.thread)).turns] == [
        "my parcel came broken",
        "any news?",
    ]
