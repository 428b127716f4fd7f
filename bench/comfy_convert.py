"""How long reading a ComfyUI workflow takes: API prompt → Workflow and UI workflow → Workflow, per fixture of
workflows/comfyui/ (JSON already decoded; the registry already discovered), median of many repeats.

    python bench/comfy_convert.py [--repeats N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from graphflow.documents import read_document  # noqa: E402
from graphflow.registry import default_registry  # noqa: E402


def median_ms(document, registry, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read_document(document, "bench", registry)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    registry = default_registry()
    print(f"{'workflow':<20} {'nodes':>5} {'API ms':>8} {'UI ms':>8}")
    for api in sorted((ROOT / "workflows" / "comfyui").glob("*.api.json")):
        name = api.name.removesuffix(".api.json")
        prompt = json.loads(api.read_text())
        ui = json.loads(api.with_name(f"{name}.ui.json").read_text())
        print(f"{name:<20} {len(prompt):>5} {median_ms(prompt, registry, args.repeats):>8.3f} "
              f"{median_ms(ui, registry, args.repeats):>8.3f}")


if __name__ == "__main__":
    main()
