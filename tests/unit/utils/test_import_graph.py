"""The import graph of src/cropformer: floors without back doors, no cycle between files.

Floors, low to high: schema/utils < data < model < losses < inference < evaluation < training <
run < api/cli (see docs/architecture.md). A module may import
its own floor or lower ones, never a higher one; ``cropformer/__init__.py`` may re-export lazily.
Every ``import`` counts, at module level or inside a function (a lazy import is still a
dependency). The library floors know nothing of Hydra or argparse, and only the data module
(a ``LightningDataModule``) of the floors below training imports Lightning (``utils`` holds
no Hydra helper: the run plumbing is the ``run`` floor).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src"
PKG = SRC / "cropformer"
FLOORS = {
    "schema": 0,
    "utils": 0,
    "data": 1,
    "model": 2,
    "losses": 3,
    "inference": 4,
    "evaluation": 5,
    "training": 6,
    "run": 7,
    "api": 8,
    "cli": 8,
}
LIBRARY = ("schema", "utils", "data", "model", "losses", "inference", "evaluation")
FRAMEWORKS = ("hydra", "omegaconf", "argparse", "lightning", "pytorch_lightning")
# the one library file that is a Lightning object by design
LIGHTNING_ADAPTERS = {"cropformer.data.datamodule"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path) -> Iterator[tuple[str, str, int]]:
    """(imported module, first name imported or '', line) of every import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                yield module, alias.name, node.lineno


def _resolve(module: str, name: str) -> str | None:
    """The file-module an import refers to (``from pkg import mod`` refers to ``pkg.mod``)."""
    if name and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module if module in MODULES else None


def _floor(module: str) -> int | None:
    parts = module.split(".")
    return FLOORS[parts[1]] if len(parts) > 1 else None


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for module, imported, _ in _imports(name, path):
            target = _resolve(module, imported)
            if target is not None and target != name:
                edges[name].add(target)
    return edges


def test_every_module_has_a_floor():
    assert all(_floor(m) is not None for m in MODULES if m != "cropformer")
    assert {m.split(".")[1] for m in MODULES if m != "cropformer"} <= set(FLOORS)


def test_no_import_goes_up_a_floor():
    upward = []
    for name, targets in _edges().items():
        low = _floor(name)
        if low is None:  # cropformer/__init__.py: lazy re-exports of the front ends
            continue
        upward += [f"{name} -> {t}" for t in sorted(targets) if (_floor(t) or 0) > low]
    assert upward == []


def test_no_import_cycle_between_files():
    edges = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert cycles == []


def test_library_floors_know_no_framework():
    found = []
    for name, path in MODULES.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in LIBRARY:
            continue
        for module, _, line in _imports(name, path):
            top = module.split(".")[0]
            if top in FRAMEWORKS:
                if top == "lightning" and name in LIGHTNING_ADAPTERS:
                    continue
                found.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert found == []


def test_no_private_name_is_imported_across_modules():
    found = []
    for name, path in MODULES.items():
        for module, imported, line in _imports(name, path):
            if module.startswith("cropformer") and imported.startswith("_"):
                found.append(f"{path.relative_to(SRC)}:{line} imports {module}.{imported}")
    assert found == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from cropformer.cli.train import train\n",
            ["cropformer.model.x -> cropformer.cli.train"],
        ),
        (
            "def f():\n    from cropformer.training import module\n",
            ["cropformer.model.x -> cropformer.training.module"],
        ),
        ("from cropformer.data.decode import load_image\n", []),
    ],
)
def test_the_checker_sees_module_and_function_level_imports(
    tmp_path, monkeypatch, source, expected
):
    fake = tmp_path / "x.py"  # read as if it were cropformer/model/x.py
    fake.write_text(source)
    found = [
        f"cropformer.model.x -> {_resolve(m, n)}"
        for m, n, _ in _imports("cropformer.model.x", fake)
        if _resolve(m, n) and (_floor(_resolve(m, n) or "") or 0) > 2
    ]
    assert found == expected
