"""The package's import graph, read with `ast` (nothing is imported): no cycle, and no import
against the layer order written below. Function-level imports count too: a lazy import keeps a
module torch-free (cli, commands, configs), it does not make a cycle or an upward import fine."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module may import its own layer and the layers below it. The first prefix that
# matches a module's name decides its layer (a package name covers its modules).
LAYERS = [
    ("foundation", ["ept", "ept.registry", "ept.atomic_io", "ept.flags", "ept.method_configs", "ept.backbone_specs",
                    "ept.fetch"]),
    ("tasks", ["ept.tasks"]),
    ("configs", ["ept.config"]),  # TrainConfig checks task names and templates against the registry
    ("backbones and kinds", ["ept.prompts", "ept.pooling", "ept.batching", "ept.kinds", "ept.backbones", "ept.heads",
                             "ept.precision"]),
    ("train and serve", ["ept.training", "ept.checkpoint", "ept.evaluation", "ept.sweep", "ept.envinfo", "ept.report",
                         "ept.analysis", "ept.serving"]),
    ("commands", ["ept.cli", "ept.commands"]),
]

def modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "ept").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known) -> set[str]:
    """The package's own modules `name` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from ept.kinds import encoder` imports the module ept.kinds.encoder
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return {m for m in found if m in known and m != name}


def layer_of(name: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or (p != "ept" and name.startswith(p + ".")) for p in prefixes):
            return i
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in tests/test_imports.py")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_no_import_goes_against_the_layers():
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in sorted(graph().items()) for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert upward == []


def test_the_checks_can_fail():
    """The two checks on a made-up graph: a cycle is found, and so is an upward import."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("ept.kinds.causal") < layer_of("ept.serving.server") < layer_of("ept.commands.serve")
    edges = graph()
    assert "ept.kinds.causal" in edges["ept.kinds"] and "ept.kinds.base" in edges["ept.kinds.causal"]  # ast saw them


def test_help_and_ls_do_not_import_torch():
    """`ept --help` and `ept ls` answer without importing torch (2-3 s on a small machine): a
    module-level torch import reached from the parsers or the registries would undo that."""
    import subprocess
    import sys

    code = ("import sys; from ept.cli import build_parser; from ept.commands.ls import catalog; "
            "build_parser(); catalog(); print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_registered_analysis_resolves_to_a_function():
    from ept.analysis import ANALYSES

    for name in ANALYSES.names():
        assert callable(ANALYSES.get(name).resolve()), name
