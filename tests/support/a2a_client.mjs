// The official A2A JavaScript client (@a2a-js/sdk, npm) driving Rig's gateway, for
// tests/integration/test_a2a.py: node a2a_client.mjs SDK_DIR BASE_URL API_KEY PUSH_URL
// It fetches cards, sends, streams, cancels and continues tasks, registers a push
// notification config, and prints what it saw as one JSON object on stdout.
import { randomUUID } from "node:crypto";
import { pathToFileURL } from "node:url";

const [sdkDir, base, key, pushUrl] = process.argv.slice(2);
const sdk = await import(pathToFileURL(`${sdkDir}/dist/client/index.js`).href);
const { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory } = sdk;

const ROLE_USER = 1;
const STATES = {
  1: "SUBMITTED", 2: "WORKING", 3: "COMPLETED", 4: "FAILED", 5: "CANCELED",
  6: "INPUT_REQUIRED", 7: "REJECTED", 8: "AUTH_REQUIRED",
};

function authed(url, init = {}) {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Bearer ${key}`);
  return fetch(url, { ...init, headers });
}

async function clientOf(agent) {
  const options = ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
    transports: [new JsonRpcTransportFactory({ fetchImpl: authed })],
  });
  // The card's full url, as a card listing (GET /a2a) gives it.
  return new ClientFactory(options).createFromUrl(`${base}/a2a/${agent}/.well-known/agent-card.json`, "");
}

function message({ data, text, taskId, contextId }) {
  const parts = [];
  if (data !== undefined) parts.push({ content: { $case: "data", value: data } });
  if (text !== undefined) parts.push({ content: { $case: "text", value: text } });
  return {
    messageId: randomUUID(), role: ROLE_USER, parts, contextId: contextId ?? "",
    taskId: taskId ?? "", extensions: [], referenceTaskIds: [], metadata: undefined,
  };
}

function taskOf(result) {
  // A SendMessageResult is a task or a message, by the SDK's own shape.
  if (result?.payload?.$case === "task") return result.payload.value;
  if (result?.id !== undefined && result?.status !== undefined) return result;
  if (result?.task) return result.task;
  throw new Error(`not a task: ${JSON.stringify(result)}`);
}

const state = (task) => STATES[task.status.state] ?? String(task.status.state);
const seen = {};

const cardResponse = await fetch(`${base}/a2a/asker/.well-known/agent-card.json`);
seen.card = (await cardResponse.json()).name;

const asker = await clientOf("asker");
const done = taskOf(await asker.sendMessage({ message: message({ data: { question: "why" } }) }));
seen.send = { id: done.id, state: state(done), artifacts: done.artifacts.map((a) => a.artifactId) };

const streamed = [];
for await (const event of asker.sendMessageStream({ message: message({ text: "why not" }) })) {
  const payload = event.payload ?? {};
  if (payload.$case === "task") streamed.push(`task:${state(payload.value)}`);
  else if (payload.$case === "statusUpdate") streamed.push(`status:${state(payload.value)}`);
  else if (payload.$case === "artifactUpdate") streamed.push(`artifact:${payload.value.artifact.artifactId}`);
  else streamed.push(JSON.stringify(Object.keys(event)));
}
seen.stream = streamed;

const waiter = await clientOf("waiter");
const waiting = taskOf(await waiter.sendMessage({
  message: message({ data: { ticket: "T-js" } }),
  configuration: { acceptedOutputModes: [], returnImmediately: true },
}));
const canceled = await waiter.cancelTask({ id: waiting.id, tenant: "", metadata: undefined });
seen.cancel = { id: waiting.id, state: state(canceled) };

const refund = await clientOf("refund");
const big = { order_id: "A-1000", amount: 600, reason: "arrived damaged" };
const asked = taskOf(await refund.sendMessage({ message: message({ data: big }) }));
const made = await refund.createTaskPushNotificationConfig({
  tenant: "", taskId: asked.id, id: "js", url: pushUrl, token: "js-token", authentication: undefined,
});
seen.push = { id: made.id, taskId: made.taskId };
const approved = taskOf(await refund.sendMessage({
  message: message({ text: "approve", taskId: asked.id, contextId: asked.contextId }),
}));
seen.continue = { asked: state(asked), approved: state(approved), same: asked.id === approved.id };

try {
  await refund.getTask({ id: "no-such-task", tenant: "" });
  seen.missing = "found";
} catch (error) {
  seen.missing = error.constructor.name;
}
console.log(JSON.stringify(seen));
