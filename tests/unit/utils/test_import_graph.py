"""The import graph of src/cropformer: floors without back doors, no cycle between files.

Floors, low to high: schema/utils < data < model < losses < inference < evaluation < training <
run < api/cli (see docs/architecture.md). A module may import its own floor or lower ones, never
a higher one. Every import counts: at module level or inside a function (a lazy import is still a
dependency), ``importlib.import_module("cropformer...")`` / ``__import__`` with a literal name,
and ``from cropformer import X`` (the package root re-exports the top floor lazily, so it counts
as the top floor; only dunder metadata such as ``__version__`` is exempt). The library floors
know nothing of Hydra or argparse, not even through a helper: a library module whose imports lead,
at any depth, to a module importing a framework is a violation. Only the data module (a
``LightningDataModule``) of the floors below training imports Lightning.

:func:`violations` is the one check; ``test_the_real_tree_has_no_violation`` runs it on
``src/cropformer`` and the self-tests run it on a fake tree with each kind of back door.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src"
ROOT = "cropformer"
FLOORS = {
    "schema": 0,
    "utils": 0,
    "data": 1,
    "model": 2,
    "losses": 3,
    "inference": 4,
    "evaluation": 5,
    "export": 5,
    "training": 6,
    "run": 7,
    "api": 8,
    "cli": 8,
}
TOP = max(FLOORS.values())
LIBRARY = ("schema", "utils", "data", "model", "losses", "inference", "evaluation", "export")
FRAMEWORKS = ("hydra", "omegaconf", "argparse", "lightning", "pytorch_lightning")
LIGHTNING = ("lightning", "pytorch_lightning")
# the one library file that is a Lightning object by design
LIGHTNING_ADAPTERS = {"cropformer.data.datamodule"}
DYNAMIC_IMPORTS = ("import_module", "__import__")


def modules_of(src: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package under ``src``."""
    out = {}
    for path in sorted((src / ROOT).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path) -> Iterator[tuple[str, str, int]]:
    """(imported module, name imported or '', line) of every import in the file.

    ``import_module("x.y")`` and ``__import__("x.y")`` with a literal string count as
    ``import x.y``.
    """
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
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                called in DYNAMIC_IMPORTS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield first.value, "", node.lineno


def _target(modules: dict[str, Path], module: str, name: str) -> str | None:
    """The module an import refers to (``from pkg import mod`` refers to ``pkg.mod``)."""
    if name and f"{module}.{name}" in modules:
        return f"{module}.{name}"
    return module if module in modules else None


def floor_of(module: str) -> int | None:
    """The floor of a module; the package root counts as the top floor (it re-exports the API)."""
    parts = module.split(".")
    if len(parts) == 1:
        return TOP
    return FLOORS.get(parts[1])


def edges_of(modules: dict[str, Path]) -> dict[str, dict[str, tuple[str, int]]]:
    """``{module: {imported module: (name imported, line)}}`` inside the package."""
    edges: dict[str, dict[str, tuple[str, int]]] = {m: {} for m in modules}
    for name, path in modules.items():
        for module, imported, line in imports_of(name, path):
            target = _target(modules, module, imported)
            if target is None or target == name:
                continue
            if target == ROOT and imported.startswith("__") and imported.endswith("__"):
                continue  # package metadata (__version__) is not a re-export of the API
            edges[name].setdefault(target, (imported, line))
    return edges


def _frameworks(name: str, path: Path, adapter_ok: bool) -> list[tuple[str, int]]:
    """(framework module, line) of every framework import of one file; ``adapter_ok``: the
    Lightning imports of the data-module adapter itself are not counted."""
    found = []
    for module, _, line in imports_of(name, path):
        top = module.split(".")[0]
        if top in FRAMEWORKS and not (
            adapter_ok and top in LIGHTNING and name in LIGHTNING_ADAPTERS
        ):
            found.append((module, line))
    return found


def violations(src: Path) -> list[str]:
    """Every floor violation of the package under ``src``, one line each.

    - ``upward``: a module imports a higher floor (the package root counts as the top floor);
    - ``framework``: a library module imports Hydra/argparse/Lightning itself;
    - ``framework via``: a library module reaches such a module through its imports (any depth).
    """
    modules = modules_of(src)
    edges = edges_of(modules)
    found = []
    for name, targets in edges.items():
        low = floor_of(name)
        if name == ROOT or low is None:
            continue  # the package root re-exports lazily; unknown folders: see the next test
        for target, (_, line) in sorted(targets.items()):
            if (floor_of(target) or 0) > low:
                found.append(f"upward: {name}:{line} imports {target}")
    # reached through an import, even the adapter's Lightning counts: nothing may import it
    reached = {name: _frameworks(name, path, adapter_ok=False) for name, path in modules.items()}
    for name, path in modules.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in LIBRARY:
            continue
        own = _frameworks(name, path, adapter_ok=True)
        found += [f"framework: {name}:{line} imports {mod}" for mod, line in own]
        seen, stack = {name}, [name]
        while stack:  # every module reachable from this one
            for nxt in edges[stack.pop()]:
                if nxt in seen:
                    continue
                seen.add(nxt)
                stack.append(nxt)
                if reached[nxt]:
                    found.append(f"framework via: {name} reaches {reached[nxt][0][0]} via {nxt}")
    return found


MODULES = modules_of(SRC)


def test_every_module_has_a_floor():
    assert all(floor_of(m) is not None for m in MODULES)
    assert {m.split(".")[1] for m in MODULES if m != ROOT} <= set(FLOORS)


def test_the_real_tree_has_no_violation():
    assert violations(SRC) == []


def test_no_import_cycle_between_files():
    edges = {m: set(t) for m, t in edges_of(MODULES).items()}
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


def test_no_private_name_is_imported_across_modules():
    found = []
    for name, path in MODULES.items():
        for module, imported, line in imports_of(name, path):
            private = imported.startswith("_") and not imported.startswith("__")
            if module.startswith(ROOT) and private:
                found.append(f"{path.relative_to(SRC)}:{line} imports {module}.{imported}")
    assert found == []


# ------------------------------------------------------------------ self-test on a fake tree

FAKE_TREE = {
    "cropformer/__init__.py": (
        '__version__ = "0"\n\n\ndef __getattr__(name):\n'
        "    from cropformer import api\n\n    return getattr(api, name)\n"
    ),
    "cropformer/api/__init__.py": (
        "from cropformer.run.config import compose\n\n\ndef load(): ...\n"
    ),
    "cropformer/run/__init__.py": "",
    "cropformer/run/config.py": "import hydra\n\n\ndef compose(): ...\n",
    "cropformer/utils/__init__.py": "",
    "cropformer/utils/errors.py": "class UserError(Exception): ...\n",
    "cropformer/data/__init__.py": "",
    "cropformer/data/datamodule.py": "import lightning\n",
    "cropformer/model/__init__.py": "",
    "cropformer/model/net.py": (
        "from cropformer import __version__\nfrom cropformer.utils.errors import UserError\n"
    ),
    "cropformer/training/__init__.py": "",
    "cropformer/training/module.py": (
        "import lightning\nfrom cropformer.model.net import UserError\n"
    ),
    "cropformer/cli/__init__.py": "",
    "cropformer/cli/train.py": "from cropformer.api import load\n",
}

BACK_DOORS = {
    "module-level upward import": (
        "cropformer/model/net.py",
        "from cropformer.cli.train import load\n",
        "upward: cropformer.model.net:1 imports cropformer.cli.train",
    ),
    "lazy import in a function": (
        "cropformer/model/net.py",
        "def f():\n    from cropformer.training import module\n",
        "upward: cropformer.model.net:2 imports cropformer.training.module",
    ),
    "from cropformer import X (the root re-exports the API)": (
        "cropformer/model/net.py",
        "from cropformer import load\n",
        "upward: cropformer.model.net:1 imports cropformer",
    ),
    "importlib.import_module with a literal name": (
        "cropformer/model/net.py",
        'import importlib\n\nmod = importlib.import_module("cropformer.cli.train")\n',
        "upward: cropformer.model.net:3 imports cropformer.cli.train",
    ),
    "__import__ with a literal name": (
        "cropformer/model/net.py",
        'mod = __import__("cropformer.training.module")\n',
        "upward: cropformer.model.net:1 imports cropformer.training.module",
    ),
    "Hydra imported by a library module": (
        "cropformer/model/net.py",
        "from omegaconf import DictConfig\n",
        "framework: cropformer.model.net:1 imports omegaconf",
    ),
    "Hydra reached through utils": (
        "cropformer/utils/errors.py",
        "def compose():\n    from hydra import compose\n",
        "framework via: cropformer.model.net reaches hydra via cropformer.utils.errors",
    ),
    "Lightning reached through the data module adapter": (
        "cropformer/model/net.py",
        "from cropformer.data import datamodule\n",
        "framework via: cropformer.model.net reaches lightning via cropformer.data.datamodule",
    ),
    "Lightning outside the data module adapter": (
        "cropformer/data/records.py",
        "import lightning.pytorch as pl\n",
        "framework: cropformer.data.records:1 imports lightning.pytorch",
    ),
}


def _fake_tree(root: Path) -> Path:
    for rel, text in FAKE_TREE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_check_passes_a_clean_fake_tree(tmp_path):
    """The fake tree itself (api -> run -> Hydra, the datamodule's Lightning, __version__) is
    clean, so each self-test below fails for its back door alone."""
    assert violations(_fake_tree(tmp_path)) == []


@pytest.mark.parametrize("door", sorted(BACK_DOORS))
def test_the_check_finds_each_back_door(tmp_path, door):
    rel, text, expected = BACK_DOORS[door]
    root = _fake_tree(tmp_path)
    path = root / rel
    path.write_text(text + (path.read_text() if path.exists() else ""))
    found = violations(root)
    assert expected in found, found
