"""EntityAPMetric under DDP: 2 CPU ranks (gloo), uneven split padded like DistributedSampler."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from _eval_synthetic import make_gt
from helpers.ddp import run_ranks
from scipy import ndimage

from cropformer.evaluation.metric import EntityAPMetric


def _prediction(ids: np.ndarray, seed: int) -> dict:
    """An imperfect prediction (so that counting an image twice would change AP)."""
    rng = np.random.default_rng(seed)
    out = np.full(ids.shape, -1, dtype=np.int32)
    n = int(ids.max()) + 1
    for k in range(n):
        m = ids == k
        if rng.random() < 0.5:
            m = ndimage.binary_dilation(m, iterations=2)
        out[m & (out < 0)] = k
    return {
        "id_map": torch.from_numpy(out),
        "scores": torch.from_numpy(rng.random(n).astype(np.float32)),
        "query_indices": torch.arange(n),
    }


def _work(gt_path: str, rank: int, world: int) -> dict:
    gt = json.loads(Path(gt_path).read_text())
    _, maps = make_gt(num_images=5, seed=3)
    image_ids = [img["id"] for img in gt["images"]]  # 5 images
    # DistributedSampler(shuffle=False) pads 5 -> 6 by repeating the first image
    padded = image_ids + image_ids[:1]
    mine = padded[rank::world]  # rank 0: 0, 2, 4; rank 1: 1, 3, 0 (duplicate)
    metric = EntityAPMetric(gt_path)
    for image_id in mine:  # batch size 1, like the official test loader
        metric.update([_prediction(maps[image_id], image_id)], torch.tensor([image_id]))
    out = metric.compute()
    out["num_results"] = len(metric.results())
    out["num_images_seen"] = metric.num_images
    return out


@pytest.mark.ddp
def test_two_ranks_uneven_split_count_every_image_once(tmp_path):
    gt, maps = make_gt(num_images=5, seed=3)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    r0, r1 = run_ranks(partial(_work, str(gt_path)), tmp_path)
    assert r0 == r1  # every rank returns the same numbers
    single = EntityAPMetric(str(gt_path))
    for image_id in sorted(maps):
        single.update([_prediction(maps[image_id], image_id)], [image_id])
    ref = single.compute()
    assert r0["num_images_seen"] == 5 and r0["entity_num_images"] == 5
    assert r0["num_results"] == len(single.results())
    for key, value in ref.items():
        assert r0[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key
    assert 0 < ref["entity_ap"] < 100
