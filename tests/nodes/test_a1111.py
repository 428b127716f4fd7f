"""nodes.a1111: an A1111 parameters text back to a workflow (``graphflow import-a1111``).

The strongest check is the round trip: text → workflow → (the metadata writer, over that workflow's graph) →
the same text. The graphs are validated, not run; the sizes the writer reads are made up to match."""
import argparse

import pytest

from graphflow.errors import WorkflowFormatError
from nodes.a1111 import InfotextError, parse_infotext, run_import, workflow_from_infotext
from nodes.metadata import a1111_parameters, describe
from tests.nodes.test_metadata import image, latent, provenance

TXT2IMG = ("a red circle on a white background, detailed\nNegative prompt: blurry\n"
           "Steps: 12, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 42, Size: 64x96, Model: toy-shapes")


def written_back(text, values):
    document = workflow_from_infotext(text, upscale_model=lambda name: f"{name}.pth")
    target = "save2" if "save2" in document["nodes"] else "save"
    return a1111_parameters(describe(provenance(document, values, target=target)), (0, 0))


def test_the_parameters_line_and_the_prompts_are_read_as_a1111_writes_them():
    info = parse_infotext('a cat,\nin a hat\nNegative prompt: dull\nugly\nSteps: 3, Sampler: Euler, Hires prompt: "x, y: z", '
                          "Size: 8x8")
    assert (info.prompt, info.negative) == ("a cat,\nin a hat", "dull\nugly")
    assert info.fields == {"Steps": "3", "Sampler": "Euler", "Hires prompt": "x, y: z", "Size": "8x8"}


def test_a_txt2img_text_round_trips():
    assert written_back(TXT2IMG, {"sample": latent(8, 12), "decode": image(64, 96)}) == TXT2IMG


def test_the_workflow_has_the_shipped_txt2img_shape():
    nodes = workflow_from_infotext(TXT2IMG)["nodes"]
    assert [n["type"] for n in nodes.values()] == ["LoadCheckpoint", "TextEncode", "TextEncode", "EmptyLatent",
                                                   "Schedule", "AddNoise", "Sample", "VAEDecode", "SaveImage"]
    assert nodes["schedule"]["inputs"]["sampler"] == "dpmpp_2m_karras" and nodes["noise"]["inputs"]["seed"] == 42
    assert (nodes["empty"]["inputs"]["width"], nodes["empty"]["inputs"]["height"]) == (64, 96)


@pytest.mark.parametrize("upscaler", ["Latent (bicubic)", "Latent", "Lanczos", "4x-Thing"])
def test_a_hires_fix_text_round_trips(upscaler):
    text = ("a fox\nNegative prompt: blurry\nSteps: 10, Sampler: Euler a, Schedule type: Uniform, CFG scale: 7, Seed: 5, "
            "Size: 64x64, Model: toy-shapes, Denoising strength: 0.45, Hires upscale: 2, Hires steps: 6, "
            f"Hires upscaler: {upscaler}")
    values = {"sample": latent(8, 8), "sample2": latent(16, 16), "decode2": image(128, 128)}
    assert written_back(text, values) == text


def test_lora_tags_become_loaders_and_come_back():
    text = ("a red fox <lora:ink:0.6:0.8> <lora:flat:1>\n"
            "Steps: 12, Sampler: Euler, Schedule type: Uniform, CFG scale: 7, Seed: 1, Size: 64x64, Model: toy-shapes")
    nodes = workflow_from_infotext(text)["nodes"]
    assert [(n["inputs"]["name"], n["inputs"]["strength_clip"], n["inputs"]["strength_model"])
            for n in nodes.values() if n["type"] == "LoraLoader"] == [("ink", 0.6, 0.8), ("flat", 1.0, 1.0)]
    assert nodes["positive"]["inputs"]["text"] == "a red fox"
    assert written_back(text, {"sample": latent(8, 8), "decode": image(64, 64)}) == text


@pytest.mark.parametrize("sampler, schedule, ours", [
    ("DPM++ 2M Karras", None, "dpmpp_2m_karras"),  # before A1111 1.9 the schedule was in the name
    ("DPM++ 2M", None, "dpmpp_2m"), ("DPM++ 2M", "Automatic", "dpmpp_2m"), ("LMS", "Karras", "lms_karras"),
    ("DDIM", None, "ddim"), ("PLMS", None, "pndm"),
])
def test_sampler_names_old_and_new(sampler, schedule, ours):
    text = f"x\nSteps: 3, Sampler: {sampler}, " + (f"Schedule type: {schedule}, " if schedule else "") + "Seed: 1"
    assert workflow_from_infotext(text)["nodes"]["schedule"]["inputs"]["sampler"] == ours


@pytest.mark.parametrize("line, message", [
    ("Steps: 3, Sampler: DPM++ SDE, Seed: 1", "Sampler: unknown sampler 'DPM++ SDE'; graphflow has DDIM"),
    ("Steps: 3, Sampler: Euler a, Schedule type: Karras, Seed: 1", "Schedule type: Karras is not available for Euler a"),
    ("Steps: 3, Sampler: Euler, Seed: 1, Denoising strength: 0.5", "img2img text"),
    ("Steps: 3, Sampler: Euler, Seed: 1, Size: big", "Size: expected WIDTHxHEIGHT"),
    ("Steps: many, Sampler: Euler, Seed: 1", "Steps: expected an integer, got 'many'"),
    ("Steps: 3, Sampler: Euler, Seed: 1, Hires upscale: 2, Hires upscaler: None", "Hires upscaler: None has no"),
])
def test_what_cannot_be_built_is_an_error_naming_the_field(line, message):
    with pytest.raises(InfotextError, match=message.replace("(", r"\(").replace("+", r"\+")):
        workflow_from_infotext("a prompt\n" + line)


def test_a_text_without_a_parameters_line_is_refused():
    with pytest.raises(InfotextError, match="no parameters line"):
        workflow_from_infotext("just a prompt")


def test_other_fields_are_named_in_a_warning():
    heard = []
    workflow_from_infotext("x\nSteps: 3, Sampler: Euler, Seed: 1, Face restoration: CodeFormer, Version: v1.9.0",
                           warn=heard.append)
    assert heard == ["left out (graphflow does not build them): Face restoration"]


def test_the_command_finds_upscale_models_by_their_stem_and_names_a_missing_one(tmp_path, capsys):
    (tmp_path / "upscale_models").mkdir()
    (tmp_path / "upscale_models" / "4x-Thing.pth").write_bytes(b"")
    text = ("x\nSteps: 3, Sampler: Euler, Seed: 1, Size: 64x64, Denoising strength: 0.5, Hires upscale: 2, "
            "Hires upscaler: {}")
    out = tmp_path / "w.json"
    assert run_import(argparse.Namespace(text=text.format("4x-Thing"), output=str(out), models=str(tmp_path))) == 0
    assert '"name": "4x-Thing.pth"' in out.read_text()
    with pytest.raises(WorkflowFormatError, match=r"no upscale model named 'R-ESRGAN 4x\+'.*there: \['4x-Thing.pth'\]"):
        run_import(argparse.Namespace(text=text.format("R-ESRGAN 4x+"), output=None, models=str(tmp_path)))
