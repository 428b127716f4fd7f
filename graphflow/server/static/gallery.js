// The Gallery tab: the images of succeeded jobs, newest first; a viewer with the job's parameters.
import { $, el } from "./dom.js";
import { api, imageURL } from "./api.js";
import { isLink } from "./graph.js";

export async function refreshGallery() {
  const { status, body } = await api("/jobs?status=succeeded&limit=100");
  if (status !== 200) return;
  const grid = $("gallery-grid");
  const items = [];
  for (const job of body.jobs) {
    for (const [node, result] of Object.entries(job.outputs ?? {})) {
      for (const image of result?.images ?? []) items.push({ job, node, image });
    }
  }
  const shown = JSON.stringify(items.map((item) => item.image.url));
  if (grid.dataset.shown === shown) return;  // nothing new: keep the thumbnails (and the focus) where they are
  grid.dataset.shown = shown;
  grid.replaceChildren();
  for (const item of items) {
    const li = el("li", { "data-job": item.job.id });
    const name = decodeURIComponent(item.image.url.split("/").pop());
    const button = el("button", { type: "button", "aria-label": `open ${name}` });
    const img = el("img", { alt: name, loading: "lazy" });
    button.appendChild(img);
    button.addEventListener("click", () => openViewer(item));
    li.appendChild(button);
    li.appendChild(el("p", {}, `${name} · ${new Date(item.job.finished * 1000).toLocaleString()}`));
    grid.appendChild(li);
    imageURL(item.image.url).then((url) => { img.src = url; }).catch(() => { img.alt = `${name} (could not be loaded)`; });
  }
  if (!items.length) grid.appendChild(el("li", {}, "No images yet: queue a job on the Run tab."));
}

let viewerWorkflow = null;
async function openViewer(item) {
  const name = decodeURIComponent(item.image.url.split("/").pop());
  $("viewer-title").textContent = name;
  $("viewer-image").alt = name;
  const url = await imageURL(item.image.url);
  $("viewer-image").src = url;
  $("viewer-download").href = url;
  $("viewer-download").setAttribute("download", name.split("/").pop());
  const rows = $("viewer-params").tBodies[0];
  rows.replaceChildren();
  const { status, body } = await api(`/jobs/${encodeURIComponent(item.job.id)}`);
  viewerWorkflow = status === 200 ? withSeedsUsed(body.workflow, body.seeds) : null;
  const add = (key, value) => {
    const tr = el("tr");
    tr.appendChild(el("th", { scope: "row" }, key));
    tr.appendChild(el("td", {}, typeof value === "string" ? value : JSON.stringify(value)));
    rows.appendChild(tr);
  };
  add("job", item.job.id);
  add("size", `${item.image.width ?? "?"} × ${item.image.height ?? "?"}`);
  if (item.job.seconds) add("seconds", item.job.seconds.toFixed(2));
  for (const [node, inputs] of Object.entries(body.seeds ?? {})) for (const [input, seed] of Object.entries(inputs)) add(`${node}.${input} (seed used)`, String(seed));
  for (const [id, node] of Object.entries(viewerWorkflow?.nodes ?? {})) {
    for (const [input, value] of Object.entries(node.inputs ?? {})) {
      if (!isLink(value)) add(`${id}.${input}`, value);
    }
  }
  $("viewer-load").disabled = !viewerWorkflow;
  $("viewer").showModal();
}

function withSeedsUsed(doc, seeds) {  // the stored workflow with drawn seeds replaced by the ones that ran
  if (!doc?.nodes || Array.isArray(doc.nodes)) return doc;
  const copy = structuredClone(doc);
  for (const [node, inputs] of Object.entries(seeds ?? {})) {
    if (copy.nodes[node]) Object.assign(copy.nodes[node].inputs ??= {}, inputs);
  }
  return copy;
}

/** ``load(workflow, name)`` is called by "Load this workflow". */
export function initGallery(load) {
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer-load").addEventListener("click", () => {
    $("viewer").close();
    load(viewerWorkflow, $("viewer-title").textContent);
  });
  $("gallery-refresh").addEventListener("click", refreshGallery);
}
