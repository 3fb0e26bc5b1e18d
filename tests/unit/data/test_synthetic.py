"""Synthetic generator: a partition into entities, deterministic, cached, safe concurrently."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util

from cropformer.data.synthetic import SyntheticSpec, render_scene
from cropformer.data.synthetic_store import prepare_synthetic

TINY = SyntheticSpec(num_train=3, num_val=2, num_test=2, image_size=(160, 120))


def test_scene_is_a_partition_with_fine_structures():
    spec = SyntheticSpec(image_size=(640, 480), num_objects=(8, 8), fine_fraction=1.0)
    img, label = render_scene(spec, [0, 0, 0])
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8
    k = int(label.max()) + 1
    assert (label >= 0).all() and set(np.unique(label)) == set(range(k))  # no holes, no gaps
    areas = np.bincount(label.ravel())
    assert areas.min() < 0.01 * label.size  # at least one fine structure (thin bar / small disc)


def test_knobs_change_the_scenes():
    few = render_scene(SyntheticSpec(image_size=(320, 240), num_objects=(1, 1)), [1, 0, 0])[1]
    many = render_scene(SyntheticSpec(image_size=(320, 240), num_objects=(12, 12)), [1, 0, 0])[1]
    assert many.max() > few.max()
    flat = render_scene(SyntheticSpec(image_size=(320, 240), texture_contrast=0.0), [2, 0, 0])
    img, label = flat
    for k in range(int(label.max()) + 1):  # flat colours: only the soft illumination varies
        px = img[label == k].astype(int)
        assert px.std(axis=0).max() < 12


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != "SPEC.json":
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_deterministic_and_valid_json(tmp_path):
    a = prepare_synthetic(tmp_path / "a", TINY, processes=1)
    b = prepare_synthetic(tmp_path / "b", TINY, processes=2)
    assert a.name == b.name == TINY.key()
    assert _digest(a) == _digest(b)
    data = json.loads((a / "train.json").read_text())
    assert len(data["images"]) == 3
    for img in data["images"]:
        anns = [x for x in data["annotations"] if x["image_id"] == img["id"]]
        assert sum(x["area"] for x in anns) == img["height"] * img["width"]
        masks = mask_util.decode([x["segmentation"] for x in anns])
        assert (masks.sum(-1) == 1).all()  # non-overlapping, covering
        for x in anns:
            assert x["area"] == int(mask_util.area(x["segmentation"]))
    assert SyntheticSpec(seed=1).key() != SyntheticSpec(seed=0).key()


def _worker(root: str) -> str:
    return str(prepare_synthetic(root, TINY, processes=1))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_concurrent_prepare_is_safe(tmp_path):
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        out = pool.map(_worker, [str(tmp_path)] * 2)
    assert out[0] == out[1]
    entries = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert entries == [TINY.key()]  # no leftover temporary folders
    assert len(json.loads((Path(out[0]) / "val.json").read_text())["images"]) == 2
