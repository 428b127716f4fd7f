"""The code base's shape: imports run one way, and no module grows far past a screenful of screens.

Both checks read the source with ``ast`` (nothing is imported), so they see imports inside functions too:
an import moved into a function to dodge a cycle at import time is still a cycle in the design."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("graphflow", "nodes")
# The project's rule is "no file far over 400 lines". 450 leaves room for a docstring or a few helpers
# added to a module near 400 while still catching the sprawling modules the rule is about (checkpoints.py
# had 696, prompt.py 481): a file that needs more is two families and should be split.
MAX_LINES = 450


def modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, anywhere in its file (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for statement in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(statement, ast.Import):
            targets |= {alias.name for alias in statement.names}
        elif isinstance(statement, ast.ImportFrom):
            if statement.level:
                base = package.split(".")
                base = base[:len(base) - (statement.level - 1)]
                origin = ".".join(base + ([statement.module] if statement.module else []))
            else:
                origin = statement.module or ""
            targets.add(origin)
            targets |= {f"{origin}.{alias.name}" for alias in statement.names}  # `from . import checkpoints`
    resolved = set()
    for target in targets:
        while target and target not in known:  # `from graphflow.node import Input` → graphflow.node
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_graph() -> nx.DiGraph:
    found = modules()
    graph = nx.DiGraph()
    for name, path in found.items():
        graph.add_node(name)
        for target in imported_modules(name, path, set(found)):
            if not (name.startswith(target + ".") and found[target].name == "__init__.py"):  # a package's own
                graph.add_edge(name, target)  # __init__ runs before its submodules: importing it is no cycle
    return graph


def test_there_is_no_import_cycle():
    cycles = sorted(" → ".join(cycle + [cycle[0]]) for cycle in nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(cycles)


def test_the_cycle_check_sees_imports_inside_functions(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("def thing():\n    from . import a\n    from pkg.c import other\n")
    (package / "c.py").write_text("")
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    assert imported_modules("pkg.a", package / "a.py", known) == {"pkg.b"}
    assert imported_modules("pkg.b", package / "b.py", known) == {"pkg", "pkg.a", "pkg.c"}


def test_the_engine_does_not_import_the_node_library():
    reaching = {name for name in import_graph() if name.startswith("graphflow")
                and any(target.startswith("nodes") for target in nx.descendants(import_graph(), name))}
    assert not reaching


def test_no_module_is_far_over_400_lines():
    long = {str(path.relative_to(ROOT)): count for path in modules().values()
            if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by family): {long}"
