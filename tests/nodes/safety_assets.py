"""A tiny StableDiffusionSafetyChecker folder built deterministically: random CLIP vision weights, one concept
embedding set to a red picture's own embedding so that red pictures are flagged and other colours are not."""
from pathlib import Path

import torch


def solid(colour, batch=1, size=48):
    return torch.tensor(colour, dtype=torch.float32).expand(batch, size, size, 3).clone()


RED, BLUE, GREEN = (0.9, 0.1, 0.1), (0.1, 0.1, 0.9), (0.1, 0.8, 0.1)


def build_checker_folder(folder: Path) -> Path:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    model = StableDiffusionSafetyChecker(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    with torch.no_grad():
        def embedding(colour):
            from nodes.pixels import pixels_to_pil
            clip_input = processor(pixels_to_pil(solid(colour)), return_tensors="pt").pixel_values
            return model.visual_projection(model.vision_model(clip_input)[1])[0]

        red, others = embedding(RED), [embedding(BLUE), embedding(GREEN)]
        cosine = torch.nn.functional.cosine_similarity
        closest_other = max(float(cosine(red, other, dim=0)) for other in others)
        model.concept_embeds.zero_()
        model.concept_embeds[:, 0] = 1.0
        model.concept_embeds_weights.fill_(2.0)  # cosine never exceeds 1: these concepts never fire
        model.concept_embeds[0] = red
        model.concept_embeds_weights[0] = (1.0 + closest_other) / 2  # between red itself and the nearest other colour
        model.special_care_embeds_weights.fill_(2.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
