"""A server's pixel bound holds for what a workflow MAKES, not only for its literal width and height: a node about
to make an image or latent past ``Settings.limits["pixels"]`` fails, naming itself and the input that made it
that big, before it allocates anything; the nodes before it ran, nothing after it did, no file was written."""
import pytest

from graphflow import Engine, Settings
from graphflow.errors import NodeFailed

from .conftest import ASSETS

MAX_PIXELS = 2048 * 2048 * 4  # the server's default --max-pixels


def link(node, output):
    return {"from": node, "output": output}


def image_chain(*steps):
    """input.png (64×64) → each (type, inputs) step in turn on its "image" output → SaveImage."""
    nodes = {"image": {"type": "LoadImage", "inputs": {"name": "input.png"}}}
    previous = "image"
    for index, (node_type, inputs) in enumerate(steps):
        nodes[f"step{index}"] = {"type": node_type, "inputs": {"image": link(previous, "image"), **inputs}}
        previous = f"step{index}"
    nodes["save"] = {"type": "SaveImage", "inputs": {"images": link(previous, "image")}}
    return {"graphflow": 1, "nodes": nodes}


def latent_chain(*scales, with_vae=True):
    nodes = {"ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd"}},
             "empty": {"type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "vae": link("ckpt", "vae")}}}
    previous = "empty"
    for index, scale in enumerate(scales):
        vae = {"vae": link("ckpt", "vae")} if with_vae else {}
        nodes[f"step{index}"] = {"type": "LatentUpscale", "inputs": {"latent": link(previous, "latent"),
                                                                      "scale_by": scale, **vae}}
        previous = f"step{index}"
    nodes["decode"] = {"type": "VAEDecode", "inputs": {"vae": link("ckpt", "vae"), "latent": link(previous, "latent")}}
    nodes["save"] = {"type": "SaveImage", "inputs": {"images": link("decode", "image")}}
    return {"graphflow": 1, "nodes": nodes}


@pytest.fixture
def bounded(tmp_path):
    settings = Settings(models_dir=tmp_path / "models", input_dir=tmp_path / "inputs", output_dir=tmp_path / "outputs",
                        asset_dirs=(ASSETS,), limits={"pixels": MAX_PIXELS})
    return Engine(settings=settings)


def refused(engine, workflow, node, input_name):
    with pytest.raises(NodeFailed) as failed:
        engine.run(workflow)
    error = failed.value
    assert (error.node, error.input) == (node, input_name), error
    assert "over this server's limit" in error.message and f"{MAX_PIXELS}" in error.message
    assert node not in error.report.executed and "save" not in error.report.executed
    assert not list(engine.settings.output_dir.rglob("*.png"))
    return error


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workflow, node, input_name", [
    # issue 19: ImageScale scale_by 16, 16, 2 from 64 px wrote an 8192×8192 PNG; 64 → 1024 is fine, 16384 is not
    (image_chain(("ImageScale", {"scale_by": 16.0}), ("ImageScale", {"scale_by": 16.0}),
                 ("ImageScale", {"scale_by": 2.0})), "step1", "scale_by"),
    (image_chain(("ImageScale", {"width": 1024}), ("ImageScale", {"width": 16384})), "step1", "width"),
    # PadImageForOutpaint 4096 per side, three times: the first already makes an 8256×8256 canvas
    (image_chain(*[("PadImageForOutpaint", {"left": 4096, "top": 4096, "right": 4096, "bottom": 4096})] * 3),
     "step0", "left"),
    (image_chain(("PadImageForOutpaint", {"left": 512, "top": 512}),
                 ("PadImageForOutpaint", {"bottom": 4096, "right": 4000})), "step1", "bottom"),
    # LatentUpscale scale_by 8, three times (tiny-sd's factor is 2: 64 → 512 → 4096 px fine, 32768 not)
    (latent_chain(8.0, 8.0, 8.0), "step2", "scale_by"),
])
def test_a_workflow_that_grows_past_the_bound_stops_at_the_node_that_would(bounded, workflow, node, input_name):
    refused(bounded, workflow, node, input_name)


@pytest.mark.timeout(300)
def test_without_a_vae_a_latent_counts_with_the_largest_factor(bounded):
    # 32 → 256 → 2048 latent pixels a side: ×8 (SD's factor, assumed) = 16384 > 8192 image pixels a side
    refused(bounded, latent_chain(8.0, 8.0, with_vae=False), "step1", "scale_by")


@pytest.mark.timeout(300)
def test_within_the_bound_everything_runs(bounded):
    report = bounded.run(image_chain(("ImageScale", {"scale_by": 4.0}), ("PadImageForOutpaint", {"left": 8})))
    assert "save" in report.executed


def test_no_bound_without_a_limit(tmp_path):
    """The CLI sets no limits: a local user may make what their machine can hold."""
    settings = Settings(models_dir=tmp_path / "m", input_dir=tmp_path / "i", output_dir=tmp_path / "o",
                        asset_dirs=(ASSETS,))
    assert settings.limits == {}
    report = Engine(settings=settings).run(image_chain(("ImageScale", {"scale_by": 16.0})))
    assert "save" in report.executed


# ------------------------------------------------------------------------------------- the ComfyUI node pack


def comfy_image_chain(*steps):
    """A ComfyUI API-format prompt: LoadImage input.png → each (class, inputs) step on the image → SaveImage."""
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}}}
    previous = "1"
    for index, (class_type, inputs) in enumerate(steps, start=2):
        prompt[str(index)] = {"class_type": class_type, "inputs": {"image": [previous, 0], **inputs}}
        previous = str(index)
    prompt["99"] = {"class_type": "SaveImage", "inputs": {"images": [previous, 0], "filename_prefix": "big"}}
    return prompt


def comfy_latent_chain(*steps):
    prompt = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}}}
    previous = "1"
    for index, (class_type, inputs) in enumerate(steps, start=2):
        prompt[str(index)] = {"class_type": class_type, "inputs": {"samples": [previous, 0], **inputs}}
        previous = str(index)
    prompt["98"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}}
    prompt["99"] = {"class_type": "VAEDecode", "inputs": {"samples": [previous, 0], "vae": ["98", 2]}}
    prompt["100"] = {"class_type": "SaveImage", "inputs": {"images": ["99", 0], "filename_prefix": "big"}}
    return prompt


@pytest.mark.parametrize("steps, node, input_name", [
    ((("ImageScaleBy", {"upscale_method": "nearest-exact", "scale_by": 8.0}),) * 3, "4", "scale_by"),
    ((("ImagePadForOutpaint", {"left": 4096, "top": 4096, "right": 4096, "bottom": 4096, "feathering": 0}),), "2", "left"),
    ((("ImageScale", {"upscale_method": "nearest-exact", "width": 16384, "height": 16384, "crop": "disabled"}),), "2", "width"),
])
def test_the_comfyui_packs_image_nodes_are_bounded_too(bounded, steps, node, input_name):
    refused(bounded, comfy_image_chain(*steps), node, input_name)


@pytest.mark.parametrize("steps, node, input_name", [
    ((("LatentUpscaleBy", {"upscale_method": "nearest-exact", "scale_by": 8.0}),) * 2, "3", "scale_by"),
    ((("RepeatLatentBatch", {"amount": 64}),) * 2, "3", "amount"),
])
def test_the_comfyui_packs_latent_nodes_are_bounded_too(bounded, steps, node, input_name):
    refused(bounded, comfy_latent_chain(*steps), node, input_name)
