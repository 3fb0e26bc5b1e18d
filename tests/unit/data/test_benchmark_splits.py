"""The embedded benchmark's scenes: train, val, test and the pre-training scenes are disjoint.

Each image is rendered from the seed ``(spec.seed, split id, index)``; the presets give the
benchmark seed 0 and the pre-training scenes seed 1. The test checks the rendered pixels, not
only the seeds: no image of one set appears in another.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cropformer.data.synthetic import SyntheticSpec
from cropformer.data.synthetic_store import SPLITS, prepare_synthetic
from cropformer.run.config import compose_config


def _spec_of(experiment: str) -> dict:
    cfg = compose_config([f"experiment={experiment}", "paths.output_dir=."])
    syn = dict(cfg.data.synthetic)
    syn.pop("root")
    return syn


def _hashes(folder: Path, split: str) -> set[str]:
    images = json.loads((folder / f"{split}.json").read_text())["images"]
    return {hashlib.sha1((folder / im["file_name"]).read_bytes()).hexdigest() for im in images}


def test_presets_keep_benchmark_and_pretraining_apart():
    bench, pre = _spec_of("embedded_cropformer"), _spec_of("embedded_pretrain")
    assert _spec_of("embedded_mask2former") == bench  # one benchmark for both models
    assert bench["seed"] != pre["seed"]
    assert bench["num_test"] >= 100  # the held-out split the headline is reported on
    assert bench["num_val"] >= 50


def test_rendered_splits_are_disjoint(tmp_path):
    # the presets' seeds, at a small size and count (the same seed streams as the benchmark)
    sets: dict[str, set[str]] = {}
    for seed, name in (
        (_spec_of("embedded_cropformer")["seed"], "bench"),
        (_spec_of("embedded_pretrain")["seed"], "pretrain"),
    ):
        spec = SyntheticSpec(num_train=4, num_val=4, num_test=4, image_size=(96, 64), seed=seed)
        folder = prepare_synthetic(tmp_path / name, spec)
        for split in SPLITS:
            sets[f"{name}/{split}"] = _hashes(folder, split)
            assert len(sets[f"{name}/{split}"]) == 4  # no duplicate inside a split either
    names = sorted(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not sets[a] & sets[b], f"{a} and {b} share an image"


def test_growing_one_split_changes_no_other(tmp_path):
    small = prepare_synthetic(
        tmp_path / "a", SyntheticSpec(num_train=2, num_val=2, num_test=1, image_size=(96, 64))
    )
    big = prepare_synthetic(
        tmp_path / "b", SyntheticSpec(num_train=2, num_val=2, num_test=3, image_size=(96, 64))
    )
    for split in ("train", "val"):
        assert _hashes(small, split) == _hashes(big, split)
    assert _hashes(small, "test") < _hashes(big, "test")
