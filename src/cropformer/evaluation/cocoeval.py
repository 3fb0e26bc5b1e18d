"""COCOeval adapter: mask AP or boundary AP of COCO results through one of two backends.

Both backends are used through their public API only (same numbers from either):

- ``faster_coco_eval`` (default): ``COCOeval_faster`` with ``iouType="segm"`` for mask AP.
- ``pycocotools``: ``COCOeval(segm)``.

Boundary AP (IoU = min(mask IoU, boundary IoU), the boundary-iou API definition) always takes
the pycocotools path: the documented ``ious`` of ``evaluate()`` are replaced by the combined
IoUs and the per-image matching is redone with the public ``evaluateImg``. Boundaries are computed
by :mod:`cropformer.evaluation.boundary_ap` on each mask's bounding box, and only for masks in a
pair that can match (mask IoU >= the lowest threshold): on the embedded benchmark's 50
2048x1536 validation scenes this takes 45 s with every boundary and 18 s with the matchable
ones, against 160 s for ``faster_coco_eval``'s ``iouType="boundary"`` (2 threads, 2026-11-29),
with identical AP (tests compare the two).

The summary numbers are read from the accumulated ``eval["precision"]`` / ``eval["recall"]``
arrays (not from ``stats``), so NaN marks an undefined number (e.g. APs without small entities).
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Literal

import numpy as np
import pycocotools.mask as mask_util

from cropformer.evaluation.boundary_ap import rle_to_boundary_rle
from cropformer.evaluation.rle import c_ready_rle

BACKENDS = ("faster_coco_eval", "pycocotools")

#: Keys of :func:`summarize` (percent; NaN where COCOeval gives -1).
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "AR100_50")


def run_cocoeval(
    gt: dict[str, Any],
    dets: list[dict[str, Any]],
    image_ids: list[int],
    *,
    backend: str = "faster_coco_eval",
    iou_type: Literal["segm", "boundary"] = "segm",
    dilation_ratio: float = 0.02,
    verbose: bool = False,
) -> dict[str, float]:
    """Evaluate ``dets`` against ``gt`` on ``image_ids`` with COCO's standard parameters.

    Args:
        gt: COCO dataset dict (``images``, ``annotations``, ``categories``); not modified.
        dets: COCO results with RLE ``segmentation`` (at least one: both backends need one).
        image_ids: the images evaluated (``params.imgIds``).
        iou_type: ``segm`` (mask AP) or ``boundary`` (boundary AP).
        dilation_ratio: boundary width as a fraction of the image diagonal.
        verbose: let COCOeval print its table.

    Returns:
        ``SUMMARY_KEYS`` in percent.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    # pycocotools writes into annotation and result dicts (RLE, area, ids): give it copies
    dataset = {k: list(v) for k, v in gt.items()}
    dataset["annotations"] = [dict(a) for a in gt["annotations"]]
    dets = [dict(d) for d in dets]
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        if backend == "faster_coco_eval" and iou_type == "segm":
            from faster_coco_eval import COCO, COCOeval_faster

            coco_gt = COCO(dataset)
            ev: Any = COCOeval_faster(
                coco_gt,
                coco_gt.loadRes(dets),
                iou_type,
                print_function=print,
                boundary_dilation_ratio=dilation_ratio,
            )
            ev.params.imgIds = list(image_ids)
            ev.evaluate()
        else:
            import pycocotools.coco
            from pycocotools.cocoeval import COCOeval

            coco_gt = pycocotools.coco.COCO()
            coco_gt.dataset = dataset
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(dets)
            ev = COCOeval(coco_gt, coco_dt, "segm")
            ev.params.imgIds = list(image_ids)
            ev.evaluate()
            if iou_type == "boundary":
                _rematch_with_boundary_iou(ev, coco_gt, coco_dt, dilation_ratio)
        ev.accumulate()
        if verbose:
            ev.summarize()
    return summarize(ev.eval["precision"], ev.eval["recall"], ev.params)


def _rematch_with_boundary_iou(ev: Any, coco_gt: Any, coco_dt: Any, dilation_ratio: float) -> None:
    """Replace pycocotools' mask IoUs by boundary-AP IoUs and redo the per-image matching.

    Uses what pycocotools documents: ``ious[imgId, catId]`` is the (D, G) IoU of the detections
    sorted by score (stable, top ``maxDets[-1]``) against the image's ground truth in annotation
    order; ``evaluate()`` has converted every ``segmentation`` to RLE in place.
    """
    p = ev.params
    # A pair whose mask IoU is below the lowest threshold cannot match at any threshold, and
    # min(mask IoU, boundary IoU) is below it too: only the boundaries of masks in a pair at or
    # above it are computed (exact for every AP/AR number; the boundaries are the slow part).
    lowest = float(np.min(p.iouThrs))
    for (image_id, cat_id), ious in ev.ious.items():
        if len(ious) == 0:
            continue
        gts = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id], catIds=[cat_id]))
        dts = coco_dt.loadAnns(coco_dt.getAnnIds(imgIds=[image_id], catIds=[cat_id]))
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")[: p.maxDets[-1]]
        dts = [dts[i] for i in order]
        mask_ious = np.asarray(ious, dtype=np.float64)
        crowd = np.asarray([int(g.get("iscrowd", 0)) for g in gts], dtype=bool)
        rows, cols = np.nonzero((mask_ious >= lowest) & ~crowd[None, :])
        if rows.size == 0:
            continue
        d_used, g_used = np.unique(rows), np.unique(cols)
        b_ious = np.asarray(
            mask_util.iou(
                [
                    c_ready_rle(rle_to_boundary_rle(dts[i]["segmentation"], dilation_ratio))
                    for i in d_used
                ],
                [
                    c_ready_rle(rle_to_boundary_rle(gts[j]["segmentation"], dilation_ratio))
                    for j in g_used
                ],
                [0] * len(g_used),
            )
        ).reshape(len(d_used), len(g_used))
        out = mask_ious.copy()
        r, c = np.searchsorted(d_used, rows), np.searchsorted(g_used, cols)
        out[rows, cols] = np.minimum(mask_ious[rows, cols], b_ious[r, c])
        ev.ious[image_id, cat_id] = out
    max_det = p.maxDets[-1]
    ev.evalImgs = [
        ev.evaluateImg(image_id, cat_id, area, max_det)
        for cat_id in p.catIds
        for area in p.areaRng
        for image_id in p.imgIds
    ]


def summarize(precision: Any, recall: Any, params: Any) -> dict[str, float]:
    """COCO summary numbers (percent) from the accumulated precision/recall arrays.

    Shape: precision (T, R, K, A, M), recall (T, K, A, M) with T IoU thresholds, R recall points,
    K categories, A area ranges (all, small, medium, large), M maxDets.
    """
    precision = np.asarray(precision)
    recall = np.asarray(recall)
    iou_thrs = np.asarray(params.iouThrs)
    max_dets = list(params.maxDets)
    area_lbl = list(params.areaRngLbl)

    def mean(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(np.mean(x) * 100.0) if x.size else math.nan

    def t_idx(thr: float) -> int:
        return int(np.flatnonzero(np.isclose(iou_thrs, thr))[0])

    a_all, m100 = area_lbl.index("all"), max_dets.index(100)
    return {
        "AP": mean(precision[:, :, :, a_all, m100]),
        "AP50": mean(precision[t_idx(0.5), :, :, a_all, m100]),
        "AP75": mean(precision[t_idx(0.75), :, :, a_all, m100]),
        "APs": mean(precision[:, :, :, area_lbl.index("small"), m100]),
        "APm": mean(precision[:, :, :, area_lbl.index("medium"), m100]),
        "APl": mean(precision[:, :, :, area_lbl.index("large"), m100]),
        "AR1": mean(recall[:, :, a_all, max_dets.index(1)]),
        "AR10": mean(recall[:, :, a_all, max_dets.index(10)]),
        "AR100": mean(recall[:, :, a_all, m100]),
        # in-the-wild protocol (paper Table 6): recall at 100 detections and IoU 0.5
        "AR100_50": mean(recall[t_idx(0.5), :, a_all, m100]),
    }
