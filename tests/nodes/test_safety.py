"""The safety checker nodes: the same decision as diffusers' pipelines, what each mode does to flagged images,
the report of what was flagged, and offline loading from the models folder by name."""
import numpy as np
import pytest
import torch

from graphflow.context import Settings
from graphflow.errors import NodeInputError
from nodes.outputs import SaveImage
from nodes.safety import LoadSafetyChecker, SafetyCheck, _preflight, flagged_images, load_safety_checker
from nodes.values import Image
from tests.nodes.runctx import run_node
from tests.nodes.safety_assets import BLUE, GREEN, RED, build_checker_folder, solid


@pytest.fixture(scope="module")
def checker_models(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    build_checker_folder(models / "safety_checker" / "tiny-checker")
    return models


@pytest.fixture(scope="module")
def checker(checker_models):
    return load_safety_checker(checker_models / "safety_checker" / "tiny-checker", "tiny-checker")


def batch(*colours):
    return torch.cat([solid(colour) for colour in colours])


def test_flags_match_diffusers_pipeline_run_safety_checker(checker):
    """StableDiffusionPipeline.run_safety_checker on the decoded batch ([-1, 1], channels first) decides the same."""
    from types import SimpleNamespace

    from diffusers import StableDiffusionPipeline
    from diffusers.image_processor import VaeImageProcessor

    pixels = batch(RED, BLUE, GREEN, RED)
    pipeline_like = SimpleNamespace(safety_checker=checker.model, feature_extractor=checker.processor,
                                    image_processor=VaeImageProcessor(vae_scale_factor=8))
    decoded = pixels.permute(0, 3, 1, 2) * 2 - 1
    _, has_nsfw = StableDiffusionPipeline.run_safety_checker(pipeline_like, decoded.clone(), "cpu", torch.float32)
    assert flagged_images(checker, pixels) == list(has_nsfw) == [True, False, False, True]


@pytest.mark.parametrize("mode", ["black", "blur", "flag"])
def test_each_mode_changes_only_the_flagged_images(checker, mode, stage_ctx):
    ctx, recorder = stage_ctx
    pixels = batch(RED, BLUE).clone()
    pixels[0, :24] = 0.95  # an edge in the flagged image, so blurring shows
    result = run_node(SafetyCheck, ctx=ctx, images=Image(pixels=pixels), safety_checker=checker, mode=mode)
    assert result.flagged == (True, False)
    assert torch.equal(result.pixels[1], pixels[1]), "the unflagged image passes through"
    flagged, original = result.pixels[0], pixels[0]
    if mode == "black":
        assert torch.count_nonzero(flagged) == 0
    elif mode == "blur":
        assert (flagged - original).abs().max() > 0.1 and flagged.std() < original.std()
    else:
        assert torch.equal(flagged, original)
    assert any("flagged image(s) 0 of 2" in w for w in recorder.warnings)


def test_save_image_reports_which_files_were_flagged(checker, stage_ctx):
    ctx, _ = stage_ctx
    checked = run_node(SafetyCheck, ctx=ctx, images=Image(pixels=batch(BLUE, RED)), safety_checker=checker, mode="flag")
    saved = run_node(SaveImage, ctx=ctx, images=checked, filename_prefix="checked")
    assert [file.info["flagged"] for file in saved] == [False, True]
    unchecked = run_node(SaveImage, ctx=ctx, images=Image(pixels=batch(RED)), filename_prefix="plain")
    assert "flagged" not in unchecked[0].info


def test_loads_by_name_from_the_models_folder_and_lists_what_exists_when_missing(checker_models, stage_ctx):
    ctx, _ = stage_ctx
    ctx.settings = Settings(models_dir=checker_models, input_dir=ctx.settings.input_dir, output_dir=ctx.settings.output_dir)
    loaded = run_node(LoadSafetyChecker, ctx=ctx, name="tiny-checker", device="cpu")
    assert flagged_images(loaded, batch(RED, GREEN)) == [True, False]
    with pytest.raises(NodeInputError) as error:
        run_node(LoadSafetyChecker, ctx=ctx, name="nsfw-checker", device="cpu")
    assert error.value.input == "name" and "tiny-checker" in str(error.value.expected)
    (problem,) = _preflight({"name": "nsfw-checker"}, ctx.settings)
    assert problem.available == ("tiny-checker",)
    assert _preflight({"name": "tiny-checker"}, ctx.settings) == []
