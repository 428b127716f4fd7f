"""The SD socket values declare how the persistent disk cache stores them: conditionings, latents (with their
schedule and random state), images, masks and tokens come back equal, field by field; models are never stored;
a stored description whose fields or types do not fit the classes is refused."""
import json

import pytest
import torch

from graphflow.disk_cache import DiskCache, codec_of
from nodes.values import (Conditioning, Image, Latent, Mask, ScheduleValue, Tokens, Vae, value_from_disk,
                          value_to_disk)

KEY = "d" * 64


def schedule() -> ScheduleValue:
    return ScheduleValue(sampler="euler", steps=4, denoise=0.5, scheduler_class="EulerDiscreteScheduler",
                    scheduler_config={"beta_start": 0.00085, "trained_betas": None, "use_karras_sigmas": False,
                                      "lambda_min_clipped": float("-inf"),
                                      "_use_default_values": ["a", "b"]},
                    timesteps=torch.tensor([999.0, 749.0, 499.0, 249.0]), start_index=2)


def latent() -> Latent:
    samples = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(1, 4, 8, 8, generator=generator)
    return Latent(samples=samples, schedule=schedule(), clean=samples, noise=noise, rng_state=generator.get_state(),
                  noise_mask=torch.ones(1, 1, 8, 8))


VALUES = {
    "latent": latent,
    "conditioning": lambda: Conditioning(embeds=torch.randn(2, 77, 32), text=("a red circle", ""),
                                         empty_chunk=torch.zeros(1, 77, 32)),
    "image": lambda: Image(pixels=torch.rand(1, 16, 16, 3)),
    "mask": lambda: Mask(mask=torch.rand(1, 16, 16)),
    "tokens": lambda: Tokens(input_ids=torch.arange(77).unsqueeze(0), weights=torch.ones(1, 77, dtype=torch.float16),
                             text=("x",), attention_mask=torch.ones(1, 77, dtype=torch.int64)),
    "schedule": schedule,
}


def assert_same(a, b):
    assert type(a) is type(b)
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), name
        elif hasattr(x, "__dataclass_fields__"):
            assert_same(x, y)
        else:
            assert x == y and type(x) is type(y), name


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_each_small_value_comes_back_from_disk_equal(kind, tmp_path):
    value = VALUES[kind]()
    assert DiskCache(tmp_path).put(KEY, (value,))
    (again,) = DiskCache(tmp_path).get(KEY)
    assert_same(value, again)


def test_models_have_no_disk_form():
    vae = Vae(vae=torch.nn.Linear(2, 2), name="toy")
    assert codec_of(vae) is None
    with pytest.raises(TypeError, match="cannot be stored"):
        value_to_disk(Latent(samples=torch.zeros(1), schedule=vae))  # nested non-value: refused, not pickled


def test_a_description_with_a_json_value_where_a_tensor_belongs_is_refused():
    tensors, meta = value_to_disk(VALUES["image"]())
    meta["fields"]["pixels"] = {"json": "not a tensor"}
    with pytest.raises(TypeError, match="Image.pixels"):
        value_from_disk(tensors, meta)


def test_a_description_with_missing_or_extra_fields_is_refused():
    tensors, meta = value_to_disk(VALUES["mask"]())
    meta["fields"]["extra"] = {"json": 1}
    with pytest.raises(ValueError, match="fields differ"):
        value_from_disk(tensors, meta)


def test_the_description_is_plain_json(tmp_path):
    cache = DiskCache(tmp_path)
    cache.put(KEY, (latent(),))
    data = cache.path_of(KEY).read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    description = json.loads(header["__metadata__"]["graphflow"])
    assert description["outputs"][0]["tag"] == "sd.latent"
    assert description["outputs"][0]["meta"]["fields"]["schedule"]["fields"]["steps"] == {"json": 4}
