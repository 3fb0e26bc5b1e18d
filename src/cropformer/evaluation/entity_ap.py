"""Entity AP (AP^e): class-agnostic COCO mask AP on non-overlapping entity predictions.

Every category of the ground truth is collapsed into one (id 1) before COCOeval, like the official
``COCOEvaluator_ClassAgnostic`` (reference doc §7.1); predictions carry ``category_id`` 1. COCOeval
runs with its standard parameters (IoU 0.50:0.05:0.95, 101 recall points, maxDets 1/10/100, areas
all/small/medium/large) through faster-coco-eval (default) or stock pycocotools (same numbers; see
:mod:`cropformer.evaluation.cocoeval`). The accumulating metric of training and evaluation is
:class:`cropformer.evaluation.metric.EntityAPMetric`; results files of any model are evaluated
from the command line by ``python -m cropformer.cli.entity_ap``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cropformer.evaluation.boundary_ap import DEFAULT_DILATION_RATIO
from cropformer.evaluation.cocoeval import BACKENDS, SUMMARY_KEYS, run_cocoeval
from cropformer.evaluation.rle import encode_mask

__all__ = [
    "BACKENDS",
    "SUMMARY_KEYS",
    "collapse_categories",
    "evaluate_entity_results",
    "load_gt",
    "load_results",
]


# ---------------------------------------------------------------------------- ground truth
def load_gt(gt: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Read a COCO / EntitySeg-format annotation file (or take a dict) and collapse categories.

    Returns a new dict (the input dict is not modified): ``categories`` = one
    ``{"id": 1, "name": "entity"}`` and every annotation's ``category_id`` = 1.
    """
    if isinstance(gt, dict):
        data = gt
        source = "<dict>"
    else:
        path = Path(gt)
        if not path.is_file():
            raise FileNotFoundError(
                f"ground-truth annotation file {str(path)!r} not found; pass the dataset's "
                "val/test json (EntitySeg or COCO instance format)"
            )
        with path.open() as f:
            data = json.load(f)
        source = str(path)
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"ground truth {source} has no {key!r} list (COCO format needed)")
    return collapse_categories(data)


def collapse_categories(data: dict[str, Any]) -> dict[str, Any]:
    """Copy of a COCO dataset dict with every category replaced by one entity category (id 1).

    Annotation dicts are shallow-copied (their RLE strings are shared, not duplicated).
    """
    out = {k: v for k, v in data.items() if k not in ("annotations", "categories")}
    out["categories"] = [{"id": 1, "name": "entity", "supercategory": "entity"}]
    anns = []
    for a in data["annotations"]:
        a = dict(a)
        a["category_id"] = 1
        anns.append(a)
    out["annotations"] = anns
    return out


# ---------------------------------------------------------------------------- evaluation
def evaluate_entity_results(
    gt: str | Path | dict[str, Any],
    results: str | Path | Sequence[dict[str, Any]],
    *,
    backend: str = "faster_coco_eval",
    boundary: bool = False,
    image_ids: Iterable[int] | None = None,
    dilation_ratio: float = DEFAULT_DILATION_RATIO,
    gt_collapsed: bool = False,
    renumber_ann_ids: bool = False,
    verbose: bool = False,
) -> dict[str, float]:
    """Class-agnostic COCO mask AP of COCO results against a ground truth.

    Args:
        gt: annotation file or dict (categories are collapsed here unless ``gt_collapsed``).
        results: COCO results (list or json file): ``image_id``, ``segmentation`` (RLE),
            ``score``; ``category_id`` is ignored (set to 1) and a ``bbox`` is dropped so areas come
            from the masks (as detectron2 does for segm).
        backend: ``"faster_coco_eval"`` or ``"pycocotools"``.
        boundary: also compute boundary AP (keys ``boundary_AP``, ``boundary_AP50``,
            ``boundary_AP75``).
        image_ids: evaluate these images only (default: every image of the ground truth).
        dilation_ratio: boundary width as a fraction of the image diagonal.
        renumber_ann_ids: give ground-truth annotations the ids 1..K. COCOeval marks "unmatched"
            with 0, so a ground-truth annotation with id 0 can never count as matched (stock
            pycocotools, detectron2 and faster-coco-eval behave alike, so off by default).
        verbose: let COCOeval print its table.

    Returns:
        ``SUMMARY_KEYS`` in percent (NaN where undefined, e.g. APs without small entities).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    data = gt if (gt_collapsed and isinstance(gt, dict)) else load_gt(gt)
    dets = load_results(results)
    eval_ids = _checked_image_ids(data, dets, image_ids)
    sub = coco_subset(data, eval_ids, renumber_ann_ids)
    ids_set = set(eval_ids)
    dets = [d for d in dets if int(d["image_id"]) in ids_set]
    if not dets:
        # An unmatched empty detection gives exactly the numbers of no detection at all (no true
        # positive, area-0 FP), and keeps both backends' loadRes happy.
        h, w = sub["images"][0]["height"], sub["images"][0]["width"]
        dets = [_empty_detection(eval_ids[0], int(h), int(w))]
    kwargs: dict[str, Any] = {"backend": backend, "verbose": verbose}
    out = run_cocoeval(sub, dets, eval_ids, iou_type="segm", **kwargs)
    if boundary:
        b_out = run_cocoeval(
            sub, dets, eval_ids, iou_type="boundary", dilation_ratio=dilation_ratio, **kwargs
        )
        out["boundary_AP"] = b_out["AP"]
        out["boundary_AP50"] = b_out["AP50"]
        out["boundary_AP75"] = b_out["AP75"]
    return out


def _checked_image_ids(
    data: dict[str, Any], dets: list[dict[str, Any]], image_ids: Iterable[int] | None
) -> list[int]:
    """The sorted evaluated image ids; ValueError when ids and ground truth disagree."""
    known = {int(img["id"]) for img in data["images"]}
    if image_ids is None:
        eval_ids = sorted(known)
    else:
        eval_ids = sorted({int(i) for i in image_ids})
        missing = [i for i in eval_ids if i not in known]
        if missing:
            raise ValueError(
                f"image ids {missing[:10]} are not in the ground truth ({len(missing)} missing); "
                "check that predictions and annotation file belong to the same split"
            )
    unknown = sorted({int(d["image_id"]) for d in dets} - known)
    if unknown:
        raise ValueError(
            f"results refer to image ids {unknown[:10]} absent from the ground truth; "
            "check that the results and the annotation file belong to the same split"
        )
    return eval_ids


def coco_subset(
    data: dict[str, Any], eval_ids: list[int], renumber_ann_ids: bool
) -> dict[str, Any]:
    """The ground truth of the evaluated images (annotation dicts copied)."""
    ids_set = set(eval_ids)
    sub = {
        "images": [img for img in data["images"] if int(img["id"]) in ids_set],
        "annotations": [dict(a) for a in data["annotations"] if int(a["image_id"]) in ids_set],
        "categories": data["categories"],
    }
    if renumber_ann_ids:
        for i, a in enumerate(sub["annotations"]):
            a["id"] = i + 1
    return sub


def load_results(results: str | Path | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """COCO mask results (list or json file) with ``category_id`` 1 and no ``bbox``."""
    if isinstance(results, (str, Path)):
        path = Path(results)
        if not path.is_file():
            raise FileNotFoundError(f"results file {str(path)!r} not found")
        with path.open() as f:
            results = json.load(f)
    if not isinstance(results, (list, tuple)):
        raise ValueError("results must be a list of COCO result dicts (a json array)")
    dets = []
    for i, r in enumerate(results):
        if "segmentation" not in r or "score" not in r or "image_id" not in r:
            raise ValueError(
                f"result {i} lacks image_id/segmentation/score (keys: {sorted(r)}); entity AP "
                "needs mask results in COCO format"
            )
        d = {k: v for k, v in r.items() if k != "bbox"}  # segm areas from masks (detectron2)
        d["category_id"] = 1
        dets.append(d)
    return dets


def _empty_detection(image_id: int, h: int, w: int) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "category_id": 1,
        "segmentation": encode_mask(np.zeros((h, w), dtype=np.uint8)),
        "score": 0.0,
    }
