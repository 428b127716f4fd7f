"""nodes.merge: weighted-sum and add-difference merges of UNet / text encoder / VAE, saved by SaveCheckpoint.

Two tiny models built from different seeds stand in for two checkpoints of one architecture."""
import pytest
import torch

from graphflow.errors import InvalidArgument, NodeInputError
from nodes.builtin_models import SD_SCHEDULER_CONFIG, build_tiny_components
from nodes.merge import MergeClip, MergeModels, MergeVae, merge_state
from nodes.outputs import SaveCheckpoint
from nodes.values import Clip, Model, Vae, digest_of

from .runctx import make_ctx, run_node


def values(seed: int, name: str, **kwargs):
    parts = build_tiny_components(seed=seed, **kwargs)
    return (Model(parts["unet"], dict(SD_SCHEDULER_CONFIG), "sd1", "epsilon", name),
            Clip(parts["tokenizer"], parts["text_encoder"], "sd1", name),
            Vae(parts["vae"], name))


@pytest.fixture(scope="module")
def a():
    return values(101, "a")


@pytest.fixture(scope="module")
def b():
    return values(202, "b")


@pytest.fixture(scope="module")
def c():
    return values(303, "c")


def state(module):
    return module.state_dict()


def assert_same(x: torch.nn.Module, y: torch.nn.Module):
    sx, sy = state(x), state(y)
    assert list(sx) == list(sy)
    for key in sx:
        assert sx[key].dtype == sy[key].dtype and torch.equal(sx[key], sy[key]), key


def test_alpha_zero_is_a_and_alpha_one_is_b(a, b):
    assert_same(run_node(MergeModels, model_a=a[0], model_b=b[0], model_c=None, mode="weighted_sum", alpha=0.0).unet, a[0].unet)
    assert_same(run_node(MergeModels, model_a=a[0], model_b=b[0], model_c=None, mode="weighted_sum", alpha=1.0).unet, b[0].unet)
    assert_same(run_node(MergeClip, clip_a=a[1], clip_b=b[1], clip_c=None, mode="weighted_sum", alpha=0.0).text_encoder, a[1].text_encoder)
    assert_same(run_node(MergeClip, clip_a=a[1], clip_b=b[1], clip_c=None, mode="weighted_sum", alpha=1.0).text_encoder, b[1].text_encoder)
    assert_same(run_node(MergeVae, vae_a=a[2], vae_b=b[2], vae_c=None, mode="weighted_sum", alpha=0.0).vae, a[2].vae)
    assert_same(run_node(MergeVae, vae_a=a[2], vae_b=b[2], vae_c=None, mode="weighted_sum", alpha=1.0).vae, b[2].vae)


def test_weighted_sum_in_between(a, b):
    merged = run_node(MergeModels, model_a=a[0], model_b=b[0], model_c=None, mode="weighted_sum", alpha=0.3)
    key = "down_blocks.1.attentions.0.proj_in.weight"
    expected = state(a[0].unet)[key] * 0.7 + state(b[0].unet)[key] * 0.3
    assert torch.allclose(state(merged.unet)[key], expected, atol=1e-7)
    assert not torch.equal(state(merged.unet)[key], state(a[0].unet)[key])
    assert merged.patches == ("merge:weighted_sum:0.3:b",) and merged.name == "a"
    assert merged.scheduler_config == a[0].scheduler_config


def test_add_difference(a, b, c):
    same = run_node(MergeModels, model_a=a[0], model_b=b[0], model_c=b[0], mode="add_difference", alpha=0.8)  # B − B = 0: A comes back exactly
    assert_same(same.unet, a[0].unet)
    merged = run_node(MergeClip, clip_a=a[1], clip_b=b[1], clip_c=c[1], mode="add_difference", alpha=0.5)
    key = "encoder.layers.0.mlp.fc1.weight"
    expected = state(a[1].text_encoder)[key] + (state(b[1].text_encoder)[key] - state(c[1].text_encoder)[key]) * 0.5
    assert torch.allclose(state(merged.text_encoder)[key], expected, atol=1e-7)
    assert merged.tokenizer is a[1].tokenizer


def test_inputs_are_untouched(a, b, c):
    before = [digest_of(v) for v in (*a, *b, *c)]
    run_node(MergeModels, model_a=a[0], model_b=b[0], model_c=c[0], mode="add_difference", alpha=0.5)
    run_node(MergeClip, clip_a=a[1], clip_b=b[1], clip_c=None, mode="weighted_sum", alpha=0.5)
    run_node(MergeVae, vae_a=a[2], vae_b=b[2], vae_c=c[2], mode="add_difference", alpha=1.0)
    assert [digest_of(v) for v in (*a, *b, *c)] == before


def test_merged_model_runs(a, b):
    merged = run_node(MergeModels, model_a=a[0], model_b=b[0], model_c=None, mode="weighted_sum", alpha=0.5)
    with torch.no_grad():
        out = merged.unet(torch.randn(1, 4, 16, 16), torch.tensor([10]), encoder_hidden_states=torch.randn(1, 77, 32)).sample
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()


def test_unlinked_model_c_is_not_needed_for_a_weighted_sum(a, b):
    merged = run_node(MergeModels, model_a=a[0], model_b=b[0], mode="weighted_sum", alpha=0.0)
    assert_same(merged.unet, a[0].unet)


def test_add_difference_needs_c(a, b):
    with pytest.raises(NodeInputError) as error:
        run_node(MergeModels, model_a=a[0], model_b=b[0], model_c=None, mode="add_difference", alpha=0.5)
    assert error.value.input == "model_c"


def test_incompatible_architectures_name_the_first_mismatch(a):
    wide = values(5, "wide", cross_attention_dim=64)
    with pytest.raises(NodeInputError) as error:
        run_node(MergeModels, model_a=a[0], model_b=wide[0], model_c=None, mode="weighted_sum", alpha=0.5)
    assert error.value.input == "model_b"
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight" in error.value.message
    inpainting = values(6, "inpaint", in_channels=9)
    with pytest.raises(NodeInputError, match="conv_in.weight") as error:
        run_node(MergeModels, model_a=a[0], model_b=a[0], model_c=inpainting[0], mode="add_difference", alpha=0.5)
    assert error.value.input == "model_c"
    with pytest.raises(NodeInputError, match="embeddings.token_embedding.weight") as error:
        run_node(MergeClip, clip_a=a[1], clip_b=wide[1], clip_c=None, mode="weighted_sum", alpha=0.5)
    assert error.value.input == "clip_b"


def test_missing_and_extra_keys_are_domain_errors_on_the_argument_that_differs():
    x = {"w": torch.zeros(2), "v": torch.zeros(1)}
    with pytest.raises(InvalidArgument, match="'v'") as error:
        merge_state(x, {"w": torch.zeros(2)}, None, "weighted_sum", 0.5)
    assert error.value.argument == "b" and not isinstance(error.value, NodeInputError)
    with pytest.raises(InvalidArgument, match="'extra'") as error:
        merge_state(x, x, {**x, "extra": torch.zeros(1)}, "add_difference", 0.5)
    assert error.value.argument == "c"


def test_half_precision_a_keeps_its_dtype():
    x = {"w": torch.tensor([1.0, 2.0], dtype=torch.float16)}
    y = {"w": torch.tensor([3.0, 4.0])}
    merged = merge_state(x, y, None, "weighted_sum", 0.5)
    assert merged["w"].dtype == torch.float16 and merged["w"].tolist() == [2.0, 3.0]


def test_save_checkpoint_writes_a_file_that_reloads_identically(a, b, tmp_path):
    from nodes.checkpoints import load_single_file

    ctx, _ = make_ctx(tmp_path)
    model = run_node(MergeModels, model_a=a[0], model_b=b[0], model_c=None, mode="weighted_sum", alpha=0.25)
    clip = run_node(MergeClip, clip_a=a[1], clip_b=b[1], clip_c=None, mode="weighted_sum", alpha=0.25)
    vae = run_node(MergeVae, vae_a=a[2], vae_b=b[2], vae_c=None, mode="weighted_sum", alpha=0.25)
    (first,) = run_node(SaveCheckpoint, ctx, model=model, clip=clip, vae=vae, filename_prefix="merged")
    (second,) = run_node(SaveCheckpoint, ctx, model=model, clip=clip, vae=vae, filename_prefix="sub/merged")
    (third,) = run_node(SaveCheckpoint, ctx, model=model, clip=clip, vae=vae, filename_prefix="merged")
    assert {x.kind for x in (first, second, third)} == {"checkpoint"}
    assert [x.filename for x in (first, second, third)] == [
        "merged_00001.safetensors", "sub/merged_00001.safetensors", "merged_00002.safetensors"]
    assert sorted(p.name for p in ctx.settings.output_dir.iterdir()) == [
        "merged_00001.safetensors", "merged_00002.safetensors", "sub"]  # no temporary files left behind
    assert first.info == {"patches": {"model": ["merge:weighted_sum:0.25:b"], "clip": ["merge:weighted_sum:0.25:b"]}}
    reloaded = load_single_file(ctx.settings.output_dir / first.filename)
    assert_same(reloaded.unet, model.unet)
    assert_same(reloaded.text_encoder, clip.text_encoder)
    assert_same(reloaded.vae, vae.vae)


@pytest.mark.parametrize("prefix", ["", "../up", "/abs", "folder/"])
def test_save_checkpoint_refuses_paths_outside_the_output_folder(a, tmp_path, prefix):
    ctx, _ = make_ctx(tmp_path)
    with pytest.raises(NodeInputError) as error:
        run_node(SaveCheckpoint, ctx, model=a[0], clip=a[1], vae=a[2], filename_prefix=prefix)
    assert error.value.input == "filename_prefix"


def test_merge_and_save_in_a_workflow(tmp_path):
    """LoRA'd tiny-sd merged half-way with plain tiny-sd, saved: the file holds the average of the two."""
    from graphflow import Engine, Registry, Settings
    from nodes import loaders, lora, merge, outputs
    from nodes.checkpoints import load_single_file
    from nodes.tiny_assets import ensure_assets

    registry = Registry()
    for module in (loaders, lora, merge, outputs):
        registry.add_module(module)
    settings = Settings(models_dir=tmp_path / "models", input_dir=tmp_path, output_dir=tmp_path / "out")
    ensure_assets(settings.models_dir)
    engine = Engine(registry, settings, check_mutations=True)
    link = lambda node, output: {"from": node, "output": output}  # noqa: E731
    report = engine.run({"graphflow": 1, "nodes": {
        "ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd"}},
        "lora": {"type": "LoraLoader", "inputs": {"model": link("ckpt", "model"), "clip": link("ckpt", "clip"),
                                                  "name": "tiny-lora-a"}},
        "unet": {"type": "MergeModels", "inputs": {"model_a": link("ckpt", "model"), "model_b": link("lora", "model"),
                                                   "alpha": 0.5}},
        "text": {"type": "MergeClip", "inputs": {"clip_a": link("ckpt", "clip"), "clip_b": link("lora", "clip"),
                                                 "alpha": 0.5}},
        "vae": {"type": "MergeVae", "inputs": {"vae_a": link("ckpt", "vae"), "vae_b": link("ckpt", "vae"),
                                               "mode": "add_difference", "vae_c": link("ckpt", "vae")}},
        "save": {"type": "SaveCheckpoint", "inputs": {"model": link("unet", "model"), "clip": link("text", "clip"),
                                                      "vae": link("vae", "vae"), "filename_prefix": "half"}}}})
    saved = report.outputs["save"]["checkpoints"][0]
    assert saved["filename"] == "half_00001.safetensors"
    assert saved["patches"]["model"] == ["merge:weighted_sum:0.5:tiny-sd[lora:tiny-lora-a:1]"]
    assert "path" not in saved  # reports name files relative to the output folder, never by absolute path
    reloaded = load_single_file(settings.output_dir / saved["filename"])
    plain, lorad = report.values["ckpt"]["model"].unet.state_dict(), report.values["lora"]["model"].unet.state_dict()
    key = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert torch.allclose(reloaded.unet.state_dict()[key], (plain[key] + lorad[key]) / 2, atol=1e-7)
    assert not torch.equal(plain[key], lorad[key])
    assert_same(reloaded.vae, report.values["ckpt"]["vae"].vae)


@pytest.mark.parametrize("node, index, names", [(MergeModels, 0, ("model_a", "model_b")),
                                                (MergeClip, 1, ("clip_a", "clip_b")),
                                                (MergeVae, 2, ("vae_a", "vae_b"))])
def test_a_cancelled_merge_stops_between_tensors(a, b, tmp_path, node, index, names):
    from graphflow.errors import Cancelled

    checks = []
    ctx, _ = make_ctx(tmp_path)

    def count_then_cancel():
        checks.append(1)
        if len(checks) == 3:
            ctx.cancel_token.cancel()
        if ctx.cancel_token.cancelled:
            raise Cancelled(ctx.node_id)

    ctx.check_cancelled = count_then_cancel
    with pytest.raises(Cancelled):
        run_node(node, ctx, **{names[0]: a[index], names[1]: b[index]})
    assert len(checks) == 3  # the third tensor's check stopped it, not the end of the merge
