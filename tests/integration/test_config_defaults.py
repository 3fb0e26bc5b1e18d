"""The YAML defaults and the constructor defaults agree wherever both exist.

The shared YAML parts (conf/model/_base.yaml with its criterion, fusion, optimizer, scheduler
and association; conf/data/_base.yaml; the HorNet-L backbone; the fixed4 crop layout) restate
the keyword defaults of the classes they build. Each value is compared with the constructor's
default; the few deliberate differences are listed with the reason, and a listed difference
that disappears fails too (so the list stays true).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest
from omegaconf import OmegaConf

from cropformer.run.config import compose_config

# the presets whose nodes are the shared defaults (official sizes; the data base unchanged)
PRESETS = (
    ["model=cropformer_swinl", "data=entityseg"],
    ["model=cropformer_hornetl", "data=entityseg"],
)
# classes whose defaults are generic rather than one configuration's (a preset picks values)
GENERIC = {
    "cropformer.model.backbone.TimmBackbone": "one class for every timm model: each backbone "
    "file (conf/model/backbone/) sets that model's official values",
}
# (class, argument) -> why the YAML differs on purpose
DIFFERENT = {
    ("cropformer.data.datamodule.EntityDataModule", "batch_size"): "YAML: the official global "
    "batch 16 of the 8-GPU recipe; the class: 2, a batch a laptop can hold",
    ("cropformer.data.datamodule.EntityDataModule", "num_workers"): "YAML: auto (follows the "
    "machine, resolved by the commands); the class takes a number, 0 = in-process",
    ("cropformer.data.datamodule.EntityDataModule", "pin_memory"): "YAML: auto (resolved by the "
    "commands from the device); the class: False",
    ("cropformer.data.datamodule.EntityDataModule", "persistent_workers"): "YAML: keep workers "
    "between epochs of a long run; the class: False (no workers by default)",
    ("cropformer.data.datamodule.EntityDataModule", "eval_targets"): "YAML: AP reads the ground "
    "truth from the json, so evaluation batches skip the targets; the class keeps them for "
    "library users who compute losses on val",
    ("cropformer.data.datamodule.EntityDataModule", "seed"): "YAML: the run's seed "
    "(${oc.select:seed,0}); the class: 0",
    ("cropformer.model.decoder.MaskedAttentionDecoder", "num_queries"): "HorNet-L presets: "
    "200 queries (official configs); the class: 100 as Swin/R50",
}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _nodes(node: Any, path: str = ""):
    if isinstance(node, dict):
        if str(node.get("_target_", "")).startswith("cropformer."):
            yield path, node
        for key, value in node.items():
            yield from _nodes(value, f"{path}.{key}" if path else str(key))


def _comparisons() -> list[tuple[str, str, Any, Any, str]]:
    """(class, argument, YAML value, constructor default, where) for every shared value."""
    out = []
    for overrides in PRESETS:
        cfg = compose_config([*overrides, "paths.output_dir=."])
        for path, node in _nodes(OmegaConf.to_container(cfg, resolve=True)):
            target = node["_target_"]
            if target in GENERIC:
                continue
            module, _, name = target.rpartition(".")
            signature = inspect.signature(getattr(importlib.import_module(module), name))
            for key, value in node.items():
                param = signature.parameters.get(key)
                if key.startswith("_") or param is None or param.default is inspect.Parameter.empty:
                    continue
                if param.default is None or isinstance(value, dict):
                    continue  # None = not given / derived; nested configs are compared themselves
                out.append((target, key, value, param.default, f"{' '.join(overrides)}: {path}"))
    return out


def test_yaml_defaults_equal_constructor_defaults():
    comparisons = _comparisons()
    assert len(comparisons) > 100  # the model, losses, fusion, optimizer and data arguments
    problems, differing = [], set()
    for target, key, value, default, where in comparisons:
        if _plain(value) == _plain(default):
            continue
        if (target, key) in DIFFERENT:
            differing.add((target, key))
            continue
        problems.append(f"{where}.{key} = {value!r}, but {target}'s default is {default!r}")
    assert not problems, "\n".join(problems)
    stale = set(DIFFERENT) - differing
    assert not stale, f"listed as different but now equal (drop them from DIFFERENT): {stale}"


def test_crop_defaults_are_the_official_fixed4_layout():
    from cropformer.data.datamodule import EntityDataModule

    fixed4 = OmegaConf.to_container(compose_config(["paths.output_dir=."]).data.crop)
    assert EntityDataModule().crop == fixed4


@pytest.mark.parametrize("name", ["short_side", "max_size"])
def test_official_test_views_in_the_data_base_are_the_constructors(name):
    from cropformer.data.datamodule import EntityDataModule

    key = f"test_{name}"
    cfg = compose_config(["data=entityseg", "paths.output_dir=."])
    default = inspect.signature(EntityDataModule).parameters[key].default
    assert cfg.data[key] == default == {"short_side": 800, "max_size": 1333}[name]
