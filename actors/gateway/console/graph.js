// An agent's state machine as SVG: states in columns by their distance from the initial
// state, edges with their names. No layout library: Rig's graphs are small. No edge
// crosses a state's box: an edge to the next column is a curve within the gap between
// the two; any other runs in the gaps beside the columns and in lanes below every box.
// No two labels overlap, nor a label and a box (tests/integration/test_console.py).

const SVG = "http://www.w3.org/2000/svg";
const W = 132, H = 40, GAP_X = 84, GAP_Y = 34, PAD = 20;
const LANE = 14; // between two lines routed side by side
const CHAR_W = 7, LABEL_H = 13; // a label's box, in the console's 11px font (at most)

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
  const bottom = PAD + tallest * (H + GAP_Y) - GAP_Y; // the lowest box's lower side
  const svg = el("svg", {
    class: "graph",
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
  const drawn = [];
  const lanes = { below: 0, gap: new Map(), pairs: new Map() }; // the next goes beside
  for (const [name, state] of Object.entries(graph.states)) {
    for (const edge of state.edges ?? []) {
      const from = place.get(name), to = place.get(edge.to);
      if (!from || !to) continue;
      const taken = marks.taken?.has(`${name}/${edge.name}`);
      const group = el("g", {
        class: `edge${taken ? " taken" : ""}`, "data-edge": `${name}/${edge.name}`, "data-to": edge.to,
      });
      const pair = `${name}\u0000${edge.to}`;
      const nth = lanes.pairs.get(pair) ?? 0; // edges between the same two: spread apart
      lanes.pairs.set(pair, nth + 1);
      const columns = rank.get(edge.to) - rank.get(name);
      const { d, label } = route(name === edge.to, from, to, columns, nth, lanes, bottom);
      group.append(el("path", { d, "marker-end": `url(#arrow-${taken ? "taken" : "plain"})` }));
      group.append(el("title", {}, `${name} --${edge.name}--> ${edge.to}`
        + (edge.tool ? ` (tool ${edge.tool})` : "") + (edge.verifier ? ` (verifier ${edge.verifier})` : "")));
      drawn.push({ group, text: edge.name, ...label });
      edges.append(group);
    }
  }
  placeLabels(drawn, [...place.values()]);
  const loops = Object.entries(graph.states).some(([name, s]) => s.edges?.some((e) => e.to === name));
  const top = loops ? 40 : 0; // room for loops over the first row
  svg.setAttribute("viewBox", `0 ${-top} ${width} ${top + bottom + (lanes.below + 1) * LANE + PAD}`);
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

// The path of one edge, and where its label goes (x, y: the label's centre).
function route(loop, from, to, columns, nth, lanes, bottom) {
  if (loop) { // over the state's top
    const x = from.x + W / 2, y = from.y, up = 44 + nth * 12;
    return {
      d: `M${x - 18},${y} C${x - 30},${y - up} ${x + 30},${y - up} ${x + 18},${y}`,
      label: { x, y: y - up + 6 },
    };
  }
  if (columns === 1) { // to the next column: a curve within the gap between them
    const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2;
    const bend = nth * 14;
    return {
      d: `M${x1},${y1} C${x1 + GAP_X / 2},${y1 + bend} ${x2 - GAP_X / 2},${y2 + bend} ${x2},${y2}`,
      label: { x: (x1 + x2) / 2, y: (y1 + y2) / 2 + bend * 0.75 - 5 },
    };
  }
  // Anything else: out of a side into the gap beside the column, down that gap to a lane
  // below every box, along it to the gap beside the target's column, up, and in.
  const forward = columns > 1;
  const x1 = forward ? from.x + W : from.x, y1 = from.y + H / 2;
  const x2 = forward ? to.x : to.x + W, y2 = to.y + H / 2;
  const out = x1 + (forward ? 1 : -1) * gapLane(lanes, x1, forward);
  const into = x2 + (forward ? -1 : 1) * gapLane(lanes, x2, !forward);
  const low = bottom + (++lanes.below) * LANE;
  const r = 6; // rounded corners
  const down = (a, b) => Math.sign(b - a);
  const d = [
    `M${x1},${y1}`, `L${out - down(x1, out) * r},${y1}`, `Q${out},${y1} ${out},${y1 + r}`,
    `L${out},${low - r}`, `Q${out},${low} ${out + down(out, into) * r},${low}`,
    `L${into - down(out, into) * r},${low}`, `Q${into},${low} ${into},${low - r}`,
    `L${into},${y2 + r}`, `Q${into},${y2} ${into + down(into, x2) * r},${y2}`, `L${x2},${y2}`,
  ].join(" ");
  return { d, label: { x: (out + into) / 2, y: low - 5 } };
}

// How far into the gap beside a column side (at x) the next vertical line runs.
function gapLane(lanes, x, right) {
  const key = `${Math.round(x)}/${right}`;
  const n = lanes.gap.get(key) ?? 0;
  lanes.gap.set(key, n + 1);
  return Math.min(12 + n * 10, GAP_X / 2 - 4);
}

// Put each label at its spot, moved down (then up) by a line until it overlaps no box
// and no label placed before it.
function placeLabels(drawn, boxes) {
  const taken = boxes.map(({ x, y }) => ({ x1: x - 2, y1: y - 2, x2: x + W + 2, y2: y + H + 2 }));
  const hits = (a) => taken.some((b) => a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2);
  for (const label of drawn) {
    const half = (label.text.length * CHAR_W) / 2 + 2;
    let box;
    for (const shift of [0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6]) {
      const y = label.y + shift * LABEL_H;
      box = { x1: label.x - half, y1: y - LABEL_H + 3, x2: label.x + half, y2: y + 3, y };
      if (!hits(box)) break;
    }
    taken.push(box);
    label.group.append(el("text", { x: label.x, y: box.y, "text-anchor": "middle" }, label.text));
  }
}
