"""The JSON shapes of ComfyUI's HTTP API, built from graphflow's own records: pure functions, no server.

ComfyUI's names and shapes are facts its clients rely on (``object_info`` input specs, queue items
``[number, prompt_id, prompt, extra_data, outputs]``, history entries, ``node_errors`` per node id); everything
here derives them from a node spec, a job as :class:`graphflow.server.store.JobStore` returns it, or graphflow's
validation issues.
"""
from __future__ import annotations

import posixpath
from typing import Any, Iterable, Mapping
from urllib.parse import unquote

from graphflow.node import NodeSpec

PREFIX = "comfy."  # a ComfyUI class X is the graphflow node type comfy.X
OUTPUTS_URL = "/outputs/"
TEMP = "temp"  # the outputs' sub-folder PreviewImage writes to: ComfyUI's "temp" folder type
# Widget options a pack node may carry in its Field's json_schema_extra, handed to ComfyUI clients as they are.
WIDGET_OPTIONS = ("step", "round", "multiline", "dynamicPrompts", "control_after_generate", "image_upload", "display")
WIDGET_TYPES = {"integer": "INT", "number": "FLOAT", "string": "STRING", "boolean": "BOOLEAN"}


def class_name(node_type: str) -> str:
    """The ComfyUI class of a graphflow node type (``comfy.KSampler`` → ``KSampler``; others keep their name)."""
    return node_type[len(PREFIX):] if node_type.startswith(PREFIX) else node_type


# -- /object_info ----------------------------------------------------------------------------------------------
def object_info(spec: NodeSpec, settings: Any = None) -> dict[str, Any]:
    """One node type as ComfyUI's ``GET /object_info`` describes a class; with ``settings``, a file input lists
    the names that would resolve (ComfyUI's combo of model or image files)."""
    properties = spec.literals.model_json_schema().get("properties", {})
    files = file_choices(spec, settings) if settings is not None else {}
    required: dict[str, list] = {}
    optional: dict[str, list] = {}
    for name in spec.input_order:
        socket = spec.sockets.get(name)
        if socket is not None:
            entry = [socket.type, {"tooltip": socket.description}] if socket.description else [socket.type]
            (optional if socket.optional else required)[name] = entry
        elif name in files:
            required[name] = [files[name], {"tooltip": properties.get(name, {}).get("description", "")}]
        else:  # ComfyUI's widgets are required inputs with defaults
            required[name] = widget_spec(properties.get(name, {}))
    inputs: dict[str, Any] = {"required": required}
    if optional:
        inputs["optional"] = optional
    name = class_name(spec.name)
    return {
        "input": inputs,
        "input_order": {key: list(value) for key, value in inputs.items()},
        "output": list(spec.outputs.values()),
        "output_is_list": [False] * len(spec.outputs),
        "output_name": list(spec.outputs),
        "name": name,
        "display_name": name,
        "description": spec.description,
        "python_module": spec.function.__module__,
        "category": spec.category,
        "output_node": spec.output_node,
    }


def widget_spec(schema: Mapping[str, Any]) -> list:
    """A literal input's JSON schema as a ComfyUI input spec: ``["INT", {"default", "min", "max", "step"}]``,
    ``[[choice, ...], {"default"}]`` for an enum, ``["STRING", {...}]``, ``["FLOAT", {...}]``, ``["BOOLEAN", {...}]``."""
    options: dict[str, Any] = {}
    if "default" in schema:
        options["default"] = schema["default"]
    for bound, key in (("minimum", "min"), ("exclusiveMinimum", "min"), ("maximum", "max"), ("exclusiveMaximum", "max")):
        if bound in schema:
            options[key] = schema[bound]
    if "multipleOf" in schema:
        options["step"] = schema["multipleOf"]
    options.update({key: schema[key] for key in WIDGET_OPTIONS if key in schema})
    if schema.get("description"):
        options["tooltip"] = schema["description"]
    if "enum" in schema or "const" in schema:
        return [list(schema.get("enum", [schema.get("const")])), options]
    kind = schema.get("type")
    if kind is None:  # Optional[X]: the non-null branch says what it is
        kind = next((branch.get("type") for branch in schema.get("anyOf", ()) if branch.get("type") != "null"), None)
    if kind == "integer":
        options.setdefault("step", 1)
    return [WIDGET_TYPES.get(kind, "*"), options]


PROBE = ".graphflow-object-info-probe"  # a file name no folder holds


def file_choices(spec: NodeSpec, settings: Any) -> dict[str, list[str]]:
    """Input name → the names a node's file input accepts, asked of the node's own preflight: given a name that
    does not exist, it reports the input's problem with the names that would resolve (``FileProblem.available``)."""
    if spec.preflight is None:
        return {}
    fields = spec.literals.model_fields
    defaults = {name: field.get_default(call_default_factory=True) for name, field in fields.items() if not field.is_required()}
    choices: dict[str, list[str]] = {}
    for name, field in fields.items():
        if field.annotation is not str:
            continue
        try:
            problems = spec.preflight({**defaults, **{n: PROBE for n in fields if n not in defaults}, name: PROBE}, settings)
        except Exception:  # a preflight that cannot judge the probe: the input stays a STRING
            continue
        for problem in problems:
            if problem.input == name and problem.available is not None:
                choices[name] = [choice for choice in problem.available if choice != PROBE]
    return choices


# -- queue and history -----------------------------------------------------------------------------------------
def queue_item(job: Mapping[str, Any]) -> list:
    """A job submitted through POST /prompt as ComfyUI lists it: ``[number, prompt_id, prompt, extra_data, outputs]``."""
    client = job["client"]
    return [client["number"], job["id"], client["prompt"], client["extra_data"], client["outputs"]]


def file_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A file in graphflow's job outputs (``{"url": "/outputs/sub/x.png", ...}``) as ComfyUI names it:
    ``{"filename", "subfolder", "type"}`` (what ``GET /view`` takes back); ``outputs/temp/`` is type ``temp``."""
    url = entry.get("url")
    if not isinstance(url, str) or not url.startswith(OUTPUTS_URL):
        return dict(entry)
    subfolder, filename = posixpath.split(unquote(url[len(OUTPUTS_URL):]))
    if subfolder == TEMP or subfolder.startswith(TEMP + "/"):
        return {"filename": filename, "subfolder": subfolder[len(TEMP) + 1:], "type": "temp"}
    return {"filename": filename, "subfolder": subfolder, "type": "output"}


def ui_output(result: Any) -> Any:
    """An output node's result as ComfyUI's ``executed`` message and history carry it: files as ``file_entry``."""
    if not isinstance(result, dict):
        return result
    return {key: [file_entry(item) if isinstance(item, dict) else item for item in value] if isinstance(value, list) else value
            for key, value in result.items()}


def millis(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def failure_message(job_id: str, error: Mapping[str, Any] | None, cancelled: bool, node: str | None,
                    node_type: str | None, executed: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """ComfyUI's ``execution_interrupted`` (cancelled, or stopped by a server shutdown) or ``execution_error``.
    graphflow never hands out tracebacks or node inputs: those fields are empty."""
    error = error or {}
    node = error.get("node") or node
    data: dict[str, Any] = {"prompt_id": job_id, "node_id": node, "node_type": node_type, "executed": list(executed)}
    if cancelled or error.get("type") == "Interrupted":
        return "execution_interrupted", data
    data.update(exception_message=error.get("message", ""), exception_type=error.get("type", ""), traceback=[],
                current_inputs={}, current_outputs={})
    return "execution_error", data


def history_entry(job: Mapping[str, Any]) -> dict[str, Any]:
    """A finished job that went through POST /prompt as ComfyUI's ``GET /history`` shows it."""
    item = queue_item(job)
    prompt = item[2]
    outputs = {node: ui_output(result) for node, result in job["outputs"].items()}
    messages: list[list] = [["execution_start", {"prompt_id": job["id"], "timestamp": millis(job["started"])}],
                            ["execution_cached", {"nodes": job["cached"], "prompt_id": job["id"],
                                                  "timestamp": millis(job["started"])}]]
    succeeded = job["status"] == "succeeded"
    if succeeded:
        messages.append(["execution_success", {"prompt_id": job["id"], "timestamp": millis(job["finished"])}])
    else:
        node = (job["error"] or {}).get("node")
        event, data = failure_message(job["id"], job["error"], job["status"] == "cancelled", node,
                                      prompt.get(node, {}).get("class_type") if node else None, job["executed"])
        messages.append([event, {**data, "timestamp": millis(job["finished"])}])
    return {
        "prompt": item,
        "outputs": outputs,
        "status": {"status_str": "success" if succeeded else "error", "completed": succeeded, "messages": messages},
        "meta": {node: {"node_id": node, "display_node": node, "parent_node": None, "real_node_id": node} for node in outputs},
    }


# -- POST /prompt errors ---------------------------------------------------------------------------------------
PROMPT_FAILED = ("prompt_outputs_failed_validation", "Prompt outputs failed validation")
ISSUE_TYPES = {  # graphflow's issue code → ComfyUI's error type and message
    "missing_input": ("required_input_missing", "Required input is missing"),
    "missing_link": ("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]"),
    "type_mismatch": ("return_type_mismatch", "Return type mismatch between linked nodes"),
    "wrong_input_kind": ("invalid_input_type", "Input is a link where a value belongs, or a value where a link belongs"),
    "unknown_input": ("invalid_input_type", "Input is not an input of this node"),
    "missing_file": ("value_not_in_list", "Value not in list"),
    "cycle": ("dependency_cycle", "Dependency cycle detected"),
    "over_limit": ("value_bigger_than_max", "Value bigger than this server's limit"),
}


def error(kind: str, message: str, details: str = "", **extra_info: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def comfy_error(issue: Mapping[str, Any]) -> dict[str, Any]:
    """One graphflow validation issue as one ComfyUI error of ``node_errors[id]["errors"]``."""
    code, text = issue.get("code"), issue.get("message", "")
    kind, message = ISSUE_TYPES.get(code, ("exception_during_validation", "Invalid input"))
    if code == "bad_value":
        if text.startswith("not one of"):
            kind, message = "value_not_in_list", "Value not in list"
        elif "less than" in text:
            kind, message = "value_bigger_than_max", "Value bigger than max"
        elif "greater than" in text:
            kind, message = "value_smaller_than_min", "Value smaller than min"
        else:
            kind, message = "invalid_input_type", "Value is not of the input's type"
    details = text
    if issue.get("expected") is not None or issue.get("received") is not None:
        details += f" (expected {issue.get('expected')}, received {issue.get('received')!r})"
    if issue.get("input"):
        details = f"{issue['input']}: {details}"
    extra = {"input_name": issue.get("input"), "received_value": issue.get("received")}
    return error(kind, message, details, **extra)


def prompt_errors(node_errors: Mapping[str, list], prompt: Mapping[str, Any], output_ids: Iterable[str]) -> dict[str, Any]:
    """graphflow's ``node_errors`` for a prompt (issues by node id, "" for the whole document) as ComfyUI's 400
    body: ``{"error": {type, message, details, extra_info}, "node_errors": {id: {errors, dependent_outputs, class_type}}}``."""
    whole = list(node_errors.get("", ()))
    by_node = {node: issues for node, issues in node_errors.items() if node}
    unknown = next(((node, issue) for node, issues in by_node.items() for issue in issues
                    if issue.get("code") == "unknown_node_type"), None)
    if unknown is not None:
        node, issue = unknown
        message = issue.get("message") or f"Cannot execute because node {issue.get('received')} does not exist."
        top = error("invalid_prompt", message, f"Node ID '#{node}'", node_id=node)
    elif any(issue.get("code") in ("no_output", "not_an_output") for issue in whole):
        top = error("prompt_no_outputs", "Prompt has no outputs", "; ".join(i.get("message", "") for i in whole))
    elif whole and not by_node:
        top = error("invalid_prompt", whole[0].get("message", "invalid prompt"), "; ".join(i.get("message", "") for i in whole))
    else:
        top = error(*PROMPT_FAILED, "; ".join(comfy_error(i)["details"] for issues in by_node.values() for i in issues))
    depending = dependents(prompt, output_ids)
    errors = {node: {"errors": [comfy_error(issue) for issue in issues if issue.get("code") != "unknown_node_type"],
                     "dependent_outputs": sorted(depending.get(node, ())),
                     "class_type": _class_type(prompt, node)}
              for node, issues in by_node.items()}
    return {"error": top, "node_errors": {node: entry for node, entry in errors.items() if entry["errors"]}}


def dependents(prompt: Mapping[str, Any], output_ids: Iterable[str]) -> dict[str, set[str]]:
    """Node id → the output nodes whose results need it (ComfyUI's ``dependent_outputs``)."""
    found: dict[str, set[str]] = {}
    for output in output_ids:
        stack, seen = [output], set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            found.setdefault(node, set()).add(output)
            inputs = prompt.get(node, {}).get("inputs", {}) if isinstance(prompt.get(node), dict) else {}
            stack += [str(value[0]) for value in inputs.values() if isinstance(value, list) and len(value) == 2]
    return found


def _class_type(prompt: Mapping[str, Any], node: str) -> str | None:
    entry = prompt.get(node)
    return entry.get("class_type") if isinstance(entry, dict) else None
