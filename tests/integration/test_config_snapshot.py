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

# root -> [(old flat key or prefix, new one)], applied to the snapshot before comparing.
# Empty: the snapshot was regenerated on main after the composed-config refactor and the changes
# landed since (its equality check with the mappings old -> new is in the history:
# test.* -> inference.*, fusion.* -> inference.fusion.* for eval/predict; added keys listed).
RENAMED: dict[str, list[tuple[str, str]]] = {}
# root -> {flat key: why}: keys the snapshot lacks on purpose
ADDED: dict[str, dict[str, str]] = {}
# presets that are new on purpose (name: why); their values are checked by their own tests
NEW_PRESETS: dict[str, str] = {}
# preset -> {flat key: (old value, new value, why)}: values that changed on purpose
CHANGED: dict[str, dict[str, tuple[Any, Any, str]]] = {}


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
