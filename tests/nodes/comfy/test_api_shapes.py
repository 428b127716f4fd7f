"""ComfyUI's JSON shapes from graphflow's records: input specs, file entries, history entries, prompt errors."""
from nodes.comfy import api_shapes as shapes


def test_widget_specs_carry_default_bounds_step_and_choices():
    assert shapes.widget_spec({"type": "integer", "default": 20, "minimum": 1, "maximum": 10000}) == \
        ["INT", {"default": 20, "min": 1, "max": 10000, "step": 1}]
    assert shapes.widget_spec({"type": "integer", "default": 512, "multipleOf": 8}) == ["INT", {"default": 512, "step": 8}]
    assert shapes.widget_spec({"type": "number", "default": 1.0, "exclusiveMinimum": 0, "step": 0.05}) == \
        ["FLOAT", {"default": 1.0, "min": 0, "step": 0.05}]
    assert shapes.widget_spec({"enum": ["normal", "karras"], "default": "normal"}) == [["normal", "karras"], {"default": "normal"}]
    assert shapes.widget_spec({"const": "only"}) == [["only"], {}]
    assert shapes.widget_spec({"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}) == \
        ["INT", {"default": None, "step": 1}]
    assert shapes.widget_spec({"type": "string", "description": "what to draw"}) == ["STRING", {"tooltip": "what to draw"}]


def test_output_files_become_filename_subfolder_and_type():
    assert shapes.file_entry({"url": "/outputs/a/b/ComfyUI_00001_.png", "width": 8}) == \
        {"filename": "ComfyUI_00001_.png", "subfolder": "a/b", "type": "output"}
    assert shapes.file_entry({"url": "/outputs/x%20y.png"}) == {"filename": "x y.png", "subfolder": "", "type": "output"}
    assert shapes.file_entry({"url": "/outputs/temp/ComfyUI_temp_00001_.png"}) == \
        {"filename": "ComfyUI_temp_00001_.png", "subfolder": "", "type": "temp"}  # PreviewImage's folder
    assert shapes.ui_output({"images": [{"url": "/outputs/p.png"}], "text": ["hi"]}) == \
        {"images": [{"filename": "p.png", "subfolder": "", "type": "output"}], "text": ["hi"]}
    assert shapes.ui_output({"value": 3}) == {"value": 3}  # a non-file result as the node returned it


PROMPT = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
    "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "steps": 20}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
    "10": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
}


def test_dependent_outputs_are_the_output_nodes_downstream():
    found = shapes.dependents(PROMPT, ["9", "10"])
    assert found["4"] == {"9", "10"} and found["9"] == {"9"} and "nowhere" not in found


def test_issues_become_comfyuis_node_errors_under_the_failed_validation_error():
    issues = {"3": [{"input": "steps", "message": "Input should be less than or equal to 10000", "expected": "≤ 10000",
                     "received": 20000, "code": "bad_value"},
                    {"input": "cfg", "message": "missing", "expected": None, "received": None, "code": "missing_input"}]}
    body = shapes.prompt_errors(issues, PROMPT, ["9", "10"])
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    entry = body["node_errors"]["3"]
    assert entry["class_type"] == "KSampler" and entry["dependent_outputs"] == ["10", "9"]
    assert [e["type"] for e in entry["errors"]] == ["value_bigger_than_max", "required_input_missing"]
    assert entry["errors"][0]["details"].startswith("steps: Input should be less than or equal to 10000")
    assert entry["errors"][0]["extra_info"] == {"input_name": "steps", "received_value": 20000}


def test_a_document_problem_is_an_invalid_prompt_without_node_errors():
    problem = {"": [{"input": None, "message": "prompt: ComfyUI node 'Foo' (id 7) is not supported by graphflow",
                     "code": "bad_document"}]}
    body = shapes.prompt_errors(problem, PROMPT, ["9"])
    assert body == {"error": shapes.error("invalid_prompt", problem[""][0]["message"], problem[""][0]["message"]),
                    "node_errors": {}}


def test_history_entries_tell_success_and_failure_as_comfyui_does():
    job = {"id": "p1", "status": "failed", "started": 10.0, "finished": 11.5, "cached": ["4"], "executed": ["3"],
           "outputs": {}, "error": {"node": "8", "type": "RuntimeError", "message": "out of memory"},
           "client": {"number": 7, "prompt": PROMPT, "extra_data": {"client_id": "c"}, "outputs": ["9"]}}
    entry = shapes.history_entry(job)
    assert entry["prompt"] == [7, "p1", PROMPT, {"client_id": "c"}, ["9"]]
    assert entry["status"]["status_str"] == "error" and not entry["status"]["completed"]
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_error" and data["node_type"] == "VAEDecode" and data["timestamp"] == 11500
    assert data["exception_message"] == "out of memory" and data["executed"] == ["3"]
    cancelled = shapes.history_entry({**job, "status": "cancelled", "error": None})
    assert cancelled["status"]["messages"][-1][0] == "execution_interrupted"
