"""nodes.metadata: the A1111 parameters text, read off the provenance the engine gives output nodes.

The graphs here are validated but not run: the values the writer reads (latent and image sizes) are made up,
so each case is instant. tests/workflows/test_metadata_workflows.py runs the shipped workflows."""
import hashlib
import json

import pytest
import torch

from graphflow.provenance import Provenance
from graphflow.registry import default_registry
from graphflow.validate import validate
from graphflow.workflow import parse
from nodes.metadata import a1111_parameters, a1111_sampler, checkpoint_hash, describe
from nodes.values import Image, Latent
from tests.nodes.a1111_infotext import read


def link(node, output):
    return {"from": node, "output": output}


def txt2img(**changes):
    nodes = {
        "ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd"}},
        "pos": {"type": "TextEncode", "inputs": {"clip": link("ckpt", "clip"), "text": "a red fox"}},
        "neg_tok": {"type": "Tokenize", "inputs": {"clip": link("ckpt", "clip"), "text": "blurry"}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ckpt", "clip"), "tokens": link("neg_tok", "tokens")}},
        "empty": {"type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "vae": link("ckpt", "vae")}},
        "sched": {"type": "Schedule", "inputs": {"model": link("ckpt", "model"), "sampler": "euler_a", "steps": 12}},
        "noise": {"type": "AddNoise", "inputs": {"latent": link("empty", "latent"), "schedule": link("sched", "schedule"),
                                                 "seed": 1234}},
        "sample": {"type": "Sample", "inputs": {"model": link("ckpt", "model"), "positive": link("pos", "conditioning"),
                                                "negative": link("neg", "conditioning"), "latent": link("noise", "latent"),
                                                "cfg": 6.5}},
        "decode": {"type": "VAEDecode", "inputs": {"vae": link("ckpt", "vae"), "latent": link("sample", "latent")}},
        "save": {"type": "SaveImage", "inputs": {"images": link("decode", "image")}},
    }
    nodes.update(changes)
    return {"graphflow": 1, "nodes": nodes}


def latent(width, height, batch=1):
    return {"latent": Latent(samples=torch.zeros(batch, 4, height, width))}


def image(width, height, batch=1):
    return {"image": Image(pixels=torch.zeros(batch, height, width, 3))}


def provenance(document, values, target="save", drawn=None):
    checked = validate(parse(document), default_registry())
    for (node_id, name), value in (drawn or {}).items():  # what a seed drawn before planning looks like
        checked.nodes[node_id].literals[name] = value
    return Provenance.of(checked, target, values)


def text_of(document, values, **kwargs):
    generation = describe(provenance(document, values, **kwargs))
    return a1111_parameters(generation, (0, 0), kwargs.get("model_hash"))


TXT2IMG_VALUES = {"sample": latent(8, 8), "decode": image(64, 64)}


def test_txt2img_reads_prompts_literals_and_the_loaded_model():
    assert text_of(txt2img(), TXT2IMG_VALUES) == (
        "a red fox\nNegative prompt: blurry\n"
        "Steps: 12, Sampler: Euler a, Schedule type: Uniform, CFG scale: 6.5, Seed: 1234, Size: 64x64, Model: tiny-sd")


def test_defaults_come_from_the_registry_and_a_sample_seed_wins():
    document = txt2img()
    del document["nodes"]["sched"]["inputs"]["steps"]  # the Schedule default, 20
    document["nodes"]["sample"]["inputs"]["seed"] = 99  # a seed on Sample starts a new generator: that one counts
    del document["nodes"]["sample"]["inputs"]["negative"]
    document["nodes"]["sample"]["inputs"]["cfg"] = 1.0
    text = read(text_of(document, TXT2IMG_VALUES))
    assert text.negative == "" and text.params["Steps"] == "20" and text.params["Seed"] == "99"


def test_seeds_are_the_ones_that_ran_not_the_documents():
    graph = provenance(txt2img(), TXT2IMG_VALUES, drawn={("noise", "seed"): 777})
    assert read(a1111_parameters(describe(graph), (0, 0))).params["Seed"] == "777"
    assert graph.document["nodes"]["noise"]["inputs"]["seed"] == 777  # the PNG's workflow reruns what ran


def test_clip_skip_is_written_when_a_layer_is_skipped():
    document = txt2img()
    document["nodes"]["pos"]["inputs"]["clip_skip"] = 2
    assert read(text_of(document, TXT2IMG_VALUES)).params["Clip skip"] == "2"
    assert "Clip skip" not in read(text_of(txt2img(), TXT2IMG_VALUES)).params


def test_img2img_records_its_denoising_strength():
    document = txt2img()
    document["nodes"]["sched"]["inputs"]["denoise"] = 0.6
    assert read(text_of(document, TXT2IMG_VALUES)).params["Denoising strength"] == "0.6"


def hires(upscale):
    """txt2img at 64², enlarged by the ``upscale`` nodes (ending in node "up" giving a LATENT), refined at 128²."""
    return txt2img(**upscale,
                   sched2={"type": "Schedule", "inputs": {"model": link("ckpt", "model"), "sampler": "dpmpp_2m_karras",
                                                          "steps": 8, "denoise": 0.5}},
                   noise2={"type": "AddNoise", "inputs": {"latent": link("up", "latent"),
                                                          "schedule": link("sched2", "schedule"), "seed": 5}},
                   sample2={"type": "Sample", "inputs": {"model": link("ckpt", "model"), "positive": link("pos", "conditioning"),
                                                         "negative": link("neg", "conditioning"), "latent": link("noise2", "latent"),
                                                         "cfg": 6.5}},
                   decode={"type": "VAEDecode", "inputs": {"vae": link("ckpt", "vae"), "latent": link("sample2", "latent")}})


HIRES_VALUES = {"sample": latent(8, 8), "sample2": latent(16, 16), "decode": image(128, 128)}


@pytest.mark.parametrize("upscale, upscaler", [
    ({"up": {"type": "LatentUpscale", "inputs": {"latent": link("sample", "latent"), "method": "bicubic"}}},
     "Latent (bicubic)"),
    ({"up": {"type": "LatentUpscale", "inputs": {"latent": link("sample", "latent")}}}, "Latent (nearest-exact)"),
    ({"first": {"type": "VAEDecode", "inputs": {"vae": link("ckpt", "vae"), "latent": link("sample", "latent")}},
      "big": {"type": "ImageScale", "inputs": {"image": link("first", "image"), "scale_by": 2.0}},
      "up": {"type": "VAEEncode", "inputs": {"vae": link("ckpt", "vae"), "image": link("big", "image")}}}, "Lanczos"),
    ({"first": {"type": "VAEDecode", "inputs": {"vae": link("ckpt", "vae"), "latent": link("sample", "latent")}},
      "esrgan": {"type": "LoadUpscaleModel", "inputs": {"name": "sub/4x-Thing.pth"}},
      "x4": {"type": "UpscaleWithModel", "inputs": {"upscale_model": link("esrgan", "upscale_model"), "image": link("first", "image")}},
      "big": {"type": "ImageScale", "inputs": {"image": link("x4", "image"), "width": 128, "height": 128}},
      "up": {"type": "VAEEncode", "inputs": {"vae": link("ckpt", "vae"), "image": link("big", "image")}}}, "4x-Thing"),
])
def test_a_hires_fix_records_the_first_pass_and_the_hires_settings(upscale, upscaler):
    text = read(text_of(hires(upscale), HIRES_VALUES))
    assert text.params == {
        "Steps": "12", "Sampler": "Euler a", "Schedule type": "Uniform", "CFG scale": "6.5", "Seed": "1234",
        "Size": "64x64", "Model": "tiny-sd", "Denoising strength": "0.5", "Hires upscale": "2", "Hires steps": "8",
        "Hires upscaler": upscaler, "Hires sampler": "DPM++ 2M"}


def test_a_hires_fix_to_another_aspect_records_the_target_size():
    upscale = {"up": {"type": "LatentUpscale", "inputs": {"latent": link("sample", "latent"), "width": 128, "height": 96}}}
    text = read(text_of(hires(upscale), {"sample": latent(8, 8), "sample2": latent(16, 12), "decode": image(128, 96)}))
    assert text.params["Size"] == "64x64" and text.params["Hires resize"] == "128x96" and "Hires upscale" not in text.params


def test_a_grid_records_the_size_of_one_image():
    document = txt2img(grid={"type": "ImageGrid", "inputs": {"images": link("decode", "image"), "columns": 2}},
                       save={"type": "SaveImage", "inputs": {"images": link("grid", "image")}})
    values = {"sample": latent(8, 8, batch=4), "decode": image(64, 64, batch=4), "grid": image(128, 128)}
    assert read(text_of(document, values)).params["Size"] == "64x64"


def loras(**changes):
    stack = {
        "la": {"type": "LoraLoader", "inputs": {"model": link("ckpt", "model"), "clip": link("ckpt", "clip"),
                                                "name": "styles/ink.safetensors", "strength_model": 0.8, "strength_clip": 0.6}},
        "lb": {"type": "LoraLoader", "inputs": {"model": link("la", "model"), "clip": link("la", "clip"), "name": "flat"}},
        "pos": {"type": "TextEncode", "inputs": {"clip": link("lb", "clip"), "text": "a red fox"}},
        "sample": {"type": "Sample", "inputs": {"model": link("lb", "model"), "positive": link("pos", "conditioning"),
                                                "negative": link("neg", "conditioning"), "latent": link("noise", "latent")}},
    }
    stack.update(changes)
    return txt2img(**stack)


def test_loras_become_prompt_tags_in_the_order_applied():
    text = read(text_of(loras(), TXT2IMG_VALUES))
    assert text.loras() == [("ink", 0.6, 0.8), ("flat", 1.0, 1.0)]
    assert text.prompt_without_loras() == "a red fox" and text.params["Model"] == "tiny-sd"


def test_a_lora_on_the_model_only_has_no_text_encoder_weight():
    document = loras(pos={"type": "TextEncode", "inputs": {"clip": link("ckpt", "clip"), "text": "a red fox"}})
    assert read(text_of(document, TXT2IMG_VALUES)).loras() == [("ink", 0.0, 0.8), ("flat", 0.0, 1.0)]


def test_a_merged_model_is_not_recorded_as_its_first_parent():
    document = txt2img(
        other={"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd-inpainting"}},
        lora={"type": "LoraLoader", "inputs": {"model": link("other", "model"), "clip": link("other", "clip"), "name": "x"}},
        mix={"type": "MergeModels", "inputs": {"model_a": link("ckpt", "model"), "model_b": link("lora", "model")}},
        sample={"type": "Sample", "inputs": {"model": link("mix", "model"), "positive": link("pos", "conditioning"),
                                             "negative": link("neg", "conditioning"), "latent": link("noise", "latent")}})
    text = read(text_of(document, TXT2IMG_VALUES))
    assert "Model" not in text.params and "Model hash" not in text.params
    assert text.loras() == []  # the LoRA went into the merge; it is not applied on top


@pytest.mark.parametrize("ours, sampler, schedule", [
    ("dpmpp_2m", "DPM++ 2M", "Uniform"), ("dpmpp_2m_karras", "DPM++ 2M", "Karras"), ("euler", "Euler", "Uniform"),
    ("dpmpp_2m_sde_karras", "DPM++ 2M SDE", "Karras"), ("lms_karras", "LMS", "Karras"), ("ddim", "DDIM", None),
    ("pndm", "PLMS", None), ("unipc", "UniPC", None),
])
def test_samplers_are_written_as_a1111_1_9_reads_them(ours, sampler, schedule):
    assert a1111_sampler(ours) == (sampler, schedule)


def test_values_with_commas_or_colons_are_quoted():
    document = txt2img(ckpt={"type": "LoadCheckpoint", "inputs": {"name": "odd, name: v2.safetensors"}})
    generation = describe(provenance(document, TXT2IMG_VALUES))
    line = a1111_parameters(generation, (0, 0), "0123456789").splitlines()[-1]
    assert line.endswith(', Model hash: 0123456789, Model: "odd, name: v2"')
    assert read(a1111_parameters(generation, (0, 0))).params["Model"] == "odd, name: v2"


def test_the_model_hash_is_a1111s_short_hash_of_the_file_used(tmp_path):
    from graphflow.context import Settings

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "mine.safetensors").write_bytes(b"weights" * 1000)
    document = txt2img(ckpt={"type": "LoadCheckpoint", "inputs": {"name": "mine"}})
    generation = describe(provenance(document, TXT2IMG_VALUES))
    expected = hashlib.sha256(b"weights" * 1000).hexdigest()[:10]
    assert checkpoint_hash(generation, Settings(models_dir=tmp_path)) == expected
    assert "Model hash: " + expected + ", Model: mine" in a1111_parameters(generation, (0, 0), expected)
    assert checkpoint_hash(describe(provenance(txt2img(), TXT2IMG_VALUES)), Settings(models_dir=tmp_path)) is None


def test_an_image_no_sampler_made_records_only_its_size():
    document = {"graphflow": 1, "nodes": {"load": {"type": "LoadImage", "inputs": {"name": "x.png"}},
                                          "save": {"type": "SaveImage", "inputs": {"images": link("load", "image")}}}}
    assert describe(provenance(document, {"load": image(8, 8)})) is None
    assert a1111_parameters(None, (8, 6)) == "Size: 8x6"
    assert json.loads(json.dumps(provenance(document, {}).document)) == document
