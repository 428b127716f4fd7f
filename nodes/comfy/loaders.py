"""ComfyUI's loaders: CheckpointLoaderSimple, VAELoader, LoraLoader, LoraLoaderModelOnly, UpscaleModelLoader.

Each is graphflow's loader under ComfyUI's names (:class:`.delegate.Renamed`): the same name resolution (built-in
models such as ``tiny-sd`` included, sub-folder names, the ComfyUI / A1111 folder layouts of
:mod:`nodes.model_folders`), cache fingerprints and missing-file checks before anything runs."""
from pydantic import Field

from graphflow.context import RunContext
from graphflow.node import Input, node

from ..loaders import LoadCheckpoint, LoadVAE
from ..lora import LoraLoader as GraphflowLoraLoader
from ..lora import apply_lora_file
from ..upscale import LoadUpscaleModel
from ..values import CLIP, MODEL, UPSCALE_MODEL, VAE, Clip, Model, Vae
from .delegate import Renamed

_checkpoint = Renamed(LoadCheckpoint, {"ckpt_name": "name"}, file_inputs=("ckpt_name",))
_vae = Renamed(LoadVAE, {"vae_name": "name"}, file_inputs=("vae_name",))
_lora = Renamed(GraphflowLoraLoader, {"lora_name": "name"}, file_inputs=("lora_name",))
_upscale = Renamed(LoadUpscaleModel, {"model_name": "name"}, file_inputs=("model_name",))


@node(name="comfy.CheckpointLoaderSimple", outputs={"MODEL": MODEL, "CLIP": CLIP, "VAE": VAE}, category="comfy/loaders",
      pool="model", fingerprint=_checkpoint.fingerprint, preflight=_checkpoint.preflight)
def CheckpointLoaderSimple(
    ckpt_name: str = Field(description="a checkpoint in the models folder (as LoadCheckpoint names it; built-in: tiny-sd)"),
    *,
    ctx: RunContext,
) -> tuple[Model, Clip, Vae]:
    """ComfyUI's Load Checkpoint: LoadCheckpoint with its defaults."""
    return _checkpoint(ctx, ckpt_name=ckpt_name)


@node(name="comfy.VAELoader", outputs={"VAE": VAE}, category="comfy/loaders", pool="model",
      fingerprint=_vae.fingerprint, preflight=_vae.preflight)
def VAELoader(vae_name: str = Field(description="a VAE in models/vae/"), *, ctx: RunContext) -> Vae:
    """ComfyUI's Load VAE: LoadVAE."""
    return _vae(ctx, vae_name=vae_name)


@node(name="comfy.LoraLoader", outputs={"MODEL": MODEL, "CLIP": CLIP}, category="comfy/loaders", pool="model",
      fingerprint=_lora.fingerprint, preflight=_lora.preflight)
def LoraLoader(
    model: Model = Input(MODEL),
    clip: Clip = Input(CLIP),
    lora_name: str = Field(description="a LoRA .safetensors in models/loras/"),
    strength_model: float = Field(1.0, ge=-100.0, le=100.0),
    strength_clip: float = Field(1.0, ge=-100.0, le=100.0),
    *,
    ctx: RunContext,
) -> tuple[Model, Clip]:
    """ComfyUI's Load LoRA: graphflow's LoraLoader. Both strengths 0 leave the model and CLIP as they are."""
    if strength_model == 0 and strength_clip == 0:
        return model, clip
    return _lora(ctx, model=model, clip=clip, lora_name=lora_name, strength_model=strength_model, strength_clip=strength_clip)


@node(name="comfy.LoraLoaderModelOnly", outputs={"MODEL": MODEL}, category="comfy/loaders", pool="model",
      fingerprint=_lora.fingerprint, preflight=_lora.preflight)
def LoraLoaderModelOnly(
    model: Model = Input(MODEL),
    lora_name: str = Field(description="a LoRA .safetensors in models/loras/"),
    strength_model: float = Field(1.0, ge=-100.0, le=100.0),
    *,
    ctx: RunContext,
) -> Model:
    """ComfyUI's LoraLoaderModelOnly: the LoRA's UNet part only."""
    if strength_model == 0:
        return model
    with _lora.errors():
        patched, _ = apply_lora_file(model, None, _lora.literals({"lora_name": lora_name})["name"], strength_model, 0.0,
                                     ctx.settings)
    return patched


@node(name="comfy.UpscaleModelLoader", outputs={"UPSCALE_MODEL": UPSCALE_MODEL}, category="comfy/loaders",
      pool="model", fingerprint=_upscale.fingerprint, preflight=_upscale.preflight)
def UpscaleModelLoader(model_name: str = Field(description="an ESRGAN-style model in models/upscale_models/"),
                       *, ctx: RunContext):
    """ComfyUI's Load Upscale Model: LoadUpscaleModel."""
    return _upscale(ctx, model_name=model_name)
