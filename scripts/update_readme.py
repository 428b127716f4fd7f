"""Regenerate the README sections that are derived from code, so they cannot drift:

- the node catalog (from the registry),
- the sampler table (from nodes.sampling.SAMPLERS),
- the performance table (from bench/RESULTS.md, written by bench/run.py),
- the loading-cost table (from bench/load_cost.json, written by bench/load_cost.py).

    python scripts/update_readme.py          # rewrite README.md in place
    python scripts/update_readme.py --check  # exit 1 if README.md is out of date (the test suite runs this)

Each section sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT))  # run from anywhere without installing


def node_catalog() -> str:
    from graphflow.registry import discover

    catalog = discover(include_entry_points=False).catalog()
    by_category: dict[str, list[str]] = {}
    for name, info in catalog.items():
        inputs = []
        for input_name, spec in info["inputs"].items():
            if spec["kind"] == "socket":
                inputs.append(f"`{input_name}`: {spec['type']}{'' if spec['required'] else '?'}")
            else:
                default = f" = `{spec['default']!r}`" if "default" in spec else ""
                inputs.append(f"`{input_name}`{default}")
        outputs = ", ".join(f"`{k}`: {v}" for k, v in info["outputs"].items()) or "*(output node)*"
        by_category.setdefault(info["category"], []).append(
            f"| **{name}** | {info['description']} | {'<br>'.join(inputs) or '—'} | {outputs} |"
        )
    lines = []
    for category in sorted(by_category):
        lines += [f"\n#### {category}\n", "| node | what it does | inputs | outputs |", "|---|---|---|---|"]
        lines += sorted(by_category[category])
    return "\n".join(lines).strip() + "\n"


def sampler_table() -> str:
    from nodes.sampling import SAMPLERS

    lines = ["| graphflow `sampler` | A1111 name | diffusers scheduler | config overrides |", "|---|---|---|---|"]
    for s in SAMPLERS.values():
        overrides = ", ".join(f"`{k}={v!r}`" for k, v in s.overrides.items()) or "—"
        lines.append(f"| `{s.name}` | {s.a1111} | `{s.scheduler_class}` | {overrides} |")
    return "\n".join(lines) + "\n"


def performance_table() -> str:
    results = ROOT / "bench" / "RESULTS.md"
    if not results.exists():
        return "No benchmark results yet: run `python bench/run.py`.\n"
    text = results.read_text(encoding="utf-8")
    summary = text.split("## What each row measures")[0]  # the table, the verdict and the machine
    lines = [line for line in summary.splitlines() if not line.startswith("# ")]
    body = "\n".join(lines).replace("## Machine and run", "**Machine and run**").strip()
    return f"From `python bench/run.py` ([bench/RESULTS.md](bench/RESULTS.md) explains every row):\n\n{body}\n"


def load_cost_table() -> str:
    results = ROOT / "bench" / "load_cost.json"
    if not results.exists():
        return "Not measured yet: run `python bench/load_cost.py --shape sd1 sdxl`.\n"
    from bench.load_cost import markdown

    return markdown(json.loads(results.read_text(encoding="utf-8"))["results"])


SECTIONS = {"nodes": node_catalog, "samplers": sampler_table, "performance": performance_table,
            "load-cost": load_cost_table}


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if pattern.search(text):
            body = make()
            text = pattern.sub(lambda m: m.group(1) + body + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether README.md is up to date")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("README.md is out of date: run python scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
