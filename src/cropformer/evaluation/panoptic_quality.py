"""Panoptic quality (PQ = SQ x RQ, all / things / stuff) as a ``torchmetrics.Metric``.

The per-image matching is the COCO panopticapi's ``pq_compute_single_core``: a predicted and a
ground-truth segment of the same class match when their IoU is above 0.5, where the union leaves
out the predicted pixels on VOID (id 0); crowd segments are never matched; an unmatched prediction
is not a false positive when more than half of it lies on VOID or on the crowd region of its class
(the last crowd segment of that class in the image, as panopticapi keeps it). The summary is its
``pq_average``: per class PQ = IoU_sum / (TP + FP/2 + FN/2), SQ = IoU_sum / TP, RQ = TP / (TP +
FP/2 + FN/2), averaged over the classes with TP + FP + FN > 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from cropformer.evaluation.per_image_rows import PerImageRowsMetric

#: the combined id ``gt * OFFSET + pred`` of panopticapi
OFFSET = 256 * 256 * 256
VOID = 0
#: ids (or id pairs) below this are counted with bincount, larger ones with unique
_BINCOUNT_LIMIT = 1 << 24


def pq_image_stats(
    pred: Tensor,
    pred_segments: Sequence[Mapping[str, Any]],
    gt: Tensor,
    gt_segments: Sequence[Mapping[str, Any]],
) -> dict[int, list[float]]:
    """Per-class ``[tp, fp, fn, iou_sum]`` of one image.

    Shape: pred, gt (H, W) integer segment ids, 0 = VOID.

    Args:
        pred_segments: ``{"id", "category"}`` of every predicted segment (ids present in ``pred``).
        gt_segments: ``{"id", "category", "iscrowd"}`` of every ground-truth segment.

    Raises:
        ValueError: a predicted id in the map without an entry, or an entry without pixels
            (panopticapi refuses both).
    """
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ"
        )
    pred = pred.to(torch.int64).flatten()
    gt = gt.to(torch.int64).flatten()
    pred_cat = {int(s["id"]): int(s["category"]) for s in pred_segments}
    gt_cat = {int(s["id"]): int(s["category"]) for s in gt_segments}
    gt_crowd = {int(s["id"]): bool(s.get("iscrowd", False)) for s in gt_segments}
    pred_area = _value_counts(pred)
    extra = sorted(set(pred_area) - set(pred_cat) - {VOID})
    if extra:
        raise ValueError(f"predicted segment ids {extra[:5]} are in the map but have no entry")
    missing = sorted(set(pred_cat) - set(pred_area))
    if missing:
        raise ValueError(f"predicted segments {missing[:5]} have an entry but no pixels")
    gt_area = _value_counts(gt)
    inter = _pair_counts(gt, pred)
    stats: dict[int, list[float]] = {}

    def add(cat: int, i: int, value: float = 1.0) -> None:
        stats.setdefault(cat, [0.0, 0.0, 0.0, 0.0])[i] += value

    gt_matched, pred_matched = set(), set()
    for (g, p), n in inter.items():
        if g not in gt_cat or p not in pred_cat or gt_crowd[g] or gt_cat[g] != pred_cat[p]:
            continue
        union = pred_area[p] + gt_area.get(g, 0) - n - inter.get((VOID, p), 0)
        iou = n / union
        if iou > 0.5:
            add(gt_cat[g], 0)
            add(gt_cat[g], 3, iou)
            gt_matched.add(g)
            pred_matched.add(p)
    crowd_of: dict[int, int] = {}
    for g, cat in gt_cat.items():
        if g in gt_matched:
            continue
        if gt_crowd[g]:
            crowd_of[cat] = g
            continue
        add(cat, 2)
    for p, cat in pred_cat.items():
        if p in pred_matched:
            continue
        ignored = inter.get((VOID, p), 0)
        if cat in crowd_of:
            ignored += inter.get((crowd_of[cat], p), 0)
        if ignored / pred_area[p] > 0.5:
            continue
        add(cat, 1)
    return stats


def _value_counts(values: Tensor) -> dict[int, int]:
    """Pixels per id present, ids ascending. Shape: values (N,) int64."""
    if values.numel() and int(values.min()) >= 0 and int(values.max()) < _BINCOUNT_LIMIT:
        counts = torch.bincount(values)  # a counting pass instead of unique's sort
        ids = torch.nonzero(counts).flatten()
        return dict(zip(ids.tolist(), counts[ids].tolist()))
    ids, counts = torch.unique(values, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


def _pair_counts(gt: Tensor, pred: Tensor) -> dict[tuple[int, int], int]:
    """Pixels per (gt id, pred id) pair present, pairs ascending. Shape: gt, pred (N,) int64."""
    if gt.numel() and int(gt.min()) >= 0 and int(pred.min()) >= 0:
        num_pred = int(pred.max()) + 1
        if (int(gt.max()) + 1) * num_pred < _BINCOUNT_LIMIT:
            counts = torch.bincount(gt * num_pred + pred)
            pairs = torch.nonzero(counts).flatten()
            return {
                (p // num_pred, p % num_pred): c
                for p, c in zip(pairs.tolist(), counts[pairs].tolist())
            }
    pairs, counts = torch.unique(gt * OFFSET + pred, return_counts=True)
    return {(p // OFFSET, p % OFFSET): c for p, c in zip(pairs.tolist(), counts.tolist())}


def pq_summary(stats: Tensor, isthing: Sequence[bool]) -> dict[str, float]:
    """PQ / SQ / RQ in percent over all, thing and stuff classes (panopticapi ``pq_average``).

    Shape: stats (C, 4) summed ``[tp, fp, fn, iou_sum]`` per class.
    """
    thing = torch.as_tensor(list(isthing), dtype=torch.bool)
    tp, fp, fn, iou = stats.double().unbind(1)
    out: dict[str, float] = {}
    for suffix, select in (("", torch.ones_like(thing)), ("_th", thing), ("_st", ~thing)):
        present = select & ((tp + fp + fn) > 0)
        n = int(present.sum())
        if n == 0:
            out.update({f"pq{suffix}": 0.0, f"sq{suffix}": 0.0, f"rq{suffix}": 0.0})
            continue
        denom = tp + 0.5 * fp + 0.5 * fn
        pq = torch.where(present, iou / denom.clamp(min=1e-12), 0.0)
        sq = torch.where(present & (tp > 0), iou / tp.clamp(min=1), 0.0)
        rq = torch.where(present, tp / denom.clamp(min=1e-12), 0.0)
        out[f"pq{suffix}"] = 100.0 * float(pq.sum()) / n
        out[f"sq{suffix}"] = 100.0 * float(sq.sum()) / n
        out[f"rq{suffix}"] = 100.0 * float(rq.sum()) / n
    return out


class PanopticQualityMetric(PerImageRowsMetric):
    """Accumulates panoptic predictions per image; ``compute`` gives PQ/SQ/RQ (all, th, st).

    Correct under DDP: per-image rows are gathered and every image id counts once.

    Args:
        isthing: thing flag of every contiguous class (C,).
    """

    def __init__(self, isthing: Sequence[bool]) -> None:
        super().__init__(width=5)
        self.isthing = [bool(t) for t in isthing]

    def update(  # type: ignore[override]
        self,
        image_id: int,
        pred: Tensor,
        pred_segments: Sequence[Mapping[str, Any]],
        gt: Tensor,
        gt_segments: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add one image (see :func:`pq_image_stats`; categories are contiguous indices)."""
        stats = pq_image_stats(pred, pred_segments, gt, gt_segments)
        rows = torch.tensor([[c, *v] for c, v in sorted(stats.items())], dtype=torch.float64)
        self.add_rows(image_id, rows)

    def compute(self) -> dict[str, float]:
        """PQ, SQ, RQ and their thing (``_th``) / stuff (``_st``) parts in percent."""
        rows, num_images = self.unique_rows()
        num_classes = len(self.isthing)
        totals = torch.zeros((num_classes, 4), dtype=torch.float64, device=rows.device)
        if rows.numel():
            totals.index_add_(0, rows[:, 0].long(), rows[:, 1:])
        out = pq_summary(totals.cpu(), self.isthing)
        out["pq_num_images"] = float(num_images)
        return out
