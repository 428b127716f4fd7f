"""The floor a cold ``graphflow run workflows/txt2img.json`` is measured against (bench/cold_start.py).

    python bench/cold_floor.py MODEL_FOLDER OUT.png '{"prompt": ..., "negative": ..., "size": 64, "steps": 10, ...}'

A fresh process that does the same job with plain library calls and nothing of graphflow: import torch,
diffusers and transformers; build the UNet, VAE and CLIP text encoder from the folder's configs and load their
weights (``from_pretrained`` on the local sub-folders, as a diffusers user would); then the generation the
workflow describes, written out the way ``StableDiffusionPipeline.__call__`` does it (no pipeline object, whose
import would cost the floor more than graphflow pays), and the PNG. Prints one JSON line: seconds since the
process's own start at each phase, so the cost of importing, loading and generating can be told apart.
"""
import json
import sys
import time

STARTED = time.perf_counter()  # interpreter start-up before this line is in the parent's wall time only


def main(folder: str, out: str, job: dict) -> dict:
    marks = {}
    import torch
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    marks["imported"] = time.perf_counter() - STARTED
    with torch.no_grad():
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval()
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        scheduler = EulerAncestralDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
        marks["loaded"] = time.perf_counter() - STARTED

        def encode(text: str) -> torch.Tensor:
            ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids
            return text_encoder(ids)[0]

        context = torch.cat([encode(job["negative"]), encode(job["prompt"])])
        generator = torch.Generator("cpu").manual_seed(job["seed"])
        scale = 2 ** (len(vae.config.block_out_channels) - 1)  # the pipeline's vae_scale_factor
        shape = (1, unet.config.in_channels, job["size"] // scale, job["size"] // scale)
        scheduler.set_timesteps(job["steps"])
        latents = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            uncond, cond = unet(model_input, t, encoder_hidden_states=context).sample.chunk(2)
            guided = uncond + job["cfg"] * (cond - uncond)
            latents = scheduler.step(guided, t, latents, generator=generator).prev_sample
        pixels = (vae.decode(latents / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
        marks["generated"] = time.perf_counter() - STARTED
    from PIL import Image

    array = (pixels[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(array).save(out)
    marks["saved"] = time.perf_counter() - STARTED
    marks["versions"] = {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__}
    return marks


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))))
