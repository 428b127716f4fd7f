// The form for a graphflow workflow's literal inputs, built from the node catalog's JSON Schemas.
import { el } from "./dom.js";
import { isLink } from "./graph.js";

const SAFE_SEED = Number.MAX_SAFE_INTEGER;  // JavaScript numbers are exact up to 2^53 - 1
let counter = 0;

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** Which widget a literal's schema asks for. */
function widgetKind(name, schema) {
  if (schema.seed) return "seed";
  if (Array.isArray(schema.enum)) return "select";
  if (schema.type === "integer" || schema.type === "number") return "number";
  if (schema.type === "boolean") return "checkbox";
  if (schema.type === "string") return /text|prompt/i.test(name) ? "textarea" : "text";
  return "json";
}

function makeControl(kind, id, name, schema, value) {
  let control;
  if (kind === "select") {
    control = el("select", { id });
    for (const option of schema.enum) control.appendChild(el("option", { value: String(option) }, String(option)));
    control.value = String(value ?? "");
  } else if (kind === "number") {
    const integer = schema.type === "integer";
    const step = schema.multipleOf ?? (integer ? 1 : "any");
    control = el("input", { id, type: "number", step, min: schema.minimum ?? schema.exclusiveMinimum, max: schema.maximum ?? schema.exclusiveMaximum });
    control.value = value ?? "";
    const { exclusiveMinimum: low, exclusiveMaximum: high } = schema;
    if (low !== undefined || high !== undefined) {  // min/max attributes include the bound itself
      const check = () => {
        const number = Number(control.value);
        control.setCustomValidity(control.value !== "" && (number <= low || number >= high)
          ? `must be ${number <= low ? `more than ${low}` : `less than ${high}`}` : "");
      };
      control.addEventListener("input", check);
      check();
    }
  } else if (kind === "checkbox") {
    control = el("input", { id, type: "checkbox" });
    control.checked = Boolean(value);
  } else if (kind === "textarea") {
    control = el("textarea", { id, rows: 2 });
    control.value = value ?? "";
  } else {
    control = el("input", { id, type: "text", spellcheck: "false" });
    control.value = kind === "json" && typeof value !== "string" && value !== undefined ? JSON.stringify(value) : (value ?? "");
    if (kind === "text" && schema.minLength) control.minLength = schema.minLength;
    if (kind === "seed") {
      const random = (schema.seed.random ?? []).map(String);
      const negative = (schema.anyOf ?? []).some((member) => member.type === "integer" && member.minimum < 0);
      control.pattern = `^(${negative ? "-?" : ""}\\d+|${random.map((r) => r.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")).join("|")})$`;
      control.inputMode = "numeric";
    }
  }
  return control;
}

function readControl(kind, control, schema) {
  if (kind === "checkbox") return control.checked;
  const text = control.value;
  if (kind === "select") return schema.enum.find((option) => String(option) === text);
  if (kind === "number") return text === "" ? undefined : Number(text);
  if (kind === "seed") return /^-?\d+$/.test(text) ? Number(text) : text;
  if (kind === "json") { try { return JSON.parse(text); } catch { return text; } }
  return text;
}

/** Build the form into ``container``; returns {read(): the workflow with the form's values, showErrors(nodeErrors)}. */
export function buildForm(container, doc, catalog, { upload, edited }) {
  container.replaceChildren();
  const fields = [];  // {node, name, kind, control, schema, present, initial, errorText, fieldset}
  const fieldsets = new Map();
  for (const [nodeId, node] of Object.entries(doc.nodes)) {
    const spec = catalog[node.type];
    const fieldset = el("fieldset", { "data-node": nodeId });
    const legend = el("legend", {}, `${nodeId} `);
    legend.appendChild(el("span", { class: "type" }, node.type));
    fieldset.appendChild(legend);
    if (typeof node.title === "string" && node.title) fieldset.appendChild(el("p", { class: "hint" }, node.title));
    const nodeError = el("p", { class: "error-text", id: `node-error-${++counter}` });
    fieldset.appendChild(nodeError);
    if (!spec) {
      fieldsets.set(nodeId, { fieldset, nodeError });
      nodeError.textContent = `unknown node type ${node.type}: the server will say what it expected`;
      nodeError.dataset.keep = "1";
      container.appendChild(fieldset);
      continue;
    }
    const before = fields.length;
    for (const [name, input] of Object.entries(spec.inputs)) {
      const current = node.inputs?.[name];
      if (input.kind !== "literal" || isLink(current)) continue;
      const schema = input.schema ?? {};
      const present = current !== undefined && node.inputs && name in node.inputs;
      const value = present ? current : input.default;
      const kind = widgetKind(name, schema);
      const id = `f${++counter}`;
      const field = el("div", { class: "field" });
      const label = el("label", { for: id }, schema.title || name);
      field.appendChild(label);
      const control = makeControl(kind, id, name, schema, value);
      control.name = `${nodeId}.${name}`;
      if (input.required) control.required = true;
      const described = [];
      const row = el("div", { class: "row" });
      row.appendChild(control);
      if (kind === "seed") {
        const again = el("button", { type: "button", "aria-label": `new seed for ${nodeId}.${name}` }, "new seed");
        const top = Math.min(schema.seed.maximum ?? SAFE_SEED, SAFE_SEED);
        again.addEventListener("click", () => { control.value = String(Math.floor(Math.random() * top)); });
        row.appendChild(again);
      }
      if (schema.upload) {
        const picker = el("input", { type: "file", accept: "image/*", "aria-label": `upload an image for ${nodeId}.${name}` });
        picker.addEventListener("change", async () => {
          if (!picker.files.length) return;
          const stored = await upload(picker.files[0], errorText);
          if (stored) {
            control.value = stored;
            control.dispatchEvent(new Event("input"));
          }
        });
        row.appendChild(picker);
      }
      field.appendChild(row);
      const hintText = [schema.description, boundsText(schema)].filter(Boolean).join(" · ");
      if (hintText) {
        const hint = el("p", { class: "hint", id: `${id}-hint` }, hintText);
        described.push(hint.id);
        field.appendChild(hint);
      }
      const errorText = el("p", { class: "error-text", id: `${id}-error`, hidden: "" });
      field.appendChild(errorText);
      if (described.length) control.setAttribute("aria-describedby", described.join(" "));
      fieldset.appendChild(field);
      const entry = { nodeId, name, kind, control, schema, present, initial: value, errorText, described };
      fields.push(entry);
      const clear = () => { clearError(entry); edited?.(nodeId); };
      control.addEventListener("input", clear);
      control.addEventListener("change", clear);
    }
    if (fields.length === before) continue;  // nothing to edit: its problems go to the list above the form
    fieldsets.set(nodeId, { fieldset, nodeError });
    container.appendChild(fieldset);
  }

  function clearError(f) {
    f.errorText.hidden = true;
    f.control.removeAttribute("aria-invalid");
    f.control.setAttribute("aria-describedby", f.described.join(" "));
  }

  return {
    read() {
      const out = structuredClone(doc);
      for (const f of fields) {
        const value = readControl(f.kind, f.control, f.schema);
        if (value === undefined) continue;
        if (f.present || !same(value, f.initial)) (out.nodes[f.nodeId].inputs ??= {})[f.name] = value;
      }
      return out;
    },
    /** Put each problem next to the input (or on the node) it names; returns what named nothing on this form. */
    showErrors(nodeErrors) {
      fields.forEach(clearError);
      for (const { fieldset, nodeError } of fieldsets.values()) { fieldset.classList.remove("error"); if (!nodeError.dataset.keep) nodeError.textContent = ""; }
      const elsewhere = [];
      let first = null;
      for (const [nodeId, issues] of Object.entries(nodeErrors ?? {})) {
        for (const issue of issues) {
          const field = fields.find((f) => f.nodeId === nodeId && f.name === issue.input);
          const text = describeIssue(issue);
          if (field) {
            field.errorText.textContent = text;
            field.errorText.hidden = false;
            field.control.setAttribute("aria-invalid", "true");
            field.control.setAttribute("aria-describedby", [...field.described, field.errorText.id].join(" "));
            first ??= field.control;
          } else if (fieldsets.has(nodeId)) {
            const { nodeError } = fieldsets.get(nodeId);
            nodeError.textContent = [nodeError.textContent, issue.input ? `${issue.input}: ${text}` : text].filter(Boolean).join(" · ");
          } else {
            elsewhere.push({ nodeId, issue });
          }
          fieldsets.get(nodeId)?.fieldset.classList.add("error");
        }
      }
      first?.focus();
      return elsewhere;
    },
  };
}

function boundsText(schema) {
  const parts = [];
  if (schema.minimum !== undefined) parts.push(`≥ ${schema.minimum}`);
  if (schema.exclusiveMinimum !== undefined) parts.push(`> ${schema.exclusiveMinimum}`);
  if (schema.maximum !== undefined) parts.push(`≤ ${schema.maximum}`);
  if (schema.exclusiveMaximum !== undefined) parts.push(`< ${schema.exclusiveMaximum}`);
  if (schema.multipleOf !== undefined) parts.push(`multiple of ${schema.multipleOf}`);
  return parts.join(", ");
}

export function describeIssue(issue) {
  const bits = [issue.message];
  if (issue.expected !== undefined && issue.expected !== null) bits.push(`expected ${typeof issue.expected === "string" ? issue.expected : JSON.stringify(issue.expected)}`);
  if (issue.received !== undefined && issue.received !== null) bits.push(`received ${JSON.stringify(issue.received)}`);
  return bits.join("; ");
}
