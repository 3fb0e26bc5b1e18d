"""EntityDataModule end to end on a tiny synthetic dataset (generated in a tmp folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cropformer.data.datamodule import EntityDataModule


def _dm(tmp_path, **kw):
    args = dict(
        synthetic=dict(
            root=str(tmp_path / "syn"), num_train=4, num_val=2, num_test=2, image_size=[320, 240]
        ),
        train_short_sides=[96, 128],
        train_max_size=200,
        test_short_side=128,
        test_max_size=200,
        batch_size=2,
    )
    args.update(kw)
    return EntityDataModule(**args)


def test_synthetic_end_to_end(tmp_path):
    dm = _dm(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].dtype == torch.uint8
    assert batch["images"].shape[0] == 4  # B=2 images x T=2 views
    assert batch["images"].shape[-1] % 32 == 0 and batch["images"].shape[-2] % 32 == 0
    assert batch["boxes"].shape == (2, 2, 4)
    for b, t in enumerate(batch["targets"]):
        K = t["masks"].shape[0]
        assert t["masks"].shape == (K, 2, *batch["images"].shape[-2:])
        assert t["valid"].shape == (K, 2)
        assert bool(t["valid"][:, 0].all())  # every entity is visible in the full view
        # masks never overlap and are zero outside the view
        assert int(t["masks"].sum(0).max()) <= 1
        h, w = batch["view_sizes"][2 * b].tolist()
        assert not t["masks"][:, 0, h:, :].any() and not t["masks"][:, 0, :, w:].any()
    val = next(iter(dm.val_dataloader()))
    assert val["images"].shape[0] == 5 and val["boxes"].shape == (1, 5, 4)
    gt = json.loads(Path(dm.val_annotation_file).read_text())
    assert len(gt["images"]) == 2


def test_batch_size_per_device(tmp_path):
    dm = _dm(tmp_path, batch_size=4)
    dm.world_size = 2
    assert dm.batch_size_per_device == 2
    dm.world_size = 3
    with pytest.raises(ValueError, match="not divisible"):
        _ = dm.batch_size_per_device


def test_synthetic_cache_reused(tmp_path):
    dm = _dm(tmp_path)
    dm.prepare_data()
    first = dm.train_annotations
    mtime = (tmp_path / "syn").stat().st_mtime_ns
    dm2 = _dm(tmp_path)
    dm2.prepare_data()
    assert dm2.train_annotations == first
    assert (tmp_path / "syn").stat().st_mtime_ns == mtime


def test_workers(tmp_path):
    dm = _dm(tmp_path, num_workers=2)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape[0] == 4


def test_pixel_transforms_same_params_for_all_views(tmp_path):
    import numpy as np

    from cropformer.data.transforms import build_pixel_transform

    apply = build_pixel_transform(
        [{"_target_": "albumentations.ColorJitter", "p": 1.0, "brightness": 0.5, "hue": 0.2}]
    )
    assert apply is not None
    v = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    a, b = apply([v, v.copy()], 7)
    assert np.array_equal(a, b) and not np.array_equal(a, v)
    c, _ = apply([v, v], 8)
    assert not np.array_equal(a, c)
    dm = _dm(
        tmp_path,
        pixel_transforms=[{"_target_": "albumentations.ColorJitter", "p": 1.0}],
    )
    dm.prepare_data()
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["images"].shape[0] == 4
