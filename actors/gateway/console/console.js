// Rig's console: plain JavaScript on the gateway's HTTP API (docs/reference/http-api.md) and its
// Server-Sent Events. Every page is a hash route: #/jobs, #/jobs/<id>, #/threads/<id>,
// #/inbox, #/agents, #/schedules.
// Text from jobs is always set as text, never parsed as markup.

import { drawGraph } from "./graph.js";

const KEY = "rig.console.key";
const WHO = "rig.console.who";
const POLL_MS = 2000;
// protocols.JobStatusName and TERMINAL_STATUSES (tests/integration/test_console.py checks).
const TERMINAL = new Set(["succeeded", "failed", "step_limit", "budget_exceeded", "deadline_exceeded", "cancelled"]);
const STATUSES = ["accepted", "running", "waiting_human", ...TERMINAL];
const main = document.getElementById("main");

// --- small helpers ----------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const json = (value) => JSON.stringify(value, null, 2);
const badge = (status) => h("span", { class: `status ${status}` }, status);
const jobLink = (id) => h("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "mono" }, id);

function ago(seconds) {
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleString();
}

function clock(seconds) {
  const d = new Date(seconds * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + `.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

function say(text, bad = false) {
  const where = document.getElementById("connection");
  where.textContent = text;
  where.classList.toggle("bad", bad);
}

// --- the API ----------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: headers({ Accept: "application/json" }) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (signal?.aborted) throw error;
    say("the gateway does not answer", true);
    throw new ApiError(0, { detail: `the gateway does not answer (${error.message})` });
  }
  const type = response.headers.get("Content-Type") ?? "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    login();
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  say("connected");
  return data;
}

// Server-Sent Events over fetch (EventSource cannot send the API key): each event to
// `onEvent({id, event, data})`; after a dropped connection it resumes by the last id.
// Ends when the server ends the stream (the job ended) or `signal` aborts.
async function events(path, onEvent, signal) {
  let last = null;
  while (!signal.aborted) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (last) extra["Last-Event-ID"] = last;
      const response = await fetch(path, { headers: headers(extra), signal });
      if (response.status === 401) { login(); return; }
      if (!response.ok) throw new ApiError(response.status, await response.json());
      say("connected");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const message = { id: null, event: "message", data: "" };
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "id") message.id = text;
            else if (field === "event") message.event = text;
            else if (field === "data") message.data += (message.data ? "\n" : "") + text;
          }
          if (message.id) last = message.id;
          if (message.data) onEvent(message);
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      say(`the event stream broke (${error.message}); resuming`, true);
      await sleep(2000);
    }
  }
}

// Call `task` now and every `ms` while the page shows, until `signal` aborts.
async function every(ms, task, signal) {
  while (!signal.aborted) {
    if (!document.hidden) {
      try {
        await task();
      } catch (error) {
        if (signal.aborted) return;
        if (!(error instanceof ApiError) || error.status !== 401) say(error.message, true);
      }
    }
    await sleep(ms);
  }
}

// --- the key ----------------------------------------------------------------------

function login() {
  if (document.getElementById("login")) return;
  const input = h("input", { id: "key", type: "password", autocomplete: "off", required: true });
  const form = h(
    "form",
    { id: "login", class: "login", onsubmit: (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, input.value.trim());
      route();
    } },
    h("h1", {}, "Rig console"),
    h("p", {}, "This gateway needs an API key. `rig up` wrote one to $RIG_HOME/gateway.key; ",
      "`rig keys add NAME` makes another. The key stays in this tab (session storage)."),
    h("label", { for: "key" }, "API key", input),
    h("button", { class: "primary", type: "submit" }, "Open the console"),
  );
  main.replaceChildren(form);
  input.focus();
}

// --- jobs -------------------------------------------------------------------------

function jobsPage(signal, query) {
  const filters = { agent: query.get("agent") ?? "", status: query.get("status") ?? "" };
  const cursors = [null]; // the cursor of each page seen; the last is this page's
  const rows = new Map();
  const agentSelect = h("select", { id: "agent", onchange: () => go({ agent: agentSelect.value }) },
    h("option", { value: "" }, "every agent"));
  const statusSelect = h("select", { id: "status", onchange: () => go({ status: statusSelect.value }) },
    h("option", { value: "" }, "any status"), h("option", { value: "active" }, "active (not ended)"),
    STATUSES.map((s) => h("option", { value: s }, s)));
  const search = h("input", { id: "search", type: "search", placeholder: "a job id", size: 36 });
  const counts = h("div", { class: "counts", role: "group", "aria-label": "jobs by status" });
  const body = h("tbody");
  const older = h("button", { type: "button", onclick: () => { cursors.push(nextCursor); refresh(); } }, "Older");
  const newer = h("button", { type: "button", onclick: () => { cursors.pop(); refresh(); } }, "Newer");
  const where = h("span", { class: "muted" });
  let nextCursor = null;

  function go(change) {
    const next = new URLSearchParams({ ...filters, ...change });
    for (const [key, value] of [...next]) if (!value) next.delete(key);
    location.hash = `#/jobs${next.size ? `?${next}` : ""}`;
  }

  async function refresh() {
    const params = new URLSearchParams({ limit: "25" });
    if (filters.agent) params.set("agent", filters.agent);
    if (filters.status) params.set("status", filters.status);
    const cursor = cursors.at(-1);
    if (cursor) params.set("cursor", cursor);
    const page = await api(`/v1/jobs?${params}`, { signal });
    nextCursor = page.next ? new URL(page.next, location.href).searchParams.get("cursor") : null;
    older.disabled = !nextCursor;
    newer.disabled = cursors.length === 1;
    where.textContent = `page ${cursors.length}`;
    showCounts(page.counts ?? {});
    showRows(page.jobs);
  }

  function showCounts(byStatus) {
    const total = Object.values(byStatus).reduce((a, b) => a + b, 0);
    counts.replaceChildren(
      h("button", { type: "button", "aria-pressed": String(!filters.status), onclick: () => go({ status: "" }) },
        `all ${total}`),
      ...STATUSES.filter((s) => byStatus[s]).map((s) => h("button", {
        type: "button", "aria-pressed": String(filters.status === s), "data-status": s,
        onclick: () => go({ status: s }),
      }, `${s} ${byStatus[s]}`)),
    );
  }

  function showRows(jobs) {
    const keep = new Set(jobs.map((job) => job.job_id));
    for (const [id, row] of rows) if (!keep.has(id)) { row.remove(); rows.delete(id); }
    const arriving = rows.size > 0; // rows after the first load are marked as they arrive
    let before = null;
    for (const job of [...jobs].reverse()) { // bottom up, so each row goes above the last
      let row = rows.get(job.job_id);
      if (!row) {
        row = h("tr", { "data-job": job.job_id, class: arriving ? "new" : "" },
          h("td", {}, jobLink(job.job_id)), h("td"), h("td"), h("td"), h("td"), h("td"), h("td"));
        rows.set(job.job_id, row);
      }
      const cells = row.children;
      cells[1].textContent = job.agent;
      cells[2].replaceChildren(badge(job.status));
      cells[3].textContent = job.state ?? "";
      cells[4].textContent = `${job.steps} / ${job.max_steps}`;
      cells[5].textContent = ago(job.created_at);
      cells[5].title = new Date(job.created_at * 1000).toLocaleString();
      cells[6].textContent = ago(job.updated_at);
      if (row.nextSibling !== before || row.parentNode !== body) body.insertBefore(row, before);
      before = row;
    }
    if (!jobs.length && !body.querySelector(".empty")) {
      body.append(h("tr", { class: "empty" }, h("td", { colspan: 7, class: "muted" }, "No jobs here yet.")));
    } else if (jobs.length) body.querySelector(".empty")?.remove();
  }

  main.replaceChildren(
    h("h1", {}, "Jobs"),
    h("form", { class: "toolbar", role: "search", onsubmit: (event) => {
      event.preventDefault();
      const id = search.value.trim();
      if (id) location.hash = `#/jobs/${encodeURIComponent(id)}`;
    } },
    h("label", {}, "Agent", agentSelect), h("label", {}, "Status", statusSelect),
    h("label", {}, "Find a job by id", search), h("button", { type: "submit" }, "Open")),
    counts,
    h("table", { id: "jobs" },
      h("thead", {}, h("tr", {}, ["Job", "Agent", "Status", "State", "Steps", "Created", "Updated"]
        .map((name) => h("th", { scope: "col" }, name)))),
      body),
    h("div", { class: "pager" }, newer, older, where),
  );
  statusSelect.value = filters.status;
  api("/v1/agents", { signal }).then(({ agents }) => {
    for (const agent of agents) agentSelect.append(h("option", { value: agent.name }, agent.name));
    agentSelect.value = filters.agent;
  }).catch(() => {});
  every(POLL_MS, refresh, signal);
}

// --- one job ----------------------------------------------------------------------

function describe(event) {
  const d = event.data;
  switch (event.type) {
    case "accepted":
      return `accepted for agent ${d.agent}`;
    case "started":
      return `started in ${d.state} on graph ${d.graph_version}`;
    case "decision": {
      if (d.code_error) return `${d.state}: the agent's code raised ${d.code_error.type}: ${d.code_error.message}`;
      if (d.config_error) return `${d.state}: config error: ${d.config_error.message}`;
      if (d.exhausted) return `${d.state}: no model call, the ${d.exhausted} budget cannot pay for it`;
      const call = d.tool ? `, calls ${d.tool}(${JSON.stringify(d.args ?? {})})` : "";
      const who = d.by === "human" ? " (by a person)" : "";
      const fallback = d.fallback ? ` (safe edge: ${d.reason ?? ""})` : "";
      const reasks = d.reasks ? ` [${d.reasks} re-ask(s)]` : "";
      return `${d.state} → edge ${d.edge}${who}${call}${fallback}${reasks}`;
    }
    case "tool_result":
      return `${d.tool} [ledger ${d.ledger}] ${d.ok ? JSON.stringify(d.result) : JSON.stringify(d.error)}`;
    case "verdict":
      return `${d.verifier}: ${d.passed ? "pass" : "FAIL"} ${d.reason ?? ""}`;
    case "transition":
      return `${d.source} → ${d.target}${d.reason ? ` (${d.reason})` : ""}`;
    case "budget":
      return `${d.exhausted} exhausted: ${d.message}; ${d.action}`;
    case "resolved":
      return `${d.by || "a person"} took ${d.edge}${d.note ? `: ${d.note}` : ""}`;
    case "resumed":
      return `resumed in ${d.state}: the late ${d.by} arrived`;
    case "child_started":
      return `started child job ${d.child} of agent ${d.agent}`;
    case "child_ended":
      return `child job ${d.child} ended ${d.status}${d.error?.message ? `: ${d.error.message}` : ""}`;
    case "signal":
      if (d.waiting) return `waits for signal ${d.name}`;
      if (d.timed_out) return `no signal ${d.name} within ${d.waited_s} s`;
      return `signal ${d.name}${d.by ? ` from ${d.by}` : ""}: ${JSON.stringify(d.data ?? {})}`;
    case "thread":
      return `waits its turn in thread ${d.thread} (after ${d.waits_for})`;
    case "compacted":
      return d.summary
        ? `summarised the thread's first ${d.through} turns, ${d.kept} newer kept as they were`
        : `made no summary (edge ${d.edge}): the newest turns only`;
    case "status":
      return d.status === "waiting_human"
        ? `waiting for a person in ${d.state}: ${d.reason}`
        : `${d.status} in ${d.state}`;
    default:
      return JSON.stringify(d);
  }
}

function timelineItem(event) {
  const d = event.data;
  const bad = (event.type === "tool_result" && !d.ok) || (event.type === "verdict" && !d.passed)
    || d.fallback || d.code_error || (event.type === "status" && ["failed", "cancelled"].includes(d.status));
  const item = h("li", { class: `ev-${event.type}${bad ? " bad" : ""}`, "data-seq": event.seq, "data-type": event.type },
    h("div", { class: "ev-head" },
      h("span", { class: "ev-type" }, event.type),
      h("span", { class: "ev-meta" }, `#${event.seq} · step ${event.step} · ${clock(event.ts)}`),
      h("span", { class: "ev-text" }, describe(event))));
  if (event.type === "decision" && d.calls?.length) {
    item.append(h("ul", { class: "calls" }, d.calls.map((call) => h("li", {},
      call.cache === "hit" ? `cache hit: ${call.provider}/${call.model}`
        : `${call.provider}/${call.model}: ${call.ok ? "answered" : `failed (${call.error ?? "error"})`}`
          + `${call.ms !== undefined ? ` in ${Math.round(call.ms)} ms` : ""}`))));
  }
  item.append(h("details", {}, h("summary", {}, "the event as recorded"), h("pre", {}, json(event))));
  return item;
}

function budgetBars(info) {
  const rows = [];
  const bar = (label, used, limit, text) => {
    const share = limit ? Math.min(1, used / limit) : 0;
    const level = share >= 1 ? "bar full" : share >= 0.8 ? "bar high" : "bar";
    rows.push(h("span", {}, label),
      h("div", { class: level, role: "meter", "aria-label": label, "aria-valuemin": 0,
        "aria-valuemax": limit ?? 0, "aria-valuenow": used },
      h("span")),
      h("span", { class: "mono" }, text));
    rows.at(-2).firstChild.style.width = `${(share * 100).toFixed(1)}%`;
  };
  const b = info.budget ?? {};
  const tokens = (info.usage?.input_tokens ?? 0) + (info.usage?.output_tokens ?? 0);
  const steps = info.steps + (info.child_steps ?? 0);  // its children's are charged to it
  const children = info.child_steps ? ` (${info.child_steps} by children)` : "";
  bar("steps", steps, info.max_steps, `${steps} of ${info.max_steps}${children}`);
  bar("tokens", tokens, b.max_tokens, b.max_tokens ? `${tokens} of ${b.max_tokens}` : `${tokens} (no limit)`);
  const cost = info.usage?.cost ?? 0;
  bar("cost", cost, b.max_cost, b.max_cost ? `${cost.toFixed(4)} of ${b.max_cost}` : `${cost.toFixed(4)} (no limit)`);
  if (info.deadline) {
    const end = TERMINAL.has(info.status) ? info.updated_at : Date.now() / 1000;
    const span = info.deadline - info.created_at;
    bar("deadline", end - info.created_at, span, `${Math.round(end - info.created_at)} s of ${Math.round(span)} s`);
  } else {
    bar("deadline", 0, 0, "no deadline");
  }
  return h("div", { class: "bars" }, rows);
}

async function jobPage(signal, id) {
  main.replaceChildren(h("h1", {}, "Job ", h("span", { class: "mono" }, id)), h("p", { class: "muted" }, "Loading…"));
  let info;
  try {
    info = await api(`/v1/jobs/${encodeURIComponent(id)}`, { signal });
  } catch (error) {
    if (signal.aborted) return;
    main.replaceChildren(h("h1", {}, "Job ", h("span", { class: "mono" }, id)),
      h("p", { class: "error", role: "alert" }, error.message), h("p", {}, h("a", { href: "#/jobs" }, "All jobs")));
    return;
  }
  const marks = { current: info.state, visited: new Set(info.path), taken: new Set() };
  let graph = null;
  const facts = h("div", { class: "facts" });
  const graphBox = h("div", { id: "graph" });
  const budgets = h("div", { id: "budgets" });
  const outcome = h("div", { id: "outcome" });
  const tokens = h("pre", { id: "tokens", class: "tokens", "aria-live": "off" });
  const timeline = h("ol", { id: "timeline", class: "timeline", "aria-live": "polite" });
  const cancel = h("button", { type: "button", class: "danger", id: "cancel", onclick: async () => {
    if (!confirm(`Cancel job ${id}?`)) return;
    cancel.disabled = true;
    try {
      show(await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, {
        method: "POST", body: { reason: "cancelled from the console" }, signal }));
    } catch (error) { outcome.replaceChildren(h("p", { class: "error", role: "alert" }, error.message)); }
  } }, "Cancel the job");

  function show(next) {
    info = next;
    marks.current = info.state;
    marks.visited = new Set(info.path);
    facts.replaceChildren(...[
      badge(info.status),
      h("span", {}, "agent ", h("a", { href: "#/agents" }, info.agent)),
      h("span", {}, "state ", h("b", { id: "state" }, info.state ?? "—")),
      h("span", { class: "muted" }, `created ${ago(info.created_at)}`),
      info.trace_id ? h("span", { class: "muted mono" }, `trace ${info.trace_id}`) : null,
      info.thread ? h("span", {}, "turn of thread ", h("a", { href: `#/threads/${encodeURIComponent(info.thread)}`,
        class: "mono", id: "thread-link" }, info.thread)) : null,
      TERMINAL.has(info.status) ? null : cancel,
    ].filter(Boolean));
    budgets.replaceChildren(budgetBars(info));
    const parts = [];
    if (info.waiting) {
      parts.push(h("h2", {}, "Waiting for a person"), h("p", {}, info.waiting.reason),
        h("p", {}, h("a", { href: "#/inbox" }, `Decide in the inbox (${info.waiting.edges.join(", ")})`)));
    }
    if (info.waiting_signal) {
      parts.push(h("h2", {}, "Waiting for a signal"),
        h("p", {}, `Signal `, h("b", {}, info.waiting_signal), ` moves it (rig signal ${id} ${info.waiting_signal})`));
    }
    if (info.parent || info.children?.length) parts.push(tree);
    if (info.result) parts.push(h("h2", {}, "Result"), h("pre", { id: "result" }, json(info.result)));
    if (info.error) parts.push(h("h2", {}, "Error"), h("pre", { id: "error", class: "error" }, json(info.error)));
    outcome.replaceChildren(...parts);
    if (graph) graphBox.replaceChildren(drawGraph(graph, marks));
    if (info.parent || info.children?.length) drawTree();
  }

  // The job's place in its tree: the job that started it, and the children it started
  // (read again whenever the job changes), each with its status.
  const tree = h("div", { id: "tree" });
  async function drawTree() {
    const rows = [];
    if (info.parent) {
      const p = info.parent;
      rows.push(h("p", {}, "Started by ", jobLink(p.job_id), ` (agent ${p.agent}, step ${p.step}, edge ${p.edge})`));
    }
    if (info.children?.length) {
      let found = [];
      try {
        found = (await api(`/v1/jobs?parent=${encodeURIComponent(id)}&limit=1000`, { signal })).jobs;
      } catch (error) { if (signal.aborted) return; }
      const byId = new Map(found.map((job) => [job.job_id, job]));
      const waits = new Set(info.waiting_for ?? []);
      rows.push(h("ol", { class: "children" }, ...info.children.map((child) => {
        const job = byId.get(child);
        return h("li", { "data-child": child },
          jobLink(child), " ", job ? badge(job.status) : h("span", { class: "muted" }, "starting"),
          job ? h("span", { class: "muted" }, ` ${job.agent}`) : null,
          waits.has(child) ? h("span", { class: "muted" }, " · waited for") : null,
          job?.waiting ? h("span", {}, ` · waits for a person: ${job.waiting.reason}`) : null);
      })));
    }
    tree.replaceChildren(h("h2", {}, "The tree"), ...rows);
  }

  main.replaceChildren(
    h("h1", {}, "Job ", h("span", { class: "mono" }, id)),
    facts,
    h("div", { class: "grid" },
      h("section", { "aria-labelledby": "graph-title" },
        h("h2", { id: "graph-title" }, "The graph"), graphBox,
        h("h2", {}, "Budget"), budgets, outcome,
        h("h2", {}, "The model writes"), tokens),
      h("section", { "aria-labelledby": "timeline-title" },
        h("h2", { id: "timeline-title" }, "Timeline"), timeline)));
  show(info);
  try {
    graph = (await api(`/v1/agents/${encodeURIComponent(info.agent)}`, { signal })).graph;
    show(info);
  } catch (error) {
    if (!signal.aborted) graphBox.replaceChildren(h("p", { class: "muted" }, `No graph: ${error.message}`));
  }

  // The model's answers as they stream, a line for each step's.
  const answers = new Map();
  await events(`/v1/jobs/${encodeURIComponent(id)}/events?tokens=true`, async (message) => {
    const data = JSON.parse(message.data);
    if (message.event === "token") {
      const step = data.step ?? -1;
      if (!answers.has(step)) {
        const line = h("span", { class: "answer", "data-step": step }, h("span", { class: "muted" },
          step >= 0 ? `step ${step}: ` : ""), h("span", { class: "text" }));
        if (answers.size) tokens.append("\n");
        tokens.append(line);
        answers.set(step, line.lastChild);
      }
      answers.get(step).append(data.text);
      return;
    }
    if (timeline.querySelector(`[data-seq="${data.seq}"]`)) return;
    timeline.append(timelineItem(data));
    if (data.type === "decision" && data.data.edge) marks.taken.add(`${data.data.state}/${data.data.edge}`);
    if (data.type === "resolved" && data.data.edge) marks.taken.add(`${data.data.state ?? info.state}/${data.data.edge}`);
    if (["status", "transition", "decision", "resolved", "budget"].includes(data.type)) {
      show(await api(`/v1/jobs/${encodeURIComponent(id)}`, { signal }));
    }
  }, signal);
}

// --- the inbox --------------------------------------------------------------------

// A conversation (`rig submit --thread`): the turn that runs, those waiting, the summary
// of older turns, and each ended turn, read again every few seconds.
function threadPage(signal, id) {
  const title = h("h1", {}, "Thread ", h("span", { class: "mono" }, id));
  const facts = h("div", { class: "facts" });
  const summary = h("div", { id: "summary" });
  const turns = h("ol", { id: "turns", class: "turns" });
  main.replaceChildren(title, facts, summary, h("h2", {}, "Turns"), turns);
  const line = (value) => (value === null || value === undefined ? "—" : JSON.stringify(value));
  every(3000, async () => {
    let record;
    try {
      record = await api(`/v1/threads/${encodeURIComponent(id)}`, { signal });
    } catch (error) {
      if (signal.aborted) return;
      facts.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
      return;
    }
    facts.replaceChildren(...[
      h("span", {}, "agent ", h("a", { href: `#/jobs?agent=${encodeURIComponent(record.agent)}` }, record.agent)),
      h("span", {}, "running ", record.active ? jobLink(record.active) : "none"),
      h("span", {}, `waiting ${record.waiting.length}`),
      h("span", { class: "muted" }, `updated ${ago(record.updated_at)}`),
      record.dropped ? h("span", { class: "muted" }, `${record.dropped} older no longer kept`) : null,
    ].filter(Boolean));
    summary.replaceChildren(...(record.summary ? [
      h("h2", {}, `Summary of the first ${record.summary.through} turns`),
      h("p", { class: "muted" }, "made by ", jobLink(record.summary.job_id), `; ${record.compactions} so far`),
      h("pre", { id: "thread-summary" }, JSON.stringify(record.summary.summary, null, 2)),
    ] : []));
    turns.start = record.dropped + 1;
    turns.replaceChildren(...record.turns.map((turn) => h("li", { "data-turn": turn.job_id },
      badge(turn.status), " ", jobLink(turn.job_id),
      h("div", { class: "mono" }, "in ", line(turn.input)),
      h("div", { class: "mono" }, "out ", line(turn.output ?? turn.results)))));
  }, signal);
}

function inboxPage(signal) {
  const list = h("div", { class: "cards", id: "inbox" });
  const cards = new Map();
  const empty = h("p", { class: "muted" }, "Nobody is needed: no job waits for a person.");

  function card(item) {
    const who = h("input", { name: "by", value: localStorage.getItem(WHO) ?? "", placeholder: "your name" });
    const note = h("input", { name: "note", placeholder: "why (kept in the journal)" });
    const args = h("textarea", { name: "args", rows: 2, placeholder: '{"amount": 25} (optional)' });
    const result = h("div", { class: "outcome", role: "status", "aria-live": "polite" });
    const buttons = item.edges.map((edge, i) => h("button", {
      type: "button", class: i === 0 ? "primary" : "", "data-edge": edge,
      onclick: async () => {
        let parsed;
        try {
          parsed = args.value.trim() ? JSON.parse(args.value) : undefined;
        } catch (error) {
          result.replaceChildren(h("span", { class: "error" }, `The arguments are not JSON: ${error.message}`));
          return;
        }
        localStorage.setItem(WHO, who.value);
        for (const b of buttons) b.disabled = true;
        try {
          // The wait this card shows: once the job has left it, the resolve is refused.
          const body = { edge, step: item.step, by: who.value || undefined, note: note.value || undefined, args: parsed };
          const info = await api(`/v1/jobs/${encodeURIComponent(item.job_id)}/resolve`, { method: "POST", body, signal });
          countNow();
          follow(item.job_id, edge, info, result, signal);
        } catch (error) {
          for (const b of buttons) b.disabled = false;
          result.replaceChildren(h("span", { class: "error", role: "alert" }, error.message));
        }
      },
    }, edge));
    return h("article", { class: "card", "data-job": item.job_id },
      h("h2", {}, jobLink(item.job_id)),
      h("div", { class: "facts" },
        h("span", {}, "agent ", h("b", {}, item.agent)), h("span", {}, "state ", h("b", {}, item.state ?? "—")),
        h("span", { class: "muted" }, `${item.kind.replace("_", " ")}, waiting ${ago(item.since).replace(" ago", "")}`)),
      h("p", { class: "reason" }, item.reason),
      h("details", { open: true }, h("summary", {}, "the job's input"), h("pre", {}, json(item.input))),
      h("div", { class: "fields" }, h("label", {}, "Who decides", who), h("label", {}, "Note", note),
        h("label", {}, "Arguments for the edge (JSON)", args)),
      h("div", { class: "edges", role: "group", "aria-label": "what the person does" }, buttons),
      result);
  }

  // The card's notice follows the job past the resolve: until it ends, or waits for a
  // person again (then the inbox shows it anew), never a status it has left.
  async function follow(id, edge, info, result, signal) {
    for (;;) {
      const again = info.status === "waiting_human" ? " again" : "";
      result.replaceChildren(`Took ${edge}: the job ${TERMINAL.has(info.status) ? "ended" : "is"} `,
        badge(info.status), ` in ${info.state ?? "—"}${again}. `, jobLink(id));
      if (TERMINAL.has(info.status) || info.status === "waiting_human") return;
      try {
        info = await api(`/v1/jobs/${encodeURIComponent(id)}/wait?timeout=25`, { signal });
      } catch (error) {
        if (!signal.aborted) result.append(h("span", { class: "muted" }, ` (${error.message})`));
        return;
      }
    }
  }

  async function refresh() {
    const { jobs } = await api("/v1/inbox", { signal });
    const waiting = new Set(jobs.map((item) => item.job_id));
    for (const [id, node] of cards) {
      // A resolved card stays, with its outcome, until the page is left.
      if (!waiting.has(id) && !node.querySelector(".outcome")?.textContent) { node.remove(); cards.delete(id); }
    }
    for (const item of jobs) {
      if (!cards.has(item.job_id)) {
        const node = card(item);
        cards.set(item.job_id, node);
        list.append(node);
      }
    }
    if (cards.size) empty.remove(); else list.replaceChildren(empty);
  }

  main.replaceChildren(h("h1", {}, "Inbox"),
    h("p", { class: "muted" }, "Jobs parked for a person, oldest first: read why, then take one of the edges."),
    list);
  every(POLL_MS, refresh, signal);
}

let countNow = () => {}; // the nav's count, asked now (after a resolve), not in 5 s

async function inboxCount(signal) {
  const count = document.getElementById("inbox-count");
  async function refresh() {
    if (!sessionStorage.getItem(KEY) && document.getElementById("login")) return;
    const { jobs } = await api("/v1/inbox", { signal });
    count.textContent = String(jobs.length);
    count.hidden = !jobs.length;
    count.setAttribute("aria-label", `${jobs.length} waiting`);
  }
  countNow = () => refresh().catch(() => {});
  await every(5000, refresh, signal);
}

// --- agents -----------------------------------------------------------------------

// The schedules (`rig schedule`): each one's clock, next tick, what its ticks did, its
// newest job; pause, resume or start one now.
function schedulesPage(signal) {
  const rows = h("tbody");
  const when = (at) => (at ? new Date(at * 1000).toLocaleString() : "—");
  async function act(name, op) {
    try {
      const done = await api(`/v1/schedules/${encodeURIComponent(name)}/${op}`, { method: "POST", signal });
      if (done.job_id) location.hash = `#/jobs/${encodeURIComponent(done.job_id)}`;
      else await refresh();
    } catch (error) { say(error.message, true); }
  }
  async function refresh() {
    const { schedules } = await api("/v1/schedules", { signal });
    rows.replaceChildren(...schedules.map((s) => h("tr", { "data-schedule": s.name },
      h("td", { class: "mono" }, s.name),
      h("td", {}, h("a", { href: `#/jobs?agent=${encodeURIComponent(s.spec.agent)}` }, s.spec.agent)),
      h("td", { class: "mono" }, s.spec.cron ? `${s.spec.cron} (${s.spec.timezone})` : `every ${s.spec.every_s} s`),
      h("td", { class: "next" }, s.paused ? "paused" : when(s.next_at)),
      h("td", { class: "fired" }, String(s.fired)),
      h("td", {}, String(s.skipped)),
      h("td", {}, s.last_job ? jobLink(s.last_job) : "—"),
      h("td", {},
        h("button", { type: "button", class: "toggle", onclick: () => act(s.name, s.paused ? "resume" : "pause") },
          s.paused ? "Resume" : "Pause"),
        " ",
        h("button", { type: "button", class: "trigger", onclick: () => act(s.name, "trigger") }, "Run now")))));
  }
  main.replaceChildren(h("h1", {}, "Schedules"),
    h("table", { id: "schedules" },
      h("thead", {}, h("tr", {}, ...["name", "agent", "clock", "next tick", "fired", "skipped", "last job", ""]
        .map((name) => h("th", {}, name)))), rows),
    h("p", { class: "muted" }, "Add one with rig schedule add, or PUT /v1/schedules/{name}."));
  every(3000, refresh, signal);
}

function agentsPage(signal) {
  const health = h("div", { class: "health", id: "providers" });
  const list = h("div", { class: "cards", id: "agents" });
  const cards = new Map();
  const samples = []; // recent /v1/providers readings: a rate over the last minute

  function rates(provider) {
    const key = `${provider.provider}/${provider.model}`;
    const old = samples.find((s) => s.at >= Date.now() - 60_000 && s.by.has(key))?.by.get(key);
    const calls = provider.calls - (old?.calls ?? 0);
    const failed = provider.failed - (old?.failed ?? 0);
    const ms = provider.ms - (old?.ms ?? 0);
    return { calls, errorRate: calls ? failed / calls : 0, latency: calls ? ms / calls : null };
  }

  async function refresh() {
    const [{ agents }, { providers }] = await Promise.all([
      api("/v1/agents", { signal }), api("/v1/providers", { signal })]);
    samples.push({ at: Date.now(), by: new Map(providers.map((p) => [`${p.provider}/${p.model}`, p])) });
    while (samples.length && samples[0].at < Date.now() - 70_000) samples.shift();
    health.replaceChildren(...(providers.length ? providers.map((p) => {
      const r = rates(p);
      return h("div", { class: "provider", "data-provider": p.provider },
        h("b", {}, `${p.provider}`), h("span", { class: "muted" }, ` ${p.model} `),
        h("span", { class: `breaker ${p.breaker}` }, p.breaker === "closed" ? "● up" : `● breaker ${p.breaker.replace("_", " ")}`),
        h("div", { class: "muted" }, `${p.calls} calls · last minute: ${r.calls} calls, `
          + `${(r.errorRate * 100).toFixed(0)}% failed, `
          + `${r.latency === null ? "no latency yet" : `${Math.round(r.latency)} ms mean`}`));
    }) : [h("p", { class: "muted" }, "No agent has called a model provider yet (rule-based agents call none).")]));
    for (const agent of agents) {
      let node = cards.get(agent.name);
      if (!node) {
        node = h("article", { class: "card", id: agent.name, "data-agent": agent.name },
          h("h2", {}, agent.name), h("p", {}, agent.description), h("div", { class: "facts" }), h("div"));
        cards.set(agent.name, node);
        list.append(node);
        api(`/v1/agents/${encodeURIComponent(agent.name)}`, { signal })
          .then((detail) => node.lastChild.replaceChildren(drawGraph(detail.graph, {})))
          .catch(() => {});
      }
      node.querySelector(".facts").replaceChildren(
        h("span", { class: "live" }, `${agent.live} live process${agent.live === 1 ? "" : "es"}`),
        h("span", { class: "muted mono" }, `graph ${agent.graph_version}`),
        h("a", { href: `#/jobs?agent=${encodeURIComponent(agent.name)}` }, "its jobs"));
    }
  }

  main.replaceChildren(h("h1", {}, "Agents"),
    h("h2", {}, "Model providers"), health,
    h("h2", {}, "Agents and their graphs"), list);
  every(3000, refresh, signal);
}

// --- routing ----------------------------------------------------------------------

let current = null;

function route() {
  current?.abort();
  current = new AbortController();
  const signal = current.signal;
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  const page = parts[0] || "jobs";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `Rig · ${page}`;
  if (page === "jobs" && parts[1]) jobPage(signal, decodeURIComponent(parts[1]));
  else if (page === "threads" && parts[1]) threadPage(signal, decodeURIComponent(parts[1]));
  else if (page === "inbox") inboxPage(signal);
  else if (page === "agents") agentsPage(signal);
  else if (page === "schedules") schedulesPage(signal);
  else jobsPage(signal, new URLSearchParams(search ?? ""));
  main.focus({ preventScroll: true });
}

addEventListener("hashchange", route);
route();
inboxCount(new AbortController().signal);
