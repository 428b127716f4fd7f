"""comfy.KSampler on SDXL: the pooled prompt embedding and size ids reach the UNet through UNetInputs.predict,
with ComfyUI's defaults (sizes from the whole latent at 8 pixels per latent pixel, a negative that does not take
the positive's sizes, the refiner's aesthetic score 6 / 2.5). Prompts come from graphflow's TextEncode (mixed
into the workflow) and from comfy.CLIPTextEncode, which encodes SDXL's two encoders as ComfyUI does."""
import pytest
import torch

from graphflow import Engine, Settings
from graphflow.errors import NodeInputError
from nodes.comfy.guidance import ComfyDenoiser, entries_of


def link(node, output):
    return {"from": node, "output": output}


def workflow(seed=1, checkpoint="tiny-sdxl", crop_top=None, negative_node="TextEncode"):
    nodes = {
        "4": {"type": "comfy.CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"type": "TextEncode", "inputs": {"text": "a red circle", "clip": link("4", "CLIP")}},
        "7": {"type": negative_node, "inputs": {"text": "blurry", "clip": link("4", "CLIP")}},
        "5": {"type": "comfy.EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"type": "comfy.KSampler", "inputs": {
            "seed": seed, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": link("4", "MODEL"), "positive": link("6", "conditioning"), "negative": link("7", "conditioning"),
            "latent_image": link("5", "LATENT")}},
        "8": {"type": "comfy.VAEDecode", "inputs": {"samples": link("3", "LATENT"), "vae": link("4", "VAE")}},
        "9": {"type": "comfy.PreviewImage", "inputs": {"images": link("8", "IMAGE")}},
    }
    if negative_node != "TextEncode":
        nodes["7"] = {"type": "comfy.CLIPTextEncode", "inputs": {"text": "blurry", "clip": link("4", "CLIP")}}
        nodes["3"]["inputs"]["negative"] = link("7", "CONDITIONING")
    if crop_top is not None:
        image_sized = dict.fromkeys(("original_width", "original_height", "target_width", "target_height"), 0)
        nodes["10"] = {"type": "SDXLSizes", "inputs": {"conditioning": link("6", "conditioning"), "crop_top": crop_top,
                                                       **image_sized}}
        nodes["3"]["inputs"]["positive"] = link("10", "conditioning")
    return {"graphflow": 1, "nodes": nodes}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy-sdxl")
    return Engine(settings=Settings(models_dir=root / "models", input_dir=root / "in", output_dir=root / "out"),
                  check_mutations=True)


def latent(engine, document):
    return engine.run(document).values["3"]["LATENT"].samples


@pytest.mark.parametrize("checkpoint", ["tiny-sdxl", "tiny-sdxl-refiner"])
def test_an_sdxl_prompt_runs_and_seeds_repeat(engine, checkpoint):
    first = latent(engine, workflow(1, checkpoint))
    again = latent(engine, workflow(1, checkpoint, crop_top=0))  # the same ids, through another node
    other = latent(engine, workflow(2, checkpoint))
    assert torch.isfinite(first).all() and first.shape[-2:] == (8, 8)
    assert torch.allclose(first, again, atol=1e-5)
    assert not torch.allclose(first, other, atol=1e-2)
    image = engine.run(workflow(1, checkpoint)).values["8"]["IMAGE"].pixels
    assert image.shape[0] == 1 and torch.isfinite(image).all()


def test_the_size_conditioning_reaches_the_unet(engine):
    assert not torch.allclose(latent(engine, workflow(1)), latent(engine, workflow(1, crop_top=512)), atol=1e-4)


@pytest.mark.parametrize("checkpoint", ["tiny-sdxl", "tiny-sdxl-refiner"])
def test_comfyuis_text_encoder_runs_on_sdxl_with_the_default_sizes(engine, checkpoint):
    values = engine.run(workflow(1, checkpoint, negative_node="comfy.CLIPTextEncode")).values
    negative = values["7"]["CONDITIONING"]
    assert negative.pooled is not None and negative.sizes == {}  # ComfyUI's defaults: the latent's size
    assert torch.isfinite(values["3"]["LATENT"].samples).all()
    again = engine.run(workflow(2, checkpoint, negative_node="comfy.CLIPTextEncode")).values["3"]["LATENT"].samples
    assert not torch.allclose(values["3"]["LATENT"].samples, again, atol=1e-2)


def encoded(engine, checkpoint, sizes=None):
    values = engine.run(workflow(1, checkpoint)).values
    positive, negative = values["6"]["conditioning"], values["7"]["conditioning"]
    if sizes:
        positive = positive.replace(sizes=sizes)
    return values["4"]["MODEL"], positive, negative


def ids_of(denoiser, positive, negative, height=8, width=8):
    batch = [(0, None, None, None, None, (), entries_of(positive)[0]), (1, None, None, None, None, (), entries_of(negative)[0])]
    return denoiser.added_conditioning(batch, torch.zeros(2, 4, height, width))


def test_base_ids_default_to_the_latent_times_8_and_the_negative_keeps_its_own(engine):
    model, positive, negative = encoded(engine, "tiny-sdxl", {"original_width": 1024.0, "crop_top": 16.0, "crop_left": 0.0})
    added = ids_of(ComfyDenoiser(model, positive, negative, 5.0), positive, negative, 8, 12)
    assert added["time_ids"].tolist() == [[64, 1024, 16, 0, 64, 96]] * 2 + [[64, 96, 0, 0, 64, 96]] * 2
    assert added["text_embeds"].shape == (4, positive.pooled.shape[-1])
    assert torch.equal(added["text_embeds"][0], positive.pooled[0].float())
    assert torch.equal(added["text_embeds"][2], negative.pooled[0].float())


def test_refiner_ids_carry_the_aesthetic_scores(engine):
    model, positive, negative = encoded(engine, "tiny-sdxl-refiner")
    added = ids_of(ComfyDenoiser(model, positive, negative, 5.0), positive, negative)
    assert added["time_ids"].tolist() == [[64, 64, 0, 0, 6.0]] * 2 + [[64, 64, 0, 0, 2.5]] * 2


def test_a_conditioning_without_pooled_embedding_is_refused_on_sdxl(engine):
    model, positive, negative = encoded(engine, "tiny-sdxl")
    with pytest.raises(NodeInputError) as error:
        ComfyDenoiser(model, positive, negative.replace(pooled=None), 5.0)
    assert error.value.input == "negative" and "pooled" in str(error.value)
