"""PQ, mIoU and instance AP under DDP: 2 CPU ranks (gloo), the last batch padded by repeating an
image (DistributedSampler): every rank gets the single-process numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.ddp import run_ranks

from cropformer.data.categories import CategorySet
from cropformer.evaluation.instance_ap import InstanceAPMetric
from cropformer.evaluation.panoptic_quality import PanopticQualityMetric
from cropformer.evaluation.semantic_iou import SemanticIoUMetric

CATS = CategorySet.from_json(
    [{"id": 1, "name": "band", "isthing": 0}, {"id": 2, "name": "blob", "isthing": 1}]
)


def _image(k: int):
    """Ground truth and an imperfect prediction of image k (seeded by k)."""
    rng = np.random.default_rng(k)
    gt = np.zeros((24, 32), dtype=np.int64)
    gt[:12] = 1  # band (stuff)
    gt[14:20, 4:12] = 2  # blob
    gt[14:22, 18:28] = 3  # blob
    gt_segs = [
        {"id": 1, "category": 0, "iscrowd": False},
        {"id": 2, "category": 1, "iscrowd": False},
        {"id": 3, "category": 1, "iscrowd": False},
    ]
    pred = np.roll(gt, int(rng.integers(0, 5)), axis=1)
    pred_segs = [
        {"id": i, "category": c} for i, c in ((1, 0), (2, 1), (3, int(rng.integers(0, 2))))
    ]
    sem_gt = np.where(gt == 1, 0, np.where(gt > 1, 1, 255))
    sem_pred = np.where(pred == 1, 0, 1)
    masks = torch.from_numpy(np.stack([pred == 2, pred == 3]))
    inst = {
        "masks": masks,
        "scores": torch.tensor([0.9, float(rng.random())]),
        "labels": torch.tensor([1, 1]),
    }
    return gt, gt_segs, pred, pred_segs, sem_gt, sem_pred, inst


def _gt_dict(ids):
    from cropformer.evaluation.rle import encode_mask

    anns = []
    for k in ids:
        gt = _image(k)[0]
        for seg in (2, 3):
            m = gt == seg
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": k,
                    "category_id": 2,
                    "iscrowd": 0,
                    "segmentation": encode_mask(m),
                    "area": int(m.sum()),
                    "bbox": [0, 0, 1, 1],
                }
            )
    return {
        "images": [{"id": k, "height": 24, "width": 32} for k in ids],
        "annotations": anns,
        "categories": [{"id": 2, "name": "blob"}],
    }


def _run(image_ids):
    pq, sem = PanopticQualityMetric(CATS.isthing), SemanticIoUMetric(2)
    ap = InstanceAPMetric(lambda: _gt_dict(range(1, 6)), CATS.ids, backend="pycocotools")
    for k in image_ids:
        gt, gt_segs, pred, pred_segs, sem_gt, sem_pred, inst = _image(k)
        pq.update(k, torch.from_numpy(pred), pred_segs, torch.from_numpy(gt), gt_segs)
        sem.update(k, torch.from_numpy(sem_pred), torch.from_numpy(sem_gt))
        ap.update([inst], [k])
    return {**pq.compute(), **sem.compute(), **ap.compute()}


def _work(rank: int, world: int) -> dict:
    padded = [1, 2, 3, 4, 5, 1]  # 5 images padded to 6 by repeating the first
    return _run(padded[rank::world])


@pytest.mark.ddp
def test_two_ranks_equal_one_process(tmp_path):
    r0, r1 = run_ranks(_work, tmp_path)
    single = _run([1, 2, 3, 4, 5])
    assert r0 == r1
    for key, value in single.items():
        assert r0[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key
    assert r0["pq_num_images"] == r0["sem_num_images"] == r0["ap_num_images"] == 5
    assert 0 < single["pq"] < 100 and 0 < single["ap"] < 100
