"""Build the Hugging Face CLIP tokenizer files (vocab.json, merges.txt) from OpenAI's BPE table.

OpenAI's CLIP BPE table (MIT licence) ships inside the `open-clip-torch` wheel as
`open_clip/bpe_simple_vocab_16e6.txt.gz`. We only download the wheel (no install: the package
would pull torchvision) and derive the two files every CLIP tokenizer in SD 1.x/2.x uses.

    python scripts/build_clip_vocab.py [--wheel PATH] [--out nodes/models/clip_bpe]
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
MERGE_COUNT = 49152 - 256 - 2  # CLIP keeps this many merges; vocab = 512 byte symbols + merges + 2 specials


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-character table, which CLIP's BPE also uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def build(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    merges = bpe_text.split("\n")[1 : MERGE_COUNT + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def fetch_wheel(into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into), "open-clip-torch==3.3.0"], check=True)
    return next(into.glob("open_clip_torch-*.whl"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help="an open-clip-torch wheel already on disk")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "nodes" / "models" / "clip_bpe")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            bpe_text = gzip.decompress(zf.read(BPE_MEMBER)).decode("utf-8")
    vocab, merges = build(bpe_text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (args.out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
