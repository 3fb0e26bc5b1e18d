"""Resolved configs of every preset, for the snapshot test (``test_config_snapshot.py``).

Composes the three roots (train, eval, predict) and every option of every group they select,
resolves all interpolations with the paths masked (``<ROOT>``, ``<DATA>``, ``<LOG>``, ``<OUT>``:
no machine path), and records the roots in full and each option as its difference from its root
(``set``: flat key -> value, ``removed``: flat keys).

Regenerate the committed snapshot after an intended config change (and say so in the commit):

    python tests/integration/config_snapshot.py --write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
SNAPSHOT = Path(__file__).with_name("config_snapshot.json")
MASKED_PATHS = (
    "paths.root_dir='<ROOT>'",
    "paths.data_dir='<DATA>'",
    "paths.log_dir='<LOG>'",
    "paths.output_dir='<OUT>'",
)
ROOTS: dict[str, tuple[str, ...]] = {
    "train": (),
    "eval": ("ckpt=x.ckpt",),
    "predict": ("ckpt=x.ckpt", "input=x"),
}
# (root, group): the group's every option is a preset of that root
PRESET_GROUPS: tuple[tuple[str, str], ...] = (
    *(
        ("train", g)
        for g in (
            "model",
            "data",
            "data/crop",
            "experiment",
            "trainer",
            "logger",
            "callbacks",
            "debug",
            "sweep",
        )
    ),
    ("eval", "data"),
)
# eval and predict compose the same model and experiment files as train: one of each kind
EXTRA_PRESETS: tuple[tuple[str, str], ...] = (
    ("eval", "model=cropformer_r50"),
    ("eval", "model=mask2former_tiny"),
    ("eval", "experiment=embedded_cropformer"),
    ("eval", "experiment=mask2former_swinl_entityseg_3x"),
    ("predict", "model=cropformer_swinl"),
    ("predict", "model=mask2former_hornetl"),
)


def options(group: str) -> list[str]:
    """The presets of a config group (its YAML files, sorted; ``_name``: shared parts)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": leaf}``; lists and empty dicts are leaves."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def resolved(root: str, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The resolved job config of ``conf/<root>.yaml`` with ``overrides``, flattened."""
    sys.path.insert(0, str(REPO / "src"))
    from cropformer.run.config import compose_config

    extra = list(ROOTS[root]) + list(MASKED_PATHS) + list(overrides)
    if (CONF / "local" / "default.yaml").is_file():
        extra.append("~local")  # machine-local overrides are not part of the presets
    cfg = compose_config(extra, config_name=root, conf_dir=CONF)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return flatten(container)


def difference(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """What ``other`` sets differently from ``base`` and which of its keys it lacks."""
    changed = {k: v for k, v in other.items() if k not in base or base[k] != v}
    return {"set": changed, "removed": sorted(k for k in base if k not in other)}


def snapshot() -> dict[str, Any]:
    """Roots in full; every preset as its difference from its root."""
    roots = {root: resolved(root) for root in ROOTS}
    presets: dict[str, Any] = {}
    for root, group in PRESET_GROUPS:
        for option in options(group):
            name = f"{root} {group}={option}"
            presets[name] = difference(roots[root], resolved(root, (f"{group}={option}",)))
    for root, override in EXTRA_PRESETS:
        presets[f"{root} {override}"] = difference(roots[root], resolved(root, (override,)))
    return {"roots": roots, "presets": presets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {SNAPSHOT.name}")
    args = parser.parse_args()
    data = snapshot()
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if args.write:
        SNAPSHOT.write_text(text)
        print(f"wrote {SNAPSHOT.relative_to(REPO)} ({len(data['presets'])} presets)")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
