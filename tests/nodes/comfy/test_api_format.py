"""ComfyUI's API format read as a graphflow workflow (ids kept, comfy.X types, links by output index) and back."""
import pytest

from graphflow.documents import read_document
from graphflow.errors import WorkflowFormatError
from graphflow.validate import validate
from graphflow.workflow import Link
from nodes.comfy.api_format import is_link, prompt_to_workflow, read_api_prompt, workflow_to_prompt

from .toypack import registry, txt2img_prompt


def test_ids_types_literals_titles_and_links_by_output_position():
    workflow = prompt_to_workflow(txt2img_prompt(), "p.json", registry())
    assert list(workflow.nodes) == ["4", "5", "3", "8", "9"]
    assert workflow.nodes["4"].type == "comfy.Loader" and workflow.nodes["4"].title == "Load Checkpoint"
    assert workflow.nodes["3"].inputs["model"] == Link("4", "MODEL")
    assert workflow.nodes["8"].inputs["vae"] == Link("4", "VAE")
    assert workflow.nodes["3"].inputs["seed"] == 156680208700286
    validate(workflow, registry())  # a valid workflow of the stand-in types


def test_integer_ids_become_strings():
    prompt = {1: {"class_type": "Empty", "inputs": {}}, 2: {"class_type": "Sampler", "inputs": {"latent_image": [1, 0]}}}
    workflow = prompt_to_workflow(prompt, "p", registry())
    assert workflow.nodes["2"].inputs["latent_image"] == Link("1", "LATENT")


def test_the_link_rule_is_comfyuis():
    assert is_link(["4", 0]) and is_link([4, 2])
    assert not is_link(["4", "0"]) and not is_link(["a", 1, 2]) and not is_link("4") and not is_link(["4", True])


def test_an_unsupported_class_is_named_with_its_id_and_every_problem_at_once():
    prompt = txt2img_prompt()
    prompt["12"] = {"class_type": "FancyNode", "inputs": {}}
    prompt["8"]["inputs"]["vae"] = ["4", 7]
    with pytest.raises(WorkflowFormatError) as caught:
        prompt_to_workflow(prompt, "p.json", registry())
    message = str(caught.value)
    assert message.startswith("p.json: ")
    assert "ComfyUI node 'FancyNode' (id 12) is not supported by graphflow" in message
    assert "node 8 (Decode) input 'vae' links to output 7 of node 4 (Loader), which has outputs 0 MODEL, 1 CLIP, 2 VAE" in message


def test_a_link_to_a_missing_node_is_left_to_validation_which_names_the_node():
    prompt = txt2img_prompt()
    prompt["8"]["inputs"]["samples"] = ["99", 0]
    with pytest.raises(Exception, match=r"8\.samples: link to a node that does not exist"):
        validate(prompt_to_workflow(prompt, "p", registry()), registry())


def test_the_reader_recognises_only_api_prompts():
    reg = registry()
    assert read_api_prompt({"graphflow": 1, "nodes": {}}, "d", reg) is None
    assert read_api_prompt({"nodes": [], "links": []}, "d", reg) is None
    assert read_api_prompt({}, "d", reg) is None
    assert read_api_prompt(txt2img_prompt(), "d", reg) is not None


def test_the_default_registry_reads_api_prompts_through_the_pack():
    from graphflow.registry import default_registry

    with pytest.raises(WorkflowFormatError, match=r"ComfyUI node 'FancyNode' \(id 1\) is not supported by graphflow"):
        read_document({"1": {"class_type": "FancyNode", "inputs": {}}}, "d", default_registry())


def test_back_to_an_api_prompt_round_trips():
    prompt = txt2img_prompt()
    again = workflow_to_prompt(prompt_to_workflow(prompt, "p", registry()), registry())
    assert {k: (v["class_type"], v["inputs"]) for k, v in again.items()} == {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()}
    assert again["4"]["_meta"] == {"title": "Load Checkpoint"} and again["5"]["_meta"] == {"title": "Empty"}


def test_a_workflow_with_a_non_comfyui_node_has_no_api_prompt():
    workflow = prompt_to_workflow(txt2img_prompt(), "p", registry())
    document = workflow.to_json()
    document["nodes"]["5"]["type"] = "Plain"
    assert workflow_to_prompt(document, registry()) is None
