"""ComfyUI's UI format → its API format, one rule at a time (see nodes/comfy/ui_format.py)."""
import pytest

from graphflow.errors import WorkflowFormatError, WorkflowInvalid
from graphflow.validate import validate
from graphflow.workflow import Link
from nodes.comfy.ui_format import read_ui_workflow, ui_to_prompt, widget_inputs

from .toypack import registry, txt2img_prompt, txt2img_ui, ui_node


def node_of(document: dict, node_id: int) -> dict:
    return next(n for n in document["nodes"] if n["id"] == node_id)


def test_the_default_txt2img_gives_the_api_prompt_comfyui_queues():
    prompt = ui_to_prompt(txt2img_ui(), "w.json", registry())
    expected = txt2img_prompt()
    assert {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in expected.items()}
    assert prompt["4"]["_meta"]["title"] == "Load Checkpoint" and prompt["5"]["_meta"]["title"] == "Empty"


def test_the_reader_gives_a_valid_workflow_with_comfyuis_ids():
    workflow = read_ui_workflow(txt2img_ui(), "w.json", registry())
    assert sorted(workflow.nodes) == ["3", "4", "5", "8", "9"]
    assert workflow.nodes["8"].inputs["vae"] == Link("4", "VAE")
    validate(workflow, registry())
    assert read_ui_workflow(txt2img_prompt(), "p", registry()) is None
    assert read_ui_workflow({"graphflow": 1, "nodes": []}, "g", registry()) is None


def test_widget_values_follow_the_widget_order_and_skip_the_seeds_control_value():
    assert widget_inputs([7, "fixed", 30, 6.5], ["seed", "steps", "cfg"]) == {"seed": 7, "steps": 30, "cfg": 6.5}
    # no control value saved (older workflows, or one removed by hand): nothing is skipped
    assert widget_inputs([7, 30, 6.5], ["seed", "steps", "cfg"]) == {"seed": 7, "steps": 30, "cfg": 6.5}
    # "fixed" after an input that is not a seed is that input's own value
    assert widget_inputs(["a", "fixed"], ["name", "mode"]) == {"name": "a", "mode": "fixed"}


def test_trailing_ui_only_values_are_ignored_and_missing_ones_default():
    assert widget_inputs(["example.png", "image"], ["image"]) == {"image": "example.png"}
    assert widget_inputs([640], ["width", "height"]) == {"width": 640}
    assert widget_inputs({"height": 768, "upload": "image"}, ["width", "height"]) == {"height": 768}


def test_a_widget_converted_to_an_input_takes_its_link():
    document = txt2img_ui()
    empty = node_of(document, 5)
    empty["outputs"].append({"name": "steps_out", "type": "INT", "links": [6]})
    sampler = node_of(document, 3)
    sampler["inputs"].append({"name": "steps", "type": "INT", "link": 7, "widget": {"name": "steps"}})
    document["nodes"].append(ui_node(11, "PrimitiveNode", [42, "fixed"], outputs=[("INT", "INT")]))
    document["links"].append([7, 11, 0, 3, 2, "INT"])
    prompt = ui_to_prompt(document, "w", registry())
    assert prompt["3"]["inputs"]["steps"] == 42  # the primitive's value, not the stale widget value 20
    assert "11" not in prompt


def test_reroutes_pass_their_input_through_and_notes_are_ignored():
    document = txt2img_ui()
    document["nodes"] += [ui_node(20, "Reroute", inputs=[("", "*", 10)], outputs=[("", "VAE")]),
                          ui_node(21, "Reroute", inputs=[("", "*", 11)], outputs=[("", "VAE")]),
                          ui_node(22, "Note", ["remember the VAE"]), ui_node(23, "MarkdownNote", ["# hi"])]
    node_of(document, 8)["inputs"][1]["link"] = 12
    document["links"] += [[10, 4, 2, 20, 0, "VAE"], [11, 20, 0, 21, 0, "VAE"], [12, 21, 0, 8, 1, "VAE"]]
    prompt = ui_to_prompt(document, "w", registry())
    assert prompt["8"]["inputs"]["vae"] == ["4", 2]
    assert set(prompt) == {"3", "4", "5", "8", "9"}


def test_a_muted_node_is_dropped_with_its_links_and_validation_names_what_it_fed():
    document = txt2img_ui()
    node_of(document, 5)["mode"] = 2
    workflow = read_ui_workflow(document, "w", registry())
    assert "5" not in workflow.nodes and "latent_image" not in workflow.nodes["3"].inputs
    with pytest.raises(WorkflowInvalid, match=r"3\.latent_image: missing required input.*\[comfy\.Sampler\]"):
        validate(workflow, registry())


def bypassed_shift(slot_types=("MODEL", "LATENT")) -> dict:
    """txt2img with a bypassed Shift between Empty and the sampler (Shift's inputs: model, samples)."""
    document = txt2img_ui()
    shift = ui_node(30, "Shift", [3], inputs=[("model", slot_types[0], 31), ("samples", slot_types[1], 32)],
                    outputs=[("LATENT", "LATENT")], mode=4)
    document["nodes"].append(shift)
    document["links"] += [[31, 4, 0, 30, 0, "MODEL"], [32, 5, 0, 30, 1, "LATENT"], [33, 30, 0, 3, 1, "LATENT"]]
    node_of(document, 3)["inputs"][1]["link"] = 33
    return document


def test_a_bypassed_node_is_rewired_through_its_input_of_the_same_type():
    prompt = ui_to_prompt(bypassed_shift(), "w", registry())
    assert "30" not in prompt and prompt["3"]["inputs"]["latent_image"] == ["5", 0]


def test_a_bypassed_node_prefers_the_input_at_the_outputs_slot_when_its_type_matches():
    document = bypassed_shift(slot_types=("LATENT", "LATENT"))  # both inputs LATENT: slot 0 (model) wins
    assert ui_to_prompt(document, "w", registry())["3"]["inputs"]["latent_image"] == ["4", 0]


def test_a_bypassed_node_without_an_input_of_that_type_feeds_nothing():
    document = bypassed_shift(slot_types=("MODEL", "IMAGE"))
    assert "latent_image" not in ui_to_prompt(document, "w", registry())["3"]["inputs"]


def test_links_in_the_object_form_of_newer_saves():
    document = txt2img_ui()
    document["links"] = [dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link))
                         for link in document["links"]]
    assert ui_to_prompt(document, "w", registry())["8"]["inputs"]["vae"] == ["4", 2]


@pytest.mark.parametrize("change", [
    lambda d: d["nodes"].append(ui_node(40, "workflow>my group")),
    lambda d: d["nodes"].append(ui_node(40, "workflow/my group")),
    lambda d: (d.setdefault("definitions", {}).setdefault("subgraphs", []).append({"id": "9f2c-uuid"}),
               d["nodes"].append(ui_node(40, "9f2c-uuid"))),
])
def test_group_nodes_and_subgraphs_are_refused_by_name(change):
    document = txt2img_ui()
    change(document)
    with pytest.raises(WorkflowFormatError, match=r"w\.json: ComfyUI node '.*' \(id 40\) is a group node or subgraph"):
        ui_to_prompt(document, "w.json", registry())


def test_unsupported_classes_and_malformed_parts_are_named():
    document = txt2img_ui()
    document["nodes"] += [ui_node(12, "FancyNode"), ui_node(13, "OtherNode")]
    with pytest.raises(WorkflowFormatError) as caught:
        ui_to_prompt(document, "w", registry())
    assert "'FancyNode' (id 12) is not supported" in str(caught.value) and "'OtherNode' (id 13)" in str(caught.value)
    with pytest.raises(WorkflowFormatError, match="needs an id and a type"):
        ui_to_prompt({"nodes": [{"id": 1}], "links": []}, "w", registry())
    with pytest.raises(WorkflowFormatError, match="a UI-format link is"):
        ui_to_prompt({"nodes": [], "links": [[1, 2]]}, "w", registry())
