"""Refactoring the YAML tree changes no preset: every resolved config equals the snapshot.

``config_snapshot.json`` holds the resolved config of the train/eval/predict roots and of every
model, data, crop, experiment, trainer, logger, callbacks, debug and sweep option (paths masked).
A setting whose address changed on purpose is mapped old -> new in ``RENAMED`` (and keys that
are new on purpose in ``ADDED``), so the check stays exact: same values, at the new address.
After an intended change of a preset, regenerate the snapshot
(``python tests/integration/config_snapshot.py --write``), empty the two tables, and say so in
the commit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from config_snapshot import ROOTS, SNAPSHOT, snapshot

# root -> [(old flat key or prefix, new one)], applied to the snapshot before comparing
RENAMED: dict[str, list[tuple[str, str]]] = {
    # eval/predict test-time settings -> the shared group conf/inference (same names in train)
    # (`test.` as a prefix only: experiment=embedded_* sets the train flag `test: true`, which
    # replaced eval's old `test:` views node and now sits beside `inference:`)
    root: [("test.", "inference."), ("fusion.", "inference.fusion.")]
    for root in ("eval", "predict")
}
# root -> {flat key: why}: keys the snapshot lacks on purpose (their values are checked by the
# tests that use them)
_CLASS_AWARE = (
    "issue 26: class-aware tasks (conf/task/, data class keys); entity values unchanged, the "
    "class-aware ones are checked by tests/integration/test_class_aware.py"
)
ADDED: dict[str, dict[str, str]] = {
    root: {
        "model.net.backbone.channels": "the backbone declares its widths; pixel_decoder.in_channels"
        " interpolate them (unchanged values, checked by the backbone when built)",
        **{
            f"inference.{key}": "train.py reads the shared test-time group; null keeps the data"
            " config's views and model.fusion, so nothing changes"
            for key in ("short_side", "max_size", "num_crops", "crop_ratio")
        },
        **{f"inference.fusion.{key}": "as above" for key in ("decoder", "double_sigmoid")},
        **{
            f"data.{key}": _CLASS_AWARE
            for key in (
                "task",
                "format",
                "panoptic_dirs",
                "image_dirs",
                "categories",
                "num_classes",
            )
        },
        "task.name": _CLASS_AWARE,
    }
    for root in ROOTS
}
# presets that are new on purpose (name prefix: why); their values are checked by their own tests
NEW_PRESETS: dict[str, str] = {
    f"{root} data={name}": _CLASS_AWARE
    for root in ("train", "eval")
    for name in (
        "ade20k_instance",
        "ade20k_panoptic",
        "coco_instance",
        "coco_panoptic",
        "entityclass",
    )
} | {
    f"train experiment={name}": _CLASS_AWARE + " (paper Table 3 / 10b presets)"
    for name in (
        *(
            f"table10b_{row}_{m}"
            for row in ("coco_ins", "coco_pan", "ade20k_ins", "ade20k_pan")
            for m in ("mask2former", "cropformer")
        ),
        *(
            f"table3_{m}_{bb}"
            for m in ("mask2former", "cropformer")
            for bb in ("r50", "swint", "swinl")
        ),
    )
}
# issue 23: runtime=/exported=/calibration=/compile= of eval.py and predict.py (defaults keep the
# eager network: runtime torch, no file, no compile)
for _root in ("eval", "predict"):
    ADDED[_root].update(
        {
            f"{key}": "issue 23 runtime option; its default runs the eager network as before"
            for key in ("runtime", "exported", "calibration", "compile")
        }
    )

# preset -> {flat key: (old value, new value, why)}: the only values that changed on purpose
CHANGED: dict[str, dict[str, tuple[Any, Any, str]]] = {
    "train debug=fdr": {
        "trainer.val_check_interval": (
            900,
            1,
            "now ${trainer.max_steps}; fast_dev_run runs one batch and ignores it",
        )
    }
}


def _full(roots: dict[str, Any], name: str, preset: dict[str, Any] | None) -> dict[str, Any]:
    root = name.split(" ", 1)[0]
    flat = dict(roots[root])
    if preset is not None:
        for key in preset["removed"]:
            flat.pop(key)
        flat.update(preset["set"])
    return flat


def _migrate(root: str, flat: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in flat.items():
        for old, new in RENAMED.get(root, []):
            if (
                key.startswith(old)
                if old.endswith(".")
                else (key == old or key.startswith(old + "."))
            ):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def _all(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    configs = {name: _full(data["roots"], name, None) for name in data["roots"]}
    configs |= {name: _full(data["roots"], name, p) for name, p in data["presets"].items()}
    return configs


@pytest.fixture(scope="module")
def now() -> dict[str, dict[str, Any]]:
    return _all(snapshot())


@pytest.fixture(scope="module")
def before() -> dict[str, dict[str, Any]]:
    stored = _all(json.loads(SNAPSHOT.read_text()))
    out = {name: _migrate(name.split(" ", 1)[0], flat) for name, flat in stored.items()}
    for name, changes in CHANGED.items():
        for key, (old, new, _why) in changes.items():
            assert out[name][key] == old, f"{name}: {key} is not {old!r} in the snapshot"
            out[name][key] = new
    return out


def test_same_presets(now, before):
    assert set(NEW_PRESETS) <= set(now), "a preset listed in NEW_PRESETS is missing"
    assert sorted(set(now) - set(NEW_PRESETS)) == sorted(before), (
        "a preset was added or removed: regenerate the snapshot"
    )


def test_resolved_configs_unchanged(now, before):
    problems = []
    for name in sorted(before):
        root = name.split(" ", 1)[0]
        old, new = before[name], now.get(name, {})
        added = ADDED.get(root, {})
        for key in sorted(set(old) | set(new)):
            if key not in old and key in added:
                continue
            if old.get(key, "<absent>") != new.get(key, "<absent>"):
                problems.append(
                    f"{name}: {key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
                )
    shown = "\n".join(problems[:40])
    assert not problems, f"{len(problems)} resolved values differ from the snapshot:\n{shown}"


def test_snapshot_has_no_machine_path():
    text = SNAPSHOT.read_text()
    assert "/tmp/" not in text and "/home/" not in text and '"/' not in text
    assert set(json.loads(text)["roots"]) == set(ROOTS)
