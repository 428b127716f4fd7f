// The page: Run (open, edit, queue), Watch (queue, live progress, previews), Gallery, Settings.
// Everything the server or a file says is put in as text (textContent, attributes), never as HTML.
import { $, el } from "./dom.js";
import { api, openEvents, setToken, token } from "./api.js";
import { pngText } from "./png.js";
import { drawGraph, graphView } from "./graph.js";
import { buildForm, describeIssue } from "./form.js";
import { initGallery, refreshGallery } from "./gallery.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const state = {
  catalog: null,
  doc: null, form: null, runGraph: null,     // Run: the open workflow
  jobs: new Map(),                            // id → job summary (as GET /jobs gives it, kept current by events)
  selected: null, watchGraph: null, watchNodes: null, nodeRows: new Map(),
  socket: null, retry: 0, timer: null,
  seen: new Map(),                            // id → Map(node → [state, value, max, message]) from events, for any job
  lastPreview: null,                          // {job, src, caption}
};

function setConnection(text, kind) {
  const line = $("connection");
  line.textContent = text;
  line.dataset.state = kind;
}

// -- tabs ------------------------------------------------------------------------------------------------
const TABS = ["run", "watch", "gallery", "settings"];
function showTab(name) {
  for (const tab of TABS) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`tab-${tab}`).tabIndex = tab === name ? 0 : -1;
    $(tab).hidden = tab !== name;
  }
  window.scrollTo(0, 0);
  if (name === "gallery") refreshGallery();
}
TABS.forEach((tab, index) => {
  const button = $(`tab-${tab}`);
  button.addEventListener("click", () => showTab(tab));
  button.addEventListener("keydown", (event) => {  // arrow keys move between tabs, as for any tab list
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = TABS[(index + step + TABS.length) % TABS.length];
    showTab(next);
    $(`tab-${next}`).focus();
  });
});

// -- Run ---------------------------------------------------------------------------------------------------
async function loadCatalog() {
  const { status, body } = await api("/nodes");
  if (status === 200) state.catalog = body;
  return status;
}

async function readWorkflowFile(file) {
  const bytes = await file.arrayBuffer();
  const head = new Uint8Array(bytes.slice(0, 8));
  if (head[0] === 0x89 && head[1] === 0x50) {  // a PNG: the workflow it carries
    const chunks = await pngText(bytes);
    for (const key of ["workflow", "prompt"]) {  // graphflow's and ComfyUI's UI format, then ComfyUI's API format
      if (!chunks.has(key)) continue;
      try {
        const doc = JSON.parse(chunks.get(key));
        if (key === "workflow" && doc.graphflow === undefined && chunks.has("prompt")) continue;  // ComfyUI: run its prompt
        return doc;
      } catch { /* not JSON: try the next chunk */ }
    }
    throw new Error(`${file.name} carries no workflow (text chunks: ${[...chunks.keys()].join(", ") || "none"})`);
  }
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new Error(`${file.name} is neither a PNG nor JSON: ${error.message}`);
  }
}

function showRunErrors(lines) {
  const box = $("run-errors");
  box.replaceChildren();
  if (!lines.length) return;
  const list = el("ul");
  for (const line of lines) list.appendChild(el("li", {}, line));
  box.appendChild(list);
}

async function openWorkflow(doc, name) {
  if (!state.catalog && (await loadCatalog()) !== 200) {
    showRunErrors(["the node catalog could not be read: set the token in Settings if the server needs one"]);
    return;
  }
  state.doc = doc;
  showRunErrors([]);
  const view = graphView(doc);
  state.runGraph = drawGraph($("run-graph"), view);
  const native = doc && doc.graphflow !== undefined && doc.nodes && typeof doc.nodes === "object" && !Array.isArray(doc.nodes);
  $("workflow-name").textContent = `${name}: ${view.nodes.length} nodes${native ? "" : " (ComfyUI format: sent to the server as it is)"}`;
  const fields = $("fields");
  if (native) {
    state.form = buildForm(fields, doc, state.catalog, { upload: uploadImage, edited: (nodeId) => state.runGraph.setState(nodeId, "") });
  } else {
    state.form = null;
    fields.replaceChildren(el("p", { class: "hint" }, "This workflow is not in graphflow's format: it has no form here and is sent as it is."));
  }
  $("run-form").hidden = false;
}

async function openFile(file) {
  try {
    await openWorkflow(await readWorkflowFile(file), file.name);
  } catch (error) {
    showRunErrors([error.message]);
  }
}

async function uploadImage(file, errorText) {
  const form = new FormData();
  form.append("image", file);
  const { status, body } = await api("/uploads", { method: "POST", form });
  errorText.hidden = status === 201;
  errorText.textContent = status === 201 ? "" : `upload refused: ${body.error}`;
  return status === 201 ? body.name : null;
}

$("open-file").addEventListener("change", (event) => { if (event.target.files.length) openFile(event.target.files[0]); });
const dropZone = $("run");
dropZone.addEventListener("dragover", (event) => { event.preventDefault(); $("drop").classList.add("over"); });
dropZone.addEventListener("dragleave", () => $("drop").classList.remove("over"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  $("drop").classList.remove("over");
  if (event.dataTransfer.files.length) openFile(event.dataTransfer.files[0]);
});

$("run-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const workflow = state.form ? state.form.read() : state.doc;
  const priority = Number($("priority").value || 0);
  $("submit").disabled = true;  // one job per click, however impatient
  const { status, body } = await api("/jobs", { method: "POST", json: { workflow, priority } }).finally(() => { $("submit").disabled = false; });
  state.runGraph?.reset();
  if (status !== 202) {
    const problems = body.node_errors ?? {};
    const elsewhere = state.form ? state.form.showErrors(problems) : Object.entries(problems).flatMap(([nodeId, issues]) => issues.map((issue) => ({ nodeId, issue })));
    for (const [nodeId, issues] of Object.entries(problems)) {
      state.runGraph?.setState(nodeId, "error", issues.map(describeIssue).join("; "));
    }
    showRunErrors([`not queued: ${body.error}`, ...elsewhere.map(({ nodeId, issue }) =>
      `${nodeId || "workflow"}${issue.input ? `.${issue.input}` : ""}: ${describeIssue(issue)}`)]);
    return;
  }
  state.form?.showErrors({});
  showRunErrors([]);
  const id = body.id;
  upsertJob({ id, status: "queued", priority, created: Date.now() / 1000, progress: null });
  showTab("watch");
  selectJob(id);
});

// -- Watch -------------------------------------------------------------------------------------------------
function upsertJob(job) {
  const before = state.jobs.get(job.id) ?? { created: Date.now() / 1000, priority: 0, status: "queued", progress: null };
  state.jobs.set(job.id, { ...before, ...job });
  if (before.status === state.jobs.get(job.id).status && Object.keys(job).every((k) => k === "id" || k === "progress")) {
    updateQueueProgress(job.id);  // progress only: leave the list (and the focus in it) alone
  } else {
    renderQueue();
  }
}

function updateQueueProgress(id) {
  const job = state.jobs.get(id), item = $("queue").querySelector(`li[data-job="${CSS.escape(id)}"]`);
  if (!item || !job.progress) return;
  let bar = item.querySelector("progress");
  if (!bar) {
    bar = el("progress");
    item.appendChild(bar);
  }
  bar.max = job.progress.max;
  bar.value = job.progress.value;
  bar.setAttribute("aria-label", `job ${id.slice(0, 8)}: ${job.progress.node}`);
}

function queuePositions() {  // the order the worker takes queued jobs: priority, then submission
  const queued = [...state.jobs.values()].filter((j) => j.status === "queued");
  queued.sort((a, b) => (b.priority - a.priority) || (a.created - b.created));
  return new Map(queued.map((job, index) => [job.id, index + 1]));
}

function renderQueue() {
  const list = $("queue"), positions = queuePositions();
  const jobs = [...state.jobs.values()].sort((a, b) => b.created - a.created);
  const focused = document.activeElement?.closest?.("#queue li") ? [document.activeElement.closest("li").dataset.job, document.activeElement.className] : null;
  list.replaceChildren();
  for (const job of jobs) {
    const item = el("li", { "data-job": job.id, "data-status": job.status });
    if (job.id === state.selected) item.classList.add("selected");
    const head = el("span");
    head.appendChild(el("span", { class: `status ${job.status}` }, job.status));
    head.append(` ${job.id.slice(0, 8)}`);
    item.appendChild(head);
    const actions = el("span", { class: "actions" });
    const show = el("button", { type: "button", class: "show", "aria-label": `show job ${job.id.slice(0, 8)}` }, "Show");
    show.addEventListener("click", () => selectJob(job.id));
    actions.appendChild(show);
    if (!FINISHED.has(job.status)) {
      const cancel = el("button", { type: "button", class: "cancel", "aria-label": `cancel job ${job.id.slice(0, 8)}` }, "Cancel");
      cancel.addEventListener("click", () => cancelJob(job.id));
      actions.appendChild(cancel);
    }
    item.appendChild(actions);
    const meta = [`priority ${job.priority}`, new Date(job.created * 1000).toLocaleTimeString()];
    if (positions.has(job.id)) meta.push(`position ${positions.get(job.id)} in the queue`);
    if (job.cancelling) meta.push("cancelling…");
    if (job.status === "failed" && job.error) meta.push(`${job.error.node ?? ""} ${job.error.message ?? ""}`.trim());
    if (job.seconds) meta.push(`${job.seconds.toFixed(2)} s`);
    item.appendChild(el("span", { class: "meta" }, meta.join(" · ")));
    list.appendChild(item);
    if (job.status === "running") updateQueueProgress(job.id);
  }
  if (focused) {  // keep the keyboard focus on the job's row: its Cancel button, or Show once Cancel is gone
    const row = list.querySelector(`li[data-job="${CSS.escape(focused[0])}"]`);
    (row?.querySelector(`button.${focused[1] || "show"}`) ?? row?.querySelector("button.show"))?.focus();
  }
  const waiting = positions.size + jobs.filter((j) => j.status === "running").length;
  $("queue-count").textContent = waiting ? `(${waiting})` : "";
}

async function cancelJob(id) {
  const { status, body } = await api(`/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
  if (status === 200 || status === 202) upsertJob({ id, status: body.status, cancelling: Boolean(body.cancelling) });
  else $("job-status").textContent = `cancel refused: ${body.error}`;
}

async function selectJob(id) {
  state.selected = id;
  renderQueue();
  $("job-title").textContent = `Job ${id.slice(0, 8)}`;
  $("preview-box").hidden = true;
  const { status, body } = await api(`/jobs/${encodeURIComponent(id)}`);
  if (status !== 200 || state.selected !== id) return;
  upsertJob(stripWorkflow(body));
  const view = graphView(body.workflow);
  state.watchGraph = drawGraph($("watch-graph"), view);
  state.watchNodes = new Map(view.nodes.map((n) => [n.id, { state: "", value: 0, max: 1 }]));
  const rows = $("node-progress");
  rows.replaceChildren();
  state.nodeRows.clear();
  view.nodes.forEach((node, index) => {
    const row = el("li", { "data-node": node.id });
    const labelId = `node-progress-${index}`;
    row.appendChild(el("span", { id: labelId }, node.id));
    const bar = el("progress", { max: 1, value: 0, "aria-labelledby": labelId });
    row.appendChild(bar);
    rows.appendChild(row);
    state.nodeRows.set(node.id, { row, bar });
  });
  for (const node of body.executed ?? []) markNode(node, "done", 1, 1);
  for (const node of body.cached ?? []) markNode(node, "cached", 1, 1);
  if (body.status === "running" && body.progress) markNode(body.progress.node, "running", body.progress.value, body.progress.max);
  for (const [node, args] of state.seen.get(id) ?? []) markNode(node, ...args);  // events that came while it loaded
  if (body.error?.node) markNode(body.error.node, "error", 0, 1, body.error.message);
  if (state.lastPreview?.job === id) showPreview(state.lastPreview);
  updateJobView();
}

function stripWorkflow(job) {
  const { workflow, requested_outputs, ...summary } = job;
  return summary;
}

function markNode(nodeId, nodeState, value, max, message) {
  const node = state.watchNodes?.get(nodeId);
  if (!node) return;
  Object.assign(node, { state: nodeState, value, max: max || 1 });
  state.watchGraph.setState(nodeId, nodeState, message);
  state.watchGraph.setProgress(nodeId, value / (max || 1));
  const row = state.nodeRows.get(nodeId);
  if (row) {
    row.row.className = nodeState;
    row.bar.max = max || 1;
    row.bar.value = value;
  }
}

function updateJobView() {
  const job = state.jobs.get(state.selected);
  if (!job) return;
  const nodes = [...(state.watchNodes?.values() ?? [])];
  const done = job.status === "succeeded" ? nodes.length : nodes.reduce((sum, n) =>
    sum + (n.state === "done" || n.state === "cached" ? 1 : n.state === "running" ? n.value / n.max : 0), 0);
  $("job-progress").value = nodes.length ? done / nodes.length : 0;
  const position = queuePositions().get(job.id);
  const words = [job.status + (job.cancelling ? " (cancelling…)" : "")];
  if (position) words.push(`position ${position} in the queue`);
  if (job.status === "running" && job.progress) words.push(`${job.progress.node} ${job.progress.value}/${job.progress.max}`);
  if (job.status === "failed" && job.error) words.push(`${job.error.node ? `${job.error.node}: ` : ""}${job.error.message}`);
  $("job-status").textContent = words.join(" · ");
}

function onEvent(event) {
  const id = event.job;
  if (!id) return;
  const known = state.jobs.get(id);
  switch (event.type) {
    case "queued": upsertJob({ id, status: "queued", priority: event.priority, created: known?.created ?? Date.now() / 1000 }); break;
    case "started": upsertJob({ id, status: "running", started: Date.now() / 1000 }); break;
    case "progress": upsertJob({ id, progress: { node: event.node, value: event.value, max: event.max } }); break;
    case "succeeded": upsertJob({ id, status: "succeeded", outputs: event.outputs, cancelling: false }); break;
    case "failed": upsertJob({ id, status: "failed", error: event.error, cancelling: false }); break;
    case "cancelled": upsertJob({ id, status: "cancelled", cancelling: false }); break;
  }
  if (FINISHED.has(event.type)) {
    state.seen.delete(id);  // the stored job says which nodes ran
    refreshJob(id);  // its stored seconds, outputs, error
  }
  const args = {
    node_started: ["running", 0, 1], node_cached: ["cached", 1, 1], node_finished: ["done", 1, 1],
    progress: ["running", event.value, event.max],
  }[event.type];
  if (args) {
    if (!state.seen.has(id)) state.seen.set(id, new Map());
    state.seen.get(id).set(event.node, args);
    if (id === state.selected) markNode(event.node, ...args);
  }
  if (event.type === "preview") {
    const step = event.step !== null && event.step !== undefined ? `, step ${event.step}` : "";
    state.lastPreview = { job: id, src: `data:image/png;base64,${event.image_png}`, caption: `${event.node}${step}` };
    if (id === state.selected) showPreview(state.lastPreview);
  }
  if (event.type === "failed" && event.error?.node && id === state.selected) markNode(event.error.node, "error", 0, 1, event.error.message);
  if (id === state.selected) updateJobView();
}

function showPreview({ src, caption }) {
  $("preview").src = src;
  $("preview-caption").textContent = caption;
  $("preview-box").hidden = false;
}

async function refreshJob(id) {
  const { status, body } = await api(`/jobs/${encodeURIComponent(id)}`);
  if (status === 200) upsertJob(stripWorkflow(body));
  updateJobView();
  if (body?.status === "succeeded" && !$("gallery").hidden) refreshGallery();  // its images
}

async function refreshJobs() {
  const { status, body } = await api("/jobs?limit=100");
  if (status === 401) { setConnection("the server needs a token: set it in Settings", "down"); return false; }
  if (status !== 200) return false;
  state.jobs.clear();
  for (const job of body.jobs) state.jobs.set(job.id, job);
  renderQueue();
  if (!state.selected && body.jobs.length) {
    const running = body.jobs.find((j) => j.status === "running");
    selectJob((running ?? body.jobs[0]).id);
  } else if (state.selected) {
    selectJob(state.selected);  // redraw its states from what the server kept
  }
  return true;
}

// The WebSocket: on open, the job list is read again, so what happened while it was down is not lost.
function connect() {
  const socket = openEvents();
  state.socket = socket;
  socket.addEventListener("open", async () => {
    state.retry = 0;
    if (await refreshJobs()) setConnection("live", "live");
  });
  socket.addEventListener("message", (message) => {
    try { onEvent(JSON.parse(message.data)); } catch { /* not JSON: ignore */ }
  });
  socket.addEventListener("close", async () => {
    if (state.socket !== socket) return;
    const delay = Math.min(5000, 500 * 2 ** state.retry++);
    state.timer = setTimeout(connect, delay);
    const { status } = await api("/jobs?limit=1");  // why: a refused token, or a server that is down
    if (state.socket !== socket) return;
    if (status === 401) setConnection("the server needs a token: set it in Settings", "down");
    else setConnection(`disconnected: reconnecting in ${Math.round(delay / 1000) || 1} s`, "down");
  });
}

function reconnectNow() {
  clearTimeout(state.timer);
  state.retry = 0;
  const old = state.socket;
  state.socket = null;  // its close event is then ignored
  old?.close();
  connect();
}

// -- Settings ----------------------------------------------------------------------------------------------
$("token").value = token();
$("settings-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  setToken($("token").value.trim());
  state.catalog = null;
  delete $("gallery-grid").dataset.shown;  // thumbnails that the old token could not fetch
  const status = await loadCatalog();
  $("settings-status").textContent = status === 200 ? "saved: the server accepts it" : status === 401 ? "saved, but the server refuses this token" : `saved (server answered ${status})`;
  reconnectNow();  // with the new token
});
$("token-clear").addEventListener("click", () => {
  setToken("");
  $("token").value = "";
  $("settings-status").textContent = "forgotten";
  reconnectNow();
});

initGallery((workflow, name) => {
  showTab("run");
  openWorkflow(workflow, name);
});
showTab("run");
connect();
