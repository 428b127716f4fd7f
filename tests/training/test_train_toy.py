"""The toy-model training script end to end at a few steps: it writes a pipeline folder graphflow loads."""
import json

import pytest

from graphflow import Engine, Settings
from graphflow.builder import Graph
from training.train_toy import Config, lr_at, main, with_overrides

MICRO = ["dataset_size=24", "hires_dataset_size=4", "vae_steps=2", "unet_steps=4", "unet_batch=8", "hires_every=2",
         "warmup_steps=1", "log_every=1"]


def test_overrides_parse_json_values_and_name_wrong_fields():
    cfg = with_overrides(Config(), ["unet_steps=10", "caption_dropout=0.25", "unet_channels=[16, 32]"])
    assert (cfg.unet_steps, cfg.caption_dropout, cfg.unet_channels) == (10, 0.25, (16, 32))
    with pytest.raises(SystemExit, match="unet_stepz"):
        with_overrides(Config(), ["unet_stepz=10"])
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        with_overrides(Config(), ["unet_steps"])


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    rates = [lr_at(step, 100, 1.0, 10) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:])) and rates[-1] == pytest.approx(0.1, abs=1e-3)


def test_a_micro_run_trains_on_both_sizes_and_saves_a_loadable_pipeline(tmp_path, capsys):
    out = tmp_path / "micro"
    main(["--out", str(out), "--threads", "1", *sum((["--set", item] for item in MICRO), [])])
    log = json.loads((out / "training.json").read_text())["log"]
    assert [r["step"] for r in log if r["stage"] == "unet"] == [1, 2, 3, 4]
    assert next(r for r in log if r["stage"] == "latents")["hires"] == 4
    settings = Settings(models_dir=tmp_path, input_dir=tmp_path / "in", output_dir=tmp_path / "out")
    g = Graph()
    ckpt = g.add("LoadCheckpoint", name="micro")
    text = g.add("TextEncode", clip=ckpt.clip, text="a red circle").conditioning
    empty = g.add("EmptyLatent", width=128, height=128, vae=ckpt.vae).latent
    schedule = g.add("Schedule", model=ckpt.model, steps=2).schedule
    noised = g.add("AddNoise", latent=empty, schedule=schedule, seed=1).latent
    latent = g.add("Sample", model=ckpt.model, positive=text, latent=noised, cfg=1.0).latent
    save = g.add("SaveImage", images=g.add("VAEDecode", vae=ckpt.vae, latent=latent).image)
    (image,) = g.run(Engine(settings=settings)).outputs[save.id]["images"]
    assert (image["width"], image["height"]) == (128, 128)


def test_the_same_seed_and_config_give_the_same_weights(tmp_path, capsys):
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "other-seed"]
    for out, seed in zip(runs, ("0", "0", "1")):
        main(["--out", str(out), "--threads", "1", "--seed", seed, *sum((["--set", item] for item in MICRO), [])])
    weights = [sorted(p.relative_to(out).as_posix() for p in out.rglob("*.safetensors")) for out in runs]
    assert weights[0] == weights[1] == weights[2] and len(weights[0]) == 3
    same = [(runs[0] / name).read_bytes() == (runs[1] / name).read_bytes() for name in weights[0]]
    other = [(runs[0] / name).read_bytes() == (runs[2] / name).read_bytes() for name in weights[0]]
    assert all(same) and not any(other)
