"""Measure what ``toy-shapes`` (or a freshly trained candidate) draws: the checks of meaning as counts.

Every picture comes from a graphflow workflow (built with the Python builder, run by one Engine, written by
SaveImage); colour and shape are read back from the saved PNG with ``training.measure.classify``.
``tests/nodes/test_toy_meaning.py`` asserts on these counts for seeds 0-9; this script prints them as the
model card's table:

    python -m training.evaluate                          # the shipped model, seeds 0-9
    python -m training.evaluate --model /tmp/toy --seeds 30

The table goes to stdout; a line per batch of pictures (prompt, options, seeds, what they show, seconds) goes to
stderr as each is measured.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
import tempfile
import time
from pathlib import Path
from typing import TextIO

from PIL import Image as PILImage

from graphflow import Engine, Settings
from graphflow.builder import Graph
from training.measure import classify
from training.shapes import COLOURS, SHAPES, draw_shape

STEPS = 20
CFG = 7.0
SAMPLER = "euler"  # Schedule's default: what a new workflow samples with
PAIRS = [(colour, shape) for colour in COLOURS for shape in SHAPES]  # all twelve
BLUE_SQUARE = "blue_square.png"  # written into the input folder: a blue square on white, 36 px wide
Result = tuple[str, str]  # (colour, shape)


class ToyRuns:
    """Builds and runs toy-model workflows through one Engine (its cache shares first passes between checks).

    ``model`` is a LoadCheckpoint name (``toy-shapes``) or a diffusers folder anywhere on disk; with ``progress``
    (a text stream) every batch of pictures measured (one per prompt and options, all seeds) gets a line there."""

    def __init__(self, root: Path, model: str | Path = "toy-shapes", seeds=range(10), sampler: str = SAMPLER,
                 progress: TextIO | None = None):
        folder = Path(model)
        models_dir, self.model = (folder.parent, folder.name) if folder.is_dir() else (root / "models", str(model))
        settings = Settings(models_dir=models_dir, input_dir=root / "inputs", output_dir=root / "outputs")
        settings.input_dir.mkdir(parents=True, exist_ok=True)
        draw_shape("square", "blue", "white", (14, 14, 50, 50)).save(settings.input_dir / BLUE_SQUARE)
        self.engine = Engine(settings=settings)
        self.seeds = list(seeds)
        self.sampler = sampler
        self.progress = progress
        self.batches = 0  # measured so far
        self._measured: dict[tuple, list[Result]] = {}

    def picture(self, prompt, negative="", seed=0, **options) -> PILImage.Image:
        """One picture: ``pictures`` for a single seed."""
        return self.pictures(prompt, negative, [seed], **options)[0]

    def pictures(self, prompt, negative="", seeds=(0,), cfg=CFG, steps=STEPS, image=None, strength=1.0,
                 hires_strength=None) -> list[PILImage.Image]:
        """txt2img at 64x64, or img2img from an input file at ``strength``; ``hires_strength`` adds a hires
        fix (latents x2 nearest-exact, then that share of the steps again at 128x128).

        The seeds (consecutive) run as one batch with AddNoise's ``seed_plus_index``: picture i is exactly
        the picture seed i gives alone, at a fraction of the time of one run per seed."""
        seeds = list(seeds)
        if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
            raise ValueError(f"seeds must be consecutive to run as one batch, got {seeds}")
        g = Graph(self.engine.registry)
        ckpt = g.add("LoadCheckpoint", name=self.model)
        positive = g.add("TextEncode", clip=ckpt.clip, text=prompt).conditioning
        negative = g.add("TextEncode", clip=ckpt.clip, text=negative).conditioning

        def denoise(latent, share):
            schedule = g.add("Schedule", model=ckpt.model, sampler=self.sampler, steps=steps, denoise=share).schedule
            noised = g.add("AddNoise", latent=latent, schedule=schedule, seed=seeds[0], batch_seeds="seed_plus_index").latent
            return g.add("Sample", model=ckpt.model, positive=positive, negative=negative, latent=noised, cfg=cfg).latent

        if image is None:
            start = g.add("EmptyLatent", width=64, height=64, batch_size=len(seeds), vae=ckpt.vae).latent
        else:
            encoded = g.add("VAEEncode", vae=ckpt.vae, image=g.add("LoadImage", name=image).image).latent
            start = g.add("RepeatLatent", latent=encoded, amount=len(seeds)).latent
        latent = denoise(start, strength)
        if hires_strength is not None:
            upscaled = g.add("LatentUpscale", latent=latent, method="nearest-exact", scale_by=2.0).latent
            latent = denoise(upscaled, hires_strength)
        save = g.add("SaveImage", images=g.add("VAEDecode", vae=ckpt.vae, latent=latent).image, filename_prefix="meaning")
        pictures = []
        for saved in g.run(self.engine).outputs[save.id]["images"]:
            with PILImage.open(self.engine.settings.output_dir / saved["filename"]) as png:
                pictures.append(png.convert("RGB"))
        return pictures

    def measured(self, prompt, negative="", cfg=CFG, **options) -> list[Result]:
        """(colour, shape) for each seed; remembered, since several checks share runs."""
        key = (prompt, negative, cfg, tuple(sorted(options.items())))
        if key not in self._measured:
            started = time.perf_counter()
            self._measured[key] = [classify(p) for p in self.pictures(prompt, negative, self.seeds, cfg, **options)]
            self._report(prompt, negative, cfg, options, self._measured[key], time.perf_counter() - started)
        return self._measured[key]

    def _report(self, prompt, negative, cfg, options, results: list[Result], seconds: float) -> None:
        self.batches += 1
        if self.progress is None:
            return
        extra = "".join(f", {name} {value}" for name, value in sorted(options.items()))
        negative_text = f", negative {negative!r}" if negative else ""
        seen = ", ".join(f"{colour} {shape} x{n}" for (colour, shape), n in Counter(results).most_common())
        print(f"batch {self.batches}: {prompt!r}{negative_text}, cfg {cfg:g}{extra}, seeds {self.seeds[0]}-{self.seeds[-1]}"
              f" -> {seen} ({seconds:.1f} s)", file=self.progress, flush=True)

    def hires_kept(self, prompt: str, hires_strength: float = 0.5) -> list[bool]:
        """Per seed: does the hires fix (128x128) show the colour and shape of the 64x64 first pass?"""
        base = self.measured(prompt)
        hires = self.measured(prompt, hires_strength=hires_strength)
        return [first == second for first, second in zip(base, hires)]


def card_rows(runs: ToyRuns) -> list[tuple[str, str]]:
    """(check, result) rows for the model card, each an 'n/N' count over the seeds."""
    n = len(runs.seeds)

    def count(results, wanted) -> int:
        return sum(wanted(r) for r in results)

    rows = []
    for colour, shape in PAIRS:
        prompt = f"a {colour} {shape} on a white background"
        rows.append((f'"{prompt}"', f"{count(runs.measured(prompt), lambda r: r == (colour, shape))}/{n} {colour} {shape}"))
    for cfg in (1.0, CFG):
        right = sum(count(runs.measured(f"a {c} {s} on a white background", cfg=cfg), lambda r, c=c: r[0] == c) for c, s in PAIRS)
        rows.append((f"right colour at cfg {cfg:g} (the twelve prompts above)", f"{right}/{len(PAIRS) * n}"))
    rows.append(('"a circle", no negative prompt', f"red in {count(runs.measured('a circle'), lambda r: r[0] == 'red')}/{n}"))
    rows.append(('"a circle", negative prompt "red"', f"red in {count(runs.measured('a circle', 'red'), lambda r: r[0] == 'red')}/{n}"))
    for prompt, strength in (("a blue square", 0.3), ("a yellow triangle", 0.3), ("a yellow triangle", 0.9)):
        results = runs.measured(prompt, image=BLUE_SQUARE, strength=strength)
        rows.append((f'img2img from a blue square, strength {strength}, "{prompt}"',
                     f"{count(results, lambda r: r == ('blue', 'square'))}/{n} blue square, "
                     f"{count(results, lambda r: r == ('yellow', 'triangle'))}/{n} yellow triangle"))
    kept = runs.hires_kept("a red circle on a white background")
    rows.append(('hires fix of "a red circle on a white background" (64 → latents ×2 → strength 0.5 at 128×128)',
                 f"colour and shape kept in {sum(kept)}/{n}"))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy-shapes", help="LoadCheckpoint name or a diffusers folder")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    parser.add_argument("--sampler", default=SAMPLER, help="a Schedule sampler name")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        runs = ToyRuns(Path(root), args.model, range(args.seeds), args.sampler, progress=sys.stderr)
        print("| check | result |\n| --- | --- |")
        for check, result in card_rows(runs):
            print(f"| {check} | {result} |", flush=True)


if __name__ == "__main__":
    main()
