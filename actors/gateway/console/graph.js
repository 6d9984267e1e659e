// An agent's state machine as SVG: states in columns by their distance from the initial
// state, edges as curves with their names. No layout library: Rig's graphs are small.

const SVG = "http://www.w3.org/2000/svg";
const W = 132, H = 40, GAP_X = 84, GAP_Y = 34, PAD = 20;

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Each state's column: its distance from the initial state (unreached states last).
function columns(graph) {
  const rank = new Map([[graph.initial, 0]]);
  const queue = [graph.initial];
  while (queue.length) {
    const name = queue.shift();
    for (const edge of graph.states[name]?.edges ?? []) {
      if (!rank.has(edge.to)) {
        rank.set(edge.to, rank.get(name) + 1);
        queue.push(edge.to);
      }
    }
  }
  const last = Math.max(0, ...rank.values()) + 1;
  for (const name of Object.keys(graph.states)) if (!rank.has(name)) rank.set(name, last);
  return rank;
}

// `marks`: {current, visited: Set of states, taken: Set of "state/edge"}.
export function drawGraph(graph, marks = {}) {
  const rank = columns(graph);
  const byColumn = new Map();
  for (const [name, column] of rank) {
    if (!byColumn.has(column)) byColumn.set(column, []);
    byColumn.get(column).push(name);
  }
  const tallest = Math.max(...[...byColumn.values()].map((names) => names.length));
  const place = new Map();
  for (const [column, names] of byColumn) {
    const top = ((tallest - names.length) * (H + GAP_Y)) / 2;
    names.forEach((name, row) => {
      place.set(name, { x: PAD + column * (W + GAP_X), y: PAD + top + row * (H + GAP_Y) });
    });
  }
  const width = PAD * 2 + (Math.max(...byColumn.keys()) + 1) * (W + GAP_X) - GAP_X;
  const height = PAD * 2 + tallest * (H + GAP_Y) - GAP_Y + 40;
  const svg = el("svg", {
    class: "graph",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `state machine: ${Object.keys(graph.states).length} states, `
      + `in ${marks.current ?? graph.initial} now`,
  });
  const defs = el("defs");
  for (const kind of ["plain", "taken"]) {
    const marker = el("marker", {
      id: `arrow-${kind}`, class: kind, viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
    });
    marker.append(el("path", { d: "M0,0 L10,5 L0,10 z" }));
    defs.append(marker);
  }
  svg.append(defs);
  const edges = el("g");
  const nodes = el("g");
  svg.append(edges, nodes);
  const seen = new Map(); // how many edges already join two states: spread their curves
  for (const [name, state] of Object.entries(graph.states)) {
    for (const edge of state.edges ?? []) {
      const from = place.get(name), to = place.get(edge.to);
      if (!from || !to) continue;
      const pair = [name, edge.to].sort().join("\u0000");
      const nth = seen.get(pair) ?? 0;
      seen.set(pair, nth + 1);
      const taken = marks.taken?.has(`${name}/${edge.name}`);
      const group = el("g", { class: `edge${taken ? " taken" : ""}`, "data-edge": `${name}/${edge.name}` });
      let d, lx, ly;
      if (name === edge.to) { // a loop over the state's top
        const x = from.x + W / 2, y = from.y;
        d = `M${x - 18},${y} C${x - 30},${y - 44} ${x + 30},${y - 44} ${x + 18},${y}`;
        lx = x; ly = y - 38;
      } else if (to.x > from.x) { // forward: right side to left side
        const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2;
        const bend = nth * 16;
        d = `M${x1},${y1} C${x1 + GAP_X / 2},${y1 + bend} ${x2 - GAP_X / 2},${y2 + bend} ${x2},${y2}`;
        lx = (x1 + x2) / 2; ly = (y1 + y2) / 2 + bend - 4;
      } else { // back or sideways: under both states
        const x1 = from.x + W / 2, y1 = from.y + H, x2 = to.x + W / 2, y2 = to.y + H;
        const low = Math.max(y1, y2) + 34 + nth * 14;
        d = `M${x1},${y1} C${x1},${low} ${x2},${low} ${x2},${y2}`;
        lx = (x1 + x2) / 2; ly = low - 6;
      }
      group.append(el("path", { d, "marker-end": `url(#arrow-${taken ? "taken" : "plain"})` }));
      const label = el("text", { x: lx, y: ly, "text-anchor": "middle" }, edge.name);
      group.append(el("title", {}, `${name} --${edge.name}--> ${edge.to}`
        + (edge.tool ? ` (tool ${edge.tool})` : "") + (edge.verifier ? ` (verifier ${edge.verifier})` : "")));
      group.append(label);
      edges.append(group);
    }
  }
  for (const [name, state] of Object.entries(graph.states)) {
    const { x, y } = place.get(name);
    const classes = ["node"];
    if (state.terminal) classes.push("terminal");
    if (state.human) classes.push("human");
    if (marks.visited?.has(name)) classes.push("visited");
    if (marks.current === name) classes.push("current");
    const group = el("g", { class: classes.join(" "), "data-state": name });
    group.append(el("rect", { x, y, width: W, height: H, rx: state.terminal ? 20 : 6 }));
    const label = name.length > 17 ? `${name.slice(0, 16)}…` : name;
    group.append(el("text", { x: x + W / 2, y: y + H / 2 + 4, "text-anchor": "middle" }, label));
    const what = state.terminal ? ` (ends: ${state.terminal})` : state.human ? " (a person decides)" : "";
    group.append(el("title", {}, `${name}${what}${state.description ? `: ${state.description}` : ""}`));
    nodes.append(group);
  }
  return svg;
}
