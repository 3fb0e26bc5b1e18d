"""The counting shortcuts of the class-aware metrics equal the straightforward counts: PQ's
pixel counts (bincount vs unique), the semantic confusion (bincount vs torchmetrics), instance
RLEs encoded once per query."""

from __future__ import annotations

import json

import pytest
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from cropformer.evaluation.instance_ap import InstanceAPMetric
from cropformer.evaluation.panoptic_quality import OFFSET, _pair_counts, _value_counts
from cropformer.evaluation.semantic_iou import IGNORE, confusion_counts


@pytest.mark.parametrize("high", [7, 300, 1 << 30])  # the last one: unique's path
def test_pq_counts_equal_unique(high: int) -> None:
    g = torch.Generator().manual_seed(high % 97)
    gt = torch.randint(0, 6, (41 * 37,), generator=g) * (high // 6)
    pred = torch.randint(0, 5, (41 * 37,), generator=g)
    ids, counts = torch.unique(gt, return_counts=True)
    assert list(_value_counts(gt).items()) == list(zip(ids.tolist(), counts.tolist()))
    pairs, counts = torch.unique(gt * OFFSET + pred, return_counts=True)
    expected = [((p // OFFSET, p % OFFSET), c) for p, c in zip(pairs.tolist(), counts.tolist())]
    assert list(_pair_counts(gt, pred).items()) == expected  # same pairs, same order


def test_confusion_equals_torchmetrics() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (23, 31), generator=g)
    gt = torch.randint(0, 4, (23, 31), generator=g)
    gt[gt == 3] = IGNORE
    expected = multiclass_confusion_matrix(pred.flatten(), gt.flatten(), 4, ignore_index=IGNORE)
    assert torch.equal(confusion_counts(pred, gt, 4), expected)
    with pytest.raises(ValueError, match=r"prediction has class indices outside \[0, 4\)"):
        confusion_counts(pred + 1, gt, 4)


def test_instance_rle_once_per_query_gives_the_same_results() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.rand(3, 19, 23, generator=g) > 0.6
    base[2] = False  # an empty mask: skipped either way
    query = torch.tensor([0, 1, 0, 2, 1])
    inst = {
        "masks": base[query],
        "scores": torch.rand(5, generator=g),
        "labels": torch.tensor([0, 1, 2, 1, 0]),
        "query_indices": query,
    }
    inst["masks"][4, 0, 0] = ~inst["masks"][4, 0, 0]  # same query, another mask: encoded anew
    blobs = []
    for given in (inst, {k: v for k, v in inst.items() if k != "query_indices"}):
        metric = InstanceAPMetric({"images": [], "annotations": []}, [10, 11, 12])
        metric.update([given], [5])
        blobs.append(json.loads(bytes(metric.result_bytes[0].tolist())))
    assert blobs[0] == blobs[1] and len(blobs[0]) == 4
