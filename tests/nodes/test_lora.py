"""nodes.lora: Kohya/A1111 and diffusers/peft LoRA files merged into NEW UNet / text-encoder modules.

Every test uses tiny LoRAs written in the real key layouts for the built-in tiny model."""
from dataclasses import replace

import pytest
import torch

from graphflow.errors import NodeInputError
from graphflow.node import Input, node, spec_of
from graphflow.registry import Registry
from nodes import lora as lora_module
from nodes.builtin_models import SD_SCHEDULER_CONFIG, build_tiny_components
from nodes.lora import LoraLoader, apply_lora, parse_lora
from nodes.prompt import encode_tokens, tokenize_prompt
from nodes.tiny_assets import (LORA_ALPHA, LORA_RANK, LORA_RELATIVE_SIZE, TINY_LORAS, ensure_assets, make_asset_lora,
                               make_kohya_lora, save_lora)
from nodes.values import CLIP, MODEL, Clip, Model, digest_of

from .runctx import make_ctx, run_node


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_components()


@pytest.fixture
def model(tiny):
    return Model(tiny["unet"], dict(SD_SCHEDULER_CONFIG), "sd1", "epsilon", "tiny-sd")


@pytest.fixture
def clip(tiny):
    return Clip(tiny["tokenizer"], tiny["text_encoder"], "sd1", "tiny-sd")


@pytest.fixture
def ctx(tmp_path):
    ctx, _ = make_ctx(tmp_path)
    ensure_assets(ctx.settings.models_dir)
    return ctx


def loras(ctx):
    return ctx.settings.models_dir / "loras"


@torch.no_grad()
def unet_output(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 16, 16, generator=g)
    context = torch.randn(1, 77, 32, generator=g)
    return unet(sample, torch.tensor([500]), encoder_hidden_states=context).sample


def text_output(clip) -> torch.Tensor:
    tokens = tokenize_prompt(clip.tokenizer, "a photo of a cat")
    return encode_tokens(clip.text_encoder, tokens.input_ids, tokens.weights)


def test_the_node_is_discoverable():
    registry = Registry()
    registry.add_module(lora_module)
    assert "LoraLoader" in registry


def test_kohya_lora_changes_both_parts_and_leaves_inputs_alone(model, clip, ctx):
    digests = digest_of(model), digest_of(clip)
    base_unet, base_text = unet_output(model.unet), text_output(clip)
    new_model, new_clip = run_node(LoraLoader, ctx, model=model, clip=clip, name="tiny-lora-a", strength_model=1.0, strength_clip=1.0)
    assert new_model is not model and new_clip is not clip
    assert new_model.unet is not model.unet and new_clip.text_encoder is not clip.text_encoder
    assert not torch.allclose(unet_output(new_model.unet), base_unet, atol=1e-4)
    assert not torch.allclose(text_output(new_clip), base_text, atol=1e-4)
    assert new_model.patches == ("lora:tiny-lora-a:1",) and new_clip.patches == ("lora:tiny-lora-a:1",)
    # the inputs: same weights bit for bit, same outputs
    assert (digest_of(model), digest_of(clip)) == digests
    assert torch.equal(unet_output(model.unet), base_unet) and torch.equal(text_output(clip), base_text)


def test_only_patched_weights_are_new_tensors(model, clip, ctx):
    new_model, _ = run_node(LoraLoader, ctx, model=model, clip=clip, name="tiny-lora-a", strength_model=1.0, strength_clip=1.0)
    old = dict(model.unet.named_parameters())
    shared = {n for n, p in new_model.unet.named_parameters() if p.data_ptr() == old[n].data_ptr()}
    patched = set(old) - shared
    assert patched and shared
    assert all(n.endswith(".weight") and (".attentions." in n or n == "down_blocks.1.resnets.0.conv1.weight")
               for n in patched)
    # shared storage, separate Parameter objects: converting the copy leaves the original as it was
    before = digest_of(model)
    new_model.unet.to(torch.float64)
    assert model.dtype == torch.float32 and digest_of(model) == before


def test_merged_weight_follows_the_formula(tiny, model, clip, ctx):
    state = make_asset_lora(tiny["unet"], tiny["text_encoder"], seed=TINY_LORAS["tiny-lora-a"])  # what the file holds
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    down, up = state[f"{key}.lora_down.weight"].float(), state[f"{key}.lora_up.weight"].float()
    new_model, new_clip = run_node(LoraLoader, ctx, model=model, clip=clip, name="tiny-lora-a", strength_model=0.7, strength_clip=1.0)
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    expected = model.unet.get_parameter(name) + 0.7 * (LORA_ALPHA / LORA_RANK) * (up @ down)
    assert torch.allclose(new_model.unet.get_parameter(name), expected, atol=1e-6)
    te_key = "lora_te_text_model_encoder_layers_2_self_attn_q_proj"
    te_delta = state[f"{te_key}.lora_up.weight"].float() @ state[f"{te_key}.lora_down.weight"].float()
    te_name = "encoder.layers.2.self_attn.q_proj.weight"
    te_expected = clip.text_encoder.get_parameter(te_name) + (LORA_ALPHA / LORA_RANK) * te_delta
    assert torch.allclose(new_clip.text_encoder.get_parameter(te_name), te_expected, atol=1e-6)


def test_update_size_follows_the_weight_size(tiny):
    """The generated LoRAs move a weight by about LORA_RELATIVE_SIZE of its spread, whatever the model's scale."""
    unet = tiny["unet"]
    state = make_kohya_lora(unet, None, seed=3, rank=8)
    layer = unet.get_submodule("down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj")  # 512 × 64
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj"
    delta = (LORA_ALPHA / 8) * state[f"{key}.lora_up.weight"] @ state[f"{key}.lora_down.weight"]
    ratio = float(delta.std() / layer.weight.detach().std())
    assert ratio == pytest.approx(LORA_RELATIVE_SIZE, rel=0.15)


def test_strength_zero_is_no_lora_bit_for_bit(model, clip, ctx):
    new_model, new_clip = run_node(LoraLoader, ctx, model=model, clip=clip, name="tiny-lora-a", strength_model=0.0, strength_clip=0.0)
    assert new_model is model and new_clip is clip
    only_clip = run_node(LoraLoader, ctx, model=model, clip=clip, name="tiny-lora-a", strength_model=0.0, strength_clip=1.0)
    assert only_clip[0] is model and only_clip[1] is not clip


def test_unet_only_and_text_only_files(tiny, model, clip, ctx):
    save_lora(make_kohya_lora(tiny["unet"], None, seed=5), loras(ctx) / "unet-only.safetensors")
    save_lora(make_kohya_lora(None, tiny["text_encoder"], seed=6), loras(ctx) / "sub" / "te-only.safetensors")
    m, c = run_node(LoraLoader, ctx, model=model, clip=clip, name="unet-only", strength_model=1.0, strength_clip=1.0)
    assert m is not model and c is clip
    m, c = run_node(LoraLoader, ctx, model=model, clip=clip, name="sub/te-only.safetensors", strength_model=1.0, strength_clip=1.0)
    assert m is model and c is not clip and c.patches == ("lora:sub/te-only:1",)


def test_stacked_loras_compose_in_any_order(model, clip, ctx):
    first = dict(name="tiny-lora-a", strength_model=0.8, strength_clip=0.5)
    second = dict(name="tiny-lora-b", strength_model=0.6, strength_clip=1.2)

    def stacked(one, other):
        m, c = run_node(LoraLoader, ctx, model=model, clip=clip, **one)
        return run_node(LoraLoader, ctx, model=m, clip=c, **other)

    ab, ba = stacked(first, second), stacked(second, first)
    a_only = run_node(LoraLoader, ctx, model=model, clip=clip, **first)
    assert ab[0].patches == ("lora:tiny-lora-a:0.8", "lora:tiny-lora-b:0.6")
    assert torch.allclose(unet_output(ab[0].unet), unet_output(ba[0].unet), atol=1e-5)
    assert torch.allclose(text_output(ab[1]), text_output(ba[1]), atol=1e-5)
    assert not torch.allclose(unet_output(ab[0].unet), unet_output(a_only[0].unet), atol=1e-4)
    for (name, x), y in zip(ab[0].unet.state_dict().items(), ba[0].unet.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), name
    # the first LoRA's output is still what it was: the second built new modules again
    assert torch.equal(unet_output(a_only[0].unet), unet_output(run_node(LoraLoader, ctx, model=model, clip=clip, **first)[0].unet))


LDM_ATTENTIONS = {  # the tiny UNet (2 levels, 2 layers per block): diffusers attention → original LDM block
    "down_blocks_1_attentions_0": "input_blocks_4_1",
    "down_blocks_1_attentions_1": "input_blocks_5_1",
    "mid_block_attentions_0": "middle_block_1",
    "up_blocks_0_attentions_0": "output_blocks_0_1",
    "up_blocks_0_attentions_1": "output_blocks_1_1",
    "up_blocks_0_attentions_2": "output_blocks_2_1",
}


def test_ldm_block_names_map_like_diffusers_names(tiny, model):
    state = {k: v for k, v in make_kohya_lora(tiny["unet"], None, seed=7).items() if "_attentions_" in k}
    ldm = {}
    for key, value in state.items():
        for diffusers_name, ldm_name in LDM_ATTENTIONS.items():
            key = key.replace(f"lora_unet_{diffusers_name}_", f"lora_unet_{ldm_name}_")
        ldm[key] = value
    assert any("input_blocks_4_1" in k for k in ldm) and not any("_attentions_" in k for k in ldm)
    config = model.unet.config
    a = apply_lora(model.unet, parse_lora(state, {}, config)["unet"], 1.0)
    b = apply_lora(model.unet, parse_lora(ldm, {}, config)["unet"], 1.0)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def kohya_to_peft(tiny, state, prefix_text_model=True):
    """The same LoRA in diffusers/peft layout: <target>.<module>.lora_A/lora_B.weight (+ alpha keys)."""
    from nodes.tiny_assets import kohya_layer_names

    paths = {id(m): n for n, m in tiny["unet"].named_modules()}
    te_paths = {id(m): n for n, m in tiny["text_encoder"].named_modules()}
    peft = {}
    for name, layer in kohya_layer_names(tiny["unet"], tiny["text_encoder"]).items():
        if f"{name}.lora_down.weight" not in state:
            continue
        if name.startswith("lora_unet_"):
            module = "unet." + paths[id(layer)]
        else:
            module = "text_encoder." + ("text_model." if prefix_text_model else "") + te_paths[id(layer)]
        peft[f"{module}.lora_A.weight"] = state[f"{name}.lora_down.weight"]
        peft[f"{module}.lora_B.weight"] = state[f"{name}.lora_up.weight"]
        peft[f"{module}.alpha"] = state[f"{name}.alpha"]
    return peft


def test_peft_format_matches_kohya(tiny, model, clip, ctx):
    state = make_kohya_lora(tiny["unet"], tiny["text_encoder"], seed=1)  # every layer type, the 3×3 conv included
    save_lora(state, loras(ctx) / "kohya.safetensors")
    save_lora(kohya_to_peft(tiny, state), loras(ctx) / "peft.safetensors", metadata={})
    save_lora(kohya_to_peft(tiny, state, prefix_text_model=False), loras(ctx) / "peft2.safetensors", metadata={})
    kohya = run_node(LoraLoader, ctx, model=model, clip=clip, name="kohya", strength_model=1.0, strength_clip=1.0)
    for name in ("peft", "peft2"):
        peft = run_node(LoraLoader, ctx, model=model, clip=clip, name=name, strength_model=1.0, strength_clip=1.0)
        assert digest_of(peft[0].unet) == digest_of(kohya[0].unet)
        assert digest_of(peft[1].text_encoder) == digest_of(kohya[1].text_encoder)


def test_peft_alpha_from_adapter_metadata(tiny, model, clip, ctx):
    state = make_kohya_lora(tiny["unet"], None, seed=1, alpha=8.0)
    peft = {k: v for k, v in kohya_to_peft(tiny, state).items() if not k.endswith(".alpha")}
    save_lora(peft, loras(ctx) / "meta.safetensors", metadata={"lora_adapter_metadata": '{"unet.lora_alpha": 8, "unet.r": 4}'})
    save_lora(state, loras(ctx) / "kohya8.safetensors")
    with_meta = run_node(LoraLoader, ctx, model=model, clip=clip, name="meta", strength_model=1.0, strength_clip=1.0)[0]
    assert digest_of(with_meta.unet) == digest_of(run_node(LoraLoader, ctx, model=model, clip=clip, name="kohya8", strength_model=1.0, strength_clip=1.0)[0].unet)


def test_key_matching_no_layer_fails_loudly(tiny, model, clip, ctx):
    state = make_kohya_lora(tiny["unet"], None, seed=1)
    state["lora_unet_down_blocks_7_attentions_0_proj_in.lora_down.weight"] = torch.zeros(4, 32)
    state["lora_unet_down_blocks_7_attentions_0_proj_in.lora_up.weight"] = torch.zeros(32, 4)
    save_lora(state, loras(ctx) / "stray.safetensors")
    with pytest.raises(NodeInputError) as error:
        run_node(LoraLoader, ctx, model=model, clip=clip, name="stray", strength_model=1.0, strength_clip=1.0)
    assert error.value.input == "name"
    assert "lora_unet_down_blocks_7_attentions_0_proj_in" in error.value.message


def test_unsupported_lycoris_keys_are_rejected(model, clip, ctx):
    save_lora({"lora_unet_down_blocks_1_attentions_0_proj_in.hada_w1_a": torch.zeros(4, 4)},
              loras(ctx) / "loha.safetensors")
    with pytest.raises(NodeInputError, match="unsupported"):
        run_node(LoraLoader, ctx, model=model, clip=clip, name="loha", strength_model=1.0, strength_clip=1.0)


def test_damaged_file_is_reported_on_the_name(model, clip, ctx):
    (loras(ctx) / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(NodeInputError, match="not a readable"):
        run_node(LoraLoader, ctx, model=model, clip=clip, name="broken", strength_model=1.0, strength_clip=1.0)


def test_wrong_shapes_are_rejected(model, clip, ctx):
    save_lora({"lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320, 1, 1),
               "lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4, 1, 1)},
              loras(ctx) / "sd15.safetensors")
    with pytest.raises(NodeInputError, match="shape"):
        run_node(LoraLoader, ctx, model=model, clip=clip, name="sd15", strength_model=1.0, strength_clip=1.0)


def test_missing_file_lists_available(model, clip, ctx):
    with pytest.raises(NodeInputError) as error:
        run_node(LoraLoader, ctx, model=model, clip=clip, name="nope", strength_model=1.0, strength_clip=1.0)
    assert error.value.expected == ["tiny-lora-a", "tiny-lora-b"]
    outside = ctx.settings.models_dir / "outside.safetensors"
    outside.write_bytes((loras(ctx) / "tiny-lora-a.safetensors").read_bytes())
    with pytest.raises(NodeInputError):  # names cannot leave the loras folder
        run_node(LoraLoader, ctx, model=model, clip=clip, name="../outside", strength_model=1.0, strength_clip=1.0)


# ------------------------------------------------------------------------------------------------ asset folders

def test_asset_folders_are_searched_after_the_models_folder(tiny, model, clip, ctx, tmp_path):
    first, second = tmp_path / "assets1", tmp_path / "assets2"
    ctx.settings = replace(ctx.settings, asset_dirs=(first, second))
    states = {seed: make_kohya_lora(tiny["unet"], None, seed=seed) for seed in (11, 12, 13, 14)}
    save_lora(states[11], first / "loras" / "style.safetensors")
    save_lora(states[12], second / "loras" / "style.safetensors")
    save_lora(states[13], second / "loras" / "packs" / "extra.safetensors")

    def applied(name):
        return digest_of(run_node(LoraLoader, ctx, model=model, clip=clip, name=name, strength_model=1.0, strength_clip=1.0)[0].unet)

    def expected(seed):
        return digest_of(apply_lora(model.unet, parse_lora(states[seed], {}, model.unet.config)["unet"], 1.0))

    fingerprint = spec_of(LoraLoader).fingerprint
    from_asset = fingerprint({"name": "style"}, ctx.settings)
    assert applied("style") == expected(11), "the first asset folder holding the name wins"
    assert applied("packs/extra") == expected(13)
    save_lora(states[14], loras(ctx) / "style.safetensors")
    assert applied("style") == expected(14), "the user's models folder comes before every asset folder"
    assert fingerprint({"name": "style"}, ctx.settings) != from_asset, "a shadowing file changes the cache key"
    with pytest.raises(NodeInputError) as error:
        run_node(LoraLoader, ctx, model=model, clip=clip, name="nope", strength_model=1.0, strength_clip=1.0)
    assert error.value.expected == ["packs/extra", "style", "tiny-lora-a", "tiny-lora-b"]
    assert str(first / "loras") in error.value.message
    (second / "outside.safetensors").write_bytes((second / "loras" / "style.safetensors").read_bytes())
    with pytest.raises(NodeInputError):  # an asset folder is no way out either
        run_node(LoraLoader, ctx, model=model, clip=clip, name="../outside", strength_model=1.0, strength_clip=1.0)


def test_fingerprint_covers_the_resolved_file(ctx):
    fingerprint = spec_of(LoraLoader).fingerprint
    before = fingerprint({"name": "tiny-lora-a"}, ctx.settings)
    assert before == fingerprint({"name": "tiny-lora-a.safetensors"}, ctx.settings)
    assert before != fingerprint({"name": "tiny-lora-b"}, ctx.settings)
    path = loras(ctx) / "tiny-lora-a.safetensors"
    path.write_bytes(path.read_bytes() + b" ")  # rewritten: another size
    assert fingerprint({"name": "tiny-lora-a"}, ctx.settings) != before
    with pytest.raises(NodeInputError) as error:  # the run stops before any node runs, as the node itself would
        fingerprint({"name": "nope"}, ctx.settings)
    assert error.value.input == "name"


# ------------------------------------------------------------------------------------------------ in a workflow

@node(output=True, category="test")
def ShowPatches(model: Model = Input(MODEL), clip: Clip = Input(CLIP)) -> dict:
    """Test output node: what was applied to a model and its CLIP."""
    return {"model": list(model.patches), "clip": list(clip.patches)}


def test_lora_stack_in_a_workflow(tmp_path):
    from graphflow import Engine, Settings
    from nodes import loaders

    registry = Registry()
    for module in (loaders, lora_module):
        registry.add_module(module)
    registry.add(spec_of(ShowPatches))
    settings = Settings(models_dir=tmp_path / "models", input_dir=tmp_path, output_dir=tmp_path)
    ensure_assets(settings.models_dir)
    engine = Engine(registry, settings, check_mutations=True)  # fails the run if a node changes its inputs

    def workflow(strength_b: float) -> dict:
        link = lambda node, output: {"from": node, "output": output}  # noqa: E731
        return {"graphflow": 1, "nodes": {
            "ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd"}},
            "a": {"type": "LoraLoader", "inputs": {"model": link("ckpt", "model"), "clip": link("ckpt", "clip"),
                                                   "name": "tiny-lora-a", "strength_model": 0.5}},
            "b": {"type": "LoraLoader", "inputs": {"model": link("a", "model"), "clip": link("a", "clip"),
                                                   "name": "tiny-lora-b", "strength_model": strength_b,
                                                   "strength_clip": 0.0}},
            "show": {"type": "ShowPatches", "inputs": {"model": link("b", "model"), "clip": link("b", "clip")}}}}

    first = engine.run(workflow(1.0))
    assert first.outputs["show"] == {"model": ["lora:tiny-lora-a:0.5", "lora:tiny-lora-b:1"],
                                     "clip": ["lora:tiny-lora-a:1"]}
    second = engine.run(workflow(-0.5))  # only the second LoRA reruns
    assert second.cached[:2] == ["ckpt", "a"] and "b" in second.executed
    assert second.outputs["show"]["model"] == ["lora:tiny-lora-a:0.5", "lora:tiny-lora-b:-0.5"]


# ------------------------------------------------------------------------------------------------ full-size layout

def test_every_kohya_layer_of_a_full_size_sd15_maps(tmp_path):
    """An SD 1.5 UNet and CLIP-L built on the meta device (shapes only): a Kohya LoRA over all 192 attention
    layers + a LoCon conv and all 72 text-encoder layers maps to layers of the right shapes."""
    import json

    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.builtin_models import PACKAGE_MODELS
    from nodes.lora import lora_delta, resolve_modules
    from nodes.tiny_assets import kohya_layer_names

    config = PACKAGE_MODELS / "configs" / "sd1"
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(json.loads((config / "unet" / "config.json").read_text()))
        text = CLIPTextModel(CLIPTextConfig(**json.loads((config / "text_encoder" / "config.json").read_text())))
    state = {}
    for name, layer in kohya_layer_names(unet, text).items():
        out_features, in_features, *kernel = layer.weight.shape
        state[f"{name}.lora_down.weight"] = torch.zeros(1, in_features, *kernel)
        state[f"{name}.lora_up.weight"] = torch.zeros(out_features, 1, *([1, 1] if kernel else []))
        state[f"{name}.alpha"] = torch.tensor(1.0)
    parsed = parse_lora(state, {}, unet.config)
    assert (len(parsed["unet"]), len(parsed["text_encoder"])) == (193, 72)
    for module, part in ((unet, "unet"), (text, "text_encoder")):
        resolved = resolve_modules(module, parsed[part])
        assert len(resolved) == len(parsed[part])
        for name, layers in resolved.items():
            shape = module.get_parameter(name).shape
            assert lora_delta(layers[0], shape, device="meta").shape == shape  # meta: shapes only, no math
