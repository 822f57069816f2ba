"""Imports run one way: a module may import its own layer or a lower one, never a higher one (docs/architecture.md).

The walk reads every module's source with `ast` (imports inside functions included: a late import is still a
dependency), so it needs no import of the package and sees what a checker like import-linter would see.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgerobust"

# Bottom to top. A unit is a top-level module or subpackage of edgerobust. `run` sits above `models` because
# `RunDir.load_model` rebuilds the network from its spec; `__init__` (the package facade: EdgeRobustError, RunDir)
# sits just above `run`; `__main__` is the CLI's entry point. The runner is the bottom layer: it imports nothing from
# edgerobust, and it holds what host and device share (precision and runtime records, protocol, seal rule, parity).
LAYERS: list[set[str]] = [
    {"runner"},
    {"errors", "registry", "io", "versions", "progress", "tomlfile", "recipe", "config", "compute_device", "claim",
     "names"},
    {"data", "models", "bounds"},
    {"run", "run_select"},
    {"__init__"},
    {"attacks", "training", "compress", "evaluation", "distill"},
    {"devices", "export", "bench", "certify", "remote", "smoothing", "imports"},
    {"report"},
    {"pipeline"},
    {"cli", "__main__", "recipes"},
]
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}

# Units that must import nothing from edgerobust outside themselves (the runner ships alone to the device).
SELF_CONTAINED = {"runner"}

# The report renders what commands wrote (run files: JSON, arrays, weights); it never loads compute code.
READS_FILES_ONLY = {"report": set(LAYERS[1]) | {"run", "__init__"}}

# Known exceptions, each to be removed by the change named beside it. Keys: (importing module, imported module).
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module name) for every edgerobust import in the file, relative imports resolved."""
    name = module_name(path, package)
    parent = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parent.split(".")[: len(parent.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "edgerobust":  # `from edgerobust import data` imports a unit; `__version__` the facade
                found += [(node.lineno, f"edgerobust.{a.name}" if (package / a.name).is_dir()
                           or (package / f"{a.name}.py").is_file() else "edgerobust") for a in node.names]
            else:
                found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, t) for line, t in found if t == "edgerobust" or t.startswith("edgerobust.")]


def unit_of(module: str) -> str:
    """The top-level module or subpackage; `edgerobust` itself is its `__init__` (the facade)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_edges(package: Path = PACKAGE) -> list[tuple[str, int, str, str, str]]:
    """(file, line, importing module, imported module, imported unit) for every import between two units."""
    edges = []
    for path in sorted(package.rglob("*.py")):
        source = module_name(path, package)
        for line, target in imported_modules(path, package):
            if unit_of(source) != unit_of(target):
                edges.append((path.relative_to(package.parent).as_posix(), line, source, target, unit_of(target)))
    return edges


def upward_imports(edges, layer_of=LAYER_OF, allowed=ALLOWED) -> list[str]:
    bad = []
    for file, line, source, target, unit in edges:
        here, there = layer_of[unit_of(source)], layer_of[unit]
        if there > here and (source, target) not in allowed:
            bad.append(f"{file}:{line}: {source} (layer {here}) imports {target} (layer {there})")
    return bad


def unit_cycles(edges) -> list[list[str]]:
    """Groups of units that import each other (strongly connected components, Tarjan), e.g. devices <-> export."""
    graph: dict[str, set[str]] = {}
    for _, _, source, _, unit in edges:
        graph.setdefault(unit_of(source), set()).add(unit)
    return cycles_of(graph)


def module_graph(unit: str, package: Path = PACKAGE) -> dict[str, set[str]]:
    """Imports between the modules of one unit (a subpackage), late imports included."""
    graph: dict[str, set[str]] = {}
    for path in sorted((package / unit).rglob("*.py")):
        source = module_name(path, package)
        for _, target in imported_modules(path, package):
            if unit_of(target) == unit and target != source:
                graph.setdefault(source, set()).add(target)
    return graph


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").is_file())}
    missing = sorted(units - set(LAYER_OF))
    assert not missing, f"place {missing} in a layer of tests/test_layers.py LAYERS (and docs/architecture.md)"


def test_no_layer_imports_a_higher_one():
    bad = upward_imports(import_edges())
    assert not bad, "imports must point down the layers:\n" + "\n".join(bad)


def test_the_report_reads_run_files_only():
    bad = [f"{file}:{line}: {target}" for file, line, source, target, unit in import_edges()
           if unit not in READS_FILES_ONLY.get(unit_of(source), {unit}) and (source, target) not in ALLOWED]
    assert not bad, "the report may import only the foundation layer and run.py:\n" + "\n".join(bad)


def test_no_import_cycles_between_units():
    cycles = unit_cycles(import_edges())
    assert not cycles, f"units that import each other: {cycles}"


def test_no_import_cycles_between_the_modules_of_remote():
    # transport.py <-> local.py / ssh.py was one (make_transport now lives in remote/connect.py)
    assert cycles_of(module_graph("remote")) == []


def test_self_contained_units_import_only_themselves():
    bad = [f"{file}:{line}: {target}" for file, line, source, target, unit in import_edges()
           if unit_of(source) in SELF_CONTAINED]
    assert not bad, "the runner must import nothing from edgerobust outside itself:\n" + "\n".join(bad)


def test_the_allow_list_is_still_needed():
    edges = {(source, target) for _, _, source, target, _ in import_edges()}
    stale = sorted(ALLOWED - edges)
    assert not stale, f"remove {stale} from ALLOWED: the import is gone"


# -- the checker itself, on made-up packages ----------------------------------------------------------------------
def test_checker_sees_relative_late_and_package_imports(tmp_path):
    pkg = tmp_path / "edgerobust"
    for sub in ("models", "report", "runner"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "models" / "net.py").write_text("def f():\n    from ..report import render\n")  # late, relative, upward
    (pkg / "report" / "render.py").write_text("from edgerobust.models.net import f\nfrom . import sections\n")
    (pkg / "runner" / "run.py").write_text("from .. import errors\nfrom .protocol import x\n")
    (pkg / "report" / "__init__.py").write_text("from edgerobust import __version__, models\n")
    edges = import_edges(pkg)
    assert upward_imports(edges) == ["edgerobust/models/net.py:2: edgerobust.models.net (layer 2) imports "
                                     "edgerobust.report (layer 7)",
                                     "edgerobust/runner/run.py:1: edgerobust.runner.run (layer 0) imports "
                                     "edgerobust.errors (layer 1)"]
    assert unit_cycles(edges) == [["models", "report"]]
    assert {(s, t) for _, _, s, t, _ in edges} == {
        ("edgerobust.models.net", "edgerobust.report"), ("edgerobust.report.render", "edgerobust.models.net"),
        ("edgerobust.runner.run", "edgerobust.errors"), ("edgerobust.report", "edgerobust"),
        ("edgerobust.report", "edgerobust.models")}


@pytest.mark.parametrize("allowed", [set(), {("edgerobust.a.x", "edgerobust.report.y")}])
def test_allow_list_is_exact(allowed):
    edges = [("edgerobust/a/x.py", 3, "edgerobust.a.x", "edgerobust.report.y", "report")]
    assert bool(upward_imports(edges, {"a": 0, "report": 1}, allowed)) == (not allowed)
