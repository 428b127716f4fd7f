"""comfy.CLIPTextEncodeSDXL / comfy.CLIPTextEncodeSDXLRefiner: graphflow's SDXL encoding under ComfyUI's names,
and ComfyUI API prompts on the built-in tiny SDXL base and refiner through the Engine."""
import pytest
import torch

from graphflow import Engine, Settings
from graphflow.documents import read_document
from graphflow.errors import NodeFailed
from graphflow.registry import default_registry
from nodes.conditioning import prompt_conditioning, prompt_tokens


def base_prompt(seed=5, crop_h=0, text_g="a red circle", text_l="a red circle", checkpoint="tiny-sdxl", cfg=5.0):
    def encode(text_g, text_l):
        return {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": ["4", 1], "width": 1024, "height": 1024, "crop_w": 0, "crop_h": crop_h, "target_width": 1024,
            "target_height": 1024, "text_g": text_g, "text_l": text_l}}

    return sampled(checkpoint, seed, encode(text_g, text_l), encode("blurry", "blurry"), cfg)


def refiner_prompt(seed=5, ascore=6.0, cfg=5.0):
    def encode(text, score):
        return {"class_type": "CLIPTextEncodeSDXLRefiner",
                "inputs": {"ascore": score, "width": 1024, "height": 1024, "text": text, "clip": ["4", 1]}}

    return sampled("tiny-sdxl-refiner", seed, encode("a red circle", ascore), encode("blurry", 2.5), cfg)


def sampled(checkpoint, seed, positive, negative, cfg=5.0):
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": positive, "7": negative,
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 3, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy-sdxl-encode")
    return Engine(settings=Settings(models_dir=root / "models", input_dir=root / "in", output_dir=root / "out"),
                  check_mutations=True)


def run(engine, document):
    return engine.run(read_document(document, "test", default_registry())).values


def test_inputs_are_in_comfyuis_order():
    registry = default_registry()
    assert registry.get("comfy.CLIPTextEncodeSDXL").input_order == (
        "clip", "width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l")
    assert registry.get("comfy.CLIPTextEncodeSDXLRefiner").input_order == ("ascore", "width", "height", "text", "clip")


def test_an_sdxl_api_prompt_runs_and_seeds_repeat(engine):
    first = run(engine, base_prompt())["3"]["LATENT"].samples
    again = run(engine, base_prompt(cfg=5.0 + 1e-9))["3"]["LATENT"].samples  # not from the cache
    other = run(engine, base_prompt(seed=6))["3"]["LATENT"].samples
    assert torch.isfinite(first).all() and torch.allclose(first, again, atol=1e-5) and not torch.allclose(first, other, atol=1e-2)
    assert not torch.allclose(first, run(engine, base_prompt(crop_h=512))["3"]["LATENT"].samples, atol=1e-4)
    assert run(engine, base_prompt())["8"]["IMAGE"].pixels.shape[0] == 1


def test_text_l_goes_to_the_first_encoder_and_text_g_to_the_second(engine):
    values = run(engine, base_prompt(text_g="a blue square", text_l="a red circle", crop_h=16))
    clip, conditioning = values["4"]["CLIP"], values["6"]["CONDITIONING"]
    expected = prompt_conditioning(clip, prompt_tokens(clip, "a red circle", text_2="a blue square"))
    assert torch.equal(conditioning.embeds, expected.embeds) and torch.equal(conditioning.pooled, expected.pooled)
    assert conditioning.sizes == {"original_width": 1024.0, "original_height": 1024.0, "crop_left": 0.0,
                                  "crop_top": 16.0, "target_width": 1024.0, "target_height": 1024.0}


def test_the_refiner_prompt_runs_with_its_aesthetic_score(engine):
    values = run(engine, refiner_prompt())
    assert values["6"]["CONDITIONING"].sizes == {"aesthetic_score": 6.0, "original_width": 1024.0, "original_height": 1024.0}
    first = values["3"]["LATENT"].samples
    assert torch.isfinite(first).all()
    assert torch.allclose(first, run(engine, refiner_prompt(cfg=5.0 + 1e-9))["3"]["LATENT"].samples, atol=1e-5)
    assert not torch.allclose(first, run(engine, refiner_prompt(ascore=9.0))["3"]["LATENT"].samples, atol=1e-4)


def test_an_sd1_clip_is_refused_by_name(engine):
    with pytest.raises(NodeFailed) as error:
        run(engine, base_prompt(checkpoint="tiny-sd"))
    assert "node 6" in str(error.value) and "clip" in str(error.value) and "SDXL" in str(error.value)


def test_the_base_encoder_refuses_the_refiners_single_encoder(engine):
    document = refiner_prompt()
    document["6"] = base_prompt()["6"]
    with pytest.raises(NodeFailed) as error:
        run(engine, document)
    assert "CLIPTextEncodeSDXLRefiner" in str(error.value)


def plain_prompt(text="a red circle", seed=5):
    def encode(text):
        return {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}}

    return sampled("tiny-sdxl", seed, encode(text), encode("blurry"))


def test_a_plain_comfyui_sdxl_prompt_runs_and_equals_the_sdxl_node_at_the_latents_size(engine):
    """ComfyUI's most common SDXL graph: CLIPTextEncode on both sides. Its sizes default to the latent's (64 px
    here), so CLIPTextEncodeSDXL with the same text for both encoders and those sizes gives the same latent."""
    plain = run(engine, plain_prompt())
    sdxl = base_prompt()
    for node, text in (("6", "a red circle"), ("7", "blurry")):
        sdxl[node]["inputs"].update(width=64, height=64, target_width=64, target_height=64, text_g=text, text_l=text)
    assert plain["6"]["CONDITIONING"].sizes == {} and plain["6"]["CONDITIONING"].pooled is not None
    assert torch.equal(plain["3"]["LATENT"].samples, run(engine, sdxl)["3"]["LATENT"].samples)
    assert not torch.allclose(plain["3"]["LATENT"].samples, run(engine, base_prompt())["3"]["LATENT"].samples, atol=1e-4)
