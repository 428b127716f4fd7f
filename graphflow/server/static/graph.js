// The workflow's graph as plain SVG: nodes in rows by depth (top to bottom), links as curves. Text goes in as textContent.
const SVG = "http://www.w3.org/2000/svg";
/** A graphflow input that is a link ({"from": node, "output": name}) rather than a literal. */
export const isLink = (value) => value !== null && typeof value === "object" && !Array.isArray(value) && "from" in value;

const WIDTH = 150, HEIGHT = 44, GAP_X = 14, GAP_Y = 34, PAD = 10;

/** Nodes and links to draw, from a graphflow workflow or either ComfyUI format (for display only). */
export function graphView(doc) {
  const nodes = [], links = [];
  if (doc && doc.graphflow !== undefined && doc.nodes && typeof doc.nodes === "object") {
    for (const [id, node] of Object.entries(doc.nodes)) {
      nodes.push({ id, type: String(node?.type ?? "?"), note: typeof node?.title === "string" ? node.title : "" });
      for (const [input, value] of Object.entries(node?.inputs ?? {})) {
        if (isLink(value)) links.push({ from: String(value.from), to: id, input });
      }
    }
  } else if (doc && Array.isArray(doc.nodes)) {  // ComfyUI's UI format: nodes[] and links[[id, from, slot, to, slot, type]]
    for (const node of doc.nodes) nodes.push({ id: String(node.id), type: String(node.type ?? "?"), title: node.title });
    for (const link of doc.links ?? []) {
      if (Array.isArray(link)) links.push({ from: String(link[1]), to: String(link[3]), input: String(link[5] ?? "") });
    }
  } else if (doc && typeof doc === "object") {  // ComfyUI's API format: {id: {class_type, inputs: {name: [id, slot]}}}
    for (const [id, node] of Object.entries(doc)) {
      if (!node || typeof node !== "object" || !("class_type" in node)) continue;
      nodes.push({ id, type: String(node.class_type), title: node._meta?.title });
      for (const [input, value] of Object.entries(node.inputs ?? {})) {
        if (Array.isArray(value) && value.length === 2 && typeof value[1] === "number") links.push({ from: String(value[0]), to: id, input });
      }
    }
  }
  return { nodes, links };
}

function depths(view) {
  const depth = new Map(view.nodes.map((n) => [n.id, 0]));
  for (let round = 0; round < view.nodes.length; round++) {  // longest path, bounded: a cycle cannot loop forever
    let changed = false;
    for (const link of view.links) {
      if (depth.has(link.from) && depth.has(link.to) && depth.get(link.to) < depth.get(link.from) + 1) {
        depth.set(link.to, depth.get(link.from) + 1);
        changed = true;
      }
    }
    if (!changed) break;
  }
  return depth;
}

function element(name, attributes = {}, parent) {
  const el = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  if (parent) parent.appendChild(el);
  return el;
}

function clip(text, length) { return text.length > length ? `${text.slice(0, length - 1)}…` : text; }

/** Draw ``view`` into ``svg``; returns {setState(id, state), setProgress(id, fraction), reset()}. */
export function drawGraph(svg, view) {
  svg.replaceChildren();
  const depth = depths(view), rows = new Map();
  for (const node of view.nodes) {
    const row = depth.get(node.id);
    if (!rows.has(row)) rows.set(row, []);
    rows.get(row).push(node.id);
  }
  const widest = Math.max(1, ...Array.from(rows.values(), (ids) => ids.length));
  const height = Math.max(1, ...Array.from(rows.keys(), (row) => row + 1));
  const place = new Map();
  for (const [row, ids] of rows) {  // each row centred under the widest one
    const offset = ((widest - ids.length) * (WIDTH + GAP_X)) / 2;
    ids.forEach((id, index) => place.set(id, { x: PAD + offset + index * (WIDTH + GAP_X), y: PAD + row * (HEIGHT + GAP_Y) }));
  }
  const w = PAD * 2 + widest * WIDTH + (widest - 1) * GAP_X, h = PAD * 2 + height * HEIGHT + (height - 1) * GAP_Y;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  for (const link of view.links) {
    const a = place.get(link.from), b = place.get(link.to);
    if (!a || !b) continue;
    const x1 = a.x + WIDTH / 2, y1 = a.y + HEIGHT, x2 = b.x + WIDTH / 2, y2 = b.y, mid = (y1 + y2) / 2;
    const path = element("path", { class: "link", d: `M${x1},${y1} C${x1},${mid} ${x2},${mid} ${x2},${y2}` }, svg);
    element("title", {}, path).textContent = `${link.from} → ${link.to}.${link.input}`;
  }
  const groups = new Map();
  for (const node of view.nodes) {
    const { x, y } = place.get(node.id);
    const g = element("g", { class: "node", "data-node": node.id, transform: `translate(${x},${y})` }, svg);
    element("rect", { class: "box", width: WIDTH, height: HEIGHT }, g);
    element("text", { x: 8, y: 18 }, g).textContent = clip(node.title || node.id, 21);
    element("text", { class: "type", x: 8, y: 34 }, g).textContent = clip(node.type, 23);
    const bar = element("rect", { class: "bar", x: 0, y: HEIGHT - 4, width: 0, height: 4 }, g);
    const tip = element("title", {}, g);
    tip.textContent = `${node.id} (${node.type})${node.note ? `: ${node.note}` : ""}`;
    groups.set(node.id, { g, bar, tip, label: tip.textContent });
  }
  return {
    setState(id, state, message) {
      const node = groups.get(id);
      if (!node) return;
      node.g.setAttribute("class", state ? `node ${state}` : "node");
      node.tip.textContent = message ? `${node.label}: ${message}` : node.label;
    },
    setProgress(id, fraction) {
      groups.get(id)?.bar.setAttribute("width", Math.max(0, Math.min(1, fraction)) * WIDTH);
    },
    reset() { for (const id of groups.keys()) { this.setState(id, ""); this.setProgress(id, 0); } },
  };
}
