"""Entity AP (AP^e): class-agnostic COCO mask AP on non-overlapping entity predictions.

Every category of the ground truth is collapsed into one (id 1) before COCOeval, like the official
``COCOEvaluator_ClassAgnostic`` (reference doc §7.1); predictions carry ``category_id`` 1. COCOeval
runs with its standard parameters (IoU 0.50:0.05:0.95, 101 recall points, maxDets 1/10/100, areas
all/small/medium/large) through faster-coco-eval (default) or stock pycocotools (same numbers).

Results files of any model are evaluated from the command line by ``python -m
cropformer.cli.entity_ap``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from torch import Tensor

from cropformer.evaluation.boundary_ap import (
    DEFAULT_DILATION_RATIO,
    combined_ious,
    rle_to_boundary_rle,
)
from cropformer.evaluation.rle import prediction_to_coco_results
from cropformer.schema import EntityPrediction

BACKENDS = ("faster_coco_eval", "pycocotools")

#: Summary keys of ``evaluate_entity_results`` (percent; NaN where COCOeval gives -1).
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "AR100_50")

#: ``EntityAPMetric.compute`` key for each summary key.
METRIC_KEYS = {
    "AP": "entity_ap",
    "AP50": "entity_ap50",
    "AP75": "entity_ap75",
    "APs": "entity_ap_s",
    "APm": "entity_ap_m",
    "APl": "entity_ap_l",
    "AR100": "entity_ar100",
    "AR100_50": "entity_ar100_50",
}


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
    _boundary_cache: dict[int, dict[str, Any]] | None = None,
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

    all_ids = [int(img["id"]) for img in data["images"]]
    known = set(all_ids)
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
    ids_set = set(eval_ids)
    sub = {
        "images": [img for img in data["images"] if int(img["id"]) in ids_set],
        "annotations": [
            dict(a, _orig_id=a["id"]) for a in data["annotations"] if int(a["image_id"]) in ids_set
        ],
        "categories": data["categories"],
    }
    if renumber_ann_ids:
        for i, a in enumerate(sub["annotations"]):
            a["id"] = i + 1
    dets = [d for d in dets if int(d["image_id"]) in ids_set]
    if not dets:
        # An unmatched empty detection gives exactly the numbers of no detection at all (no true
        # positive, area-0 FP), and keeps both backends' loadRes happy.
        h, w = sub["images"][0]["height"], sub["images"][0]["width"]
        dets = [_empty_detection(eval_ids[0], int(h), int(w))]

    out = _run_cocoeval(sub, dets, eval_ids, backend=backend, boundary=None, verbose=verbose)
    if boundary:
        bnd = _boundaries(sub, dets, dilation_ratio, _boundary_cache)
        b_out = _run_cocoeval(sub, dets, eval_ids, backend=backend, boundary=bnd, verbose=verbose)
        out["boundary_AP"] = b_out["AP"]
        out["boundary_AP50"] = b_out["AP50"]
        out["boundary_AP75"] = b_out["AP75"]
    return out


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
    from cropformer.evaluation.rle import encode_mask

    return {
        "image_id": image_id,
        "category_id": 1,
        "segmentation": encode_mask(np.zeros((h, w), dtype=np.uint8)),
        "score": 0.0,
    }


def _boundaries(
    sub: dict[str, Any],
    dets: list[dict[str, Any]],
    dilation_ratio: float,
    cache: dict[int, dict[str, Any]] | None,
) -> dict[str, Any]:
    """Boundary RLEs for ground truth (by annotation id, cached) and results (by list index)."""
    from cropformer.evaluation.rle import json_ready_rle

    sizes = {int(img["id"]): (int(img["height"]), int(img["width"])) for img in sub["images"]}
    gt_b: dict[int, Any] = {}
    for a in sub["annotations"]:
        key = int(a["id"])  # the id COCOeval sees; the cache keys on the file's id
        orig = int(a.get("_orig_id", key))
        if cache is not None and orig in cache:
            gt_b[key] = cache[orig]
            continue
        h, w = sizes[int(a["image_id"])]
        rle = _ann_to_rle(a, h, w)
        gt_b[key] = rle_to_boundary_rle(json_ready_rle(rle), dilation_ratio)
        if cache is not None:
            cache[orig] = gt_b[key]
    dt_b = [rle_to_boundary_rle(d["segmentation"], dilation_ratio) for d in dets]
    return {"gt": gt_b, "dt": dt_b}


def _ann_to_rle(ann: dict[str, Any], h: int, w: int) -> dict[str, Any]:
    import pycocotools.mask as mask_util

    segm = ann["segmentation"]
    if isinstance(segm, list):  # polygons
        return mask_util.merge(mask_util.frPyObjects(segm, h, w))
    if isinstance(segm["counts"], list):  # uncompressed RLE
        return mask_util.frPyObjects(segm, h, w)
    counts = segm["counts"]
    return {"size": segm["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


def _run_cocoeval(
    sub: dict[str, Any],
    dets: list[dict[str, Any]],
    eval_ids: list[int],
    *,
    backend: str,
    boundary: dict[str, Any] | None,
    verbose: bool,
) -> dict[str, float]:
    dets = [dict(d, _index=i) for i, d in enumerate(dets)]
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        if backend == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            coco_gt = COCO()
            coco_gt.dataset = {k: list(v) for k, v in sub.items()}
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(dets)
            cls = _boundary_class(COCOeval, "pycocotools") if boundary is not None else COCOeval
            ev = cls(coco_gt, coco_dt, "segm")
        else:
            from faster_coco_eval import COCO as FCOCO
            from faster_coco_eval import COCOeval_faster

            coco_gt = FCOCO({k: list(v) for k, v in sub.items()})
            coco_dt = coco_gt.loadRes(dets)
            cls = (
                _boundary_class(COCOeval_faster, "faster_coco_eval")
                if boundary is not None
                else COCOeval_faster
            )
            ev = cls(coco_gt, coco_dt, "segm", print_function=print)
        if boundary is not None:
            ev._entity_boundaries = boundary
        ev.params.imgIds = list(eval_ids)
        ev.evaluate()
        ev.accumulate()
        if verbose:
            ev.summarize()
    return _summarize(ev.eval, ev.params)


def _boundary_class(base: type, backend: str) -> type:
    """A COCOeval subclass whose IoU is min(mask IoU, boundary IoU) (boundary AP)."""

    def computeIoU(self: Any, imgId: int, catId: int) -> Any:
        p = self.params
        if backend == "pycocotools":
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
            gt_rles = [g["segmentation"] for g in gt]
        else:
            gt = self.gt_dataset.get_instances([imgId], [catId], True)[0][0]
            dt = self.dt_dataset.get_instances([imgId], [catId], True)[0][0]
            gt_rles = [g["rle"] for g in gt]
        if len(gt) == 0 or len(dt) == 0:
            return []
        inds = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in inds][: p.maxDets[-1]]
        dt_rles = [d["rle"] if "rle" in d else d["segmentation"] for d in dt]
        bnd = self._entity_boundaries
        return combined_ious(
            dt_rles,
            gt_rles,
            [bnd["dt"][int(d["_index"])] for d in dt],
            [bnd["gt"][int(g["id"])] for g in gt],
            [int(g.get("iscrowd", 0)) for g in gt],
        )

    return type(f"Boundary{base.__name__}", (base,), {"computeIoU": computeIoU})


def _summarize(ev: dict[str, Any], params: Any) -> dict[str, float]:
    """COCO summary numbers (percent) from the accumulated precision/recall arrays.

    Shape: precision (T, R, K, A, M), recall (T, K, A, M) with T IoU thresholds, R recall points,
    K categories, A area ranges (all, small, medium, large), M maxDets.
    """
    precision = np.asarray(ev["precision"])
    recall = np.asarray(ev["recall"])
    iou_thrs = np.asarray(params.iouThrs)
    max_dets = list(params.maxDets)
    area_lbl = list(params.areaRngLbl)

    def mean(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(np.mean(x) * 100.0) if x.size else math.nan

    def t_idx(thr: float) -> int:
        return int(np.flatnonzero(np.isclose(iou_thrs, thr))[0])

    a_all, m100 = area_lbl.index("all"), max_dets.index(100)
    out = {
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
    return out


# ---------------------------------------------------------------------------- metric
class EntityAPMetric:
    """Accumulates entity predictions per image and computes entity AP (and boundary AP).

    Predictions are RLE-encoded at ``update`` time (memory), gathered across ranks with
    ``torch.distributed`` when it is initialised, de-duplicated by image id (DDP samplers pad by
    repeating images) and evaluated on the images seen only.

    Args:
        gt_annotation_file: the split's annotation file (COCO / EntitySeg format); read lazily.
        backend: ``"faster_coco_eval"`` (default) or ``"pycocotools"``; identical numbers.
        boundary: also compute boundary AP (``boundary_ap``); slower (boundary of every mask).
        dilation_ratio: boundary width as a fraction of the image diagonal.
        compute_on_all_ranks: every rank runs COCOeval; otherwise rank 0 does and broadcasts.
        renumber_ann_ids: see ``evaluate_entity_results`` (fixes the annotation-id-0 quirk).
    """

    def __init__(
        self,
        gt_annotation_file: str | Path | dict[str, Any],
        *,
        backend: str = "faster_coco_eval",
        boundary: bool = False,
        dilation_ratio: float = DEFAULT_DILATION_RATIO,
        compute_on_all_ranks: bool = False,
        renumber_ann_ids: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
        if isinstance(gt_annotation_file, (str, Path)) and not Path(gt_annotation_file).is_file():
            raise FileNotFoundError(
                f"ground-truth annotation file {str(gt_annotation_file)!r} not found; the AP "
                "metric needs the split's annotation json"
            )
        self.gt_annotation_file = gt_annotation_file
        self.backend = backend
        self.boundary = boundary
        self.dilation_ratio = dilation_ratio
        self.compute_on_all_ranks = compute_on_all_ranks
        self.renumber_ann_ids = renumber_ann_ids  # parity: official False (id 0 never matches)
        self._gt: dict[str, Any] | None = None
        self._boundary_cache: dict[int, dict[str, Any]] = {}
        self._per_image: dict[int, list[dict[str, Any]]] = {}
        self._gathered: dict[int, list[dict[str, Any]]] | None = None

    def reset(self) -> None:
        """Forget every accumulated prediction (keeps the loaded ground truth)."""
        self._per_image = {}
        self._gathered = None

    def update(
        self, predictions: Sequence[EntityPrediction], image_ids: Tensor | Sequence[int]
    ) -> None:
        """Add the predictions of a batch (one per image id). A repeated image id is ignored."""
        ids = image_ids.tolist() if isinstance(image_ids, Tensor) else list(image_ids)
        if len(ids) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions but {len(ids)} image ids")
        for pred, image_id in zip(predictions, ids):
            image_id = int(image_id)
            if image_id in self._per_image:
                continue  # the same image seen twice on this rank (padding): count once
            self._per_image[image_id] = prediction_to_coco_results(pred, image_id)
        self._gathered = None

    def _gather(self) -> dict[int, list[dict[str, Any]]]:
        if self._gathered is not None:
            return self._gathered
        local = sorted(self._per_image.items())
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
        else:
            parts = [local]
        merged: dict[int, list[dict[str, Any]]] = {}
        for part in parts:  # rank order: the first rank that saw an image wins
            for image_id, res in part:
                merged.setdefault(int(image_id), res)
        self._gathered = dict(sorted(merged.items()))
        return self._gathered

    @property
    def num_images(self) -> int:
        """Number of distinct images accumulated (across ranks after ``compute``/``results``)."""
        return len(self._gathered) if self._gathered is not None else len(self._per_image)

    def results(self) -> list[dict[str, Any]]:
        """COCO results of every distinct image seen (all ranks), sorted by image id."""
        return [r for res in self._gather().values() for r in res]

    def compute(self) -> dict[str, float]:
        """Entity AP numbers in percent (``entity_ap``, ``entity_ap50``, ``entity_ap75``,
        ``entity_ap_s``, ``entity_ap_m``, ``entity_ap_l``, ``entity_ar100``, ``entity_ar100_50``,
        and ``boundary_ap`` when enabled). Collective under DDP: call it on every rank."""
        gathered = self._gather()  # identical on every rank
        if not gathered:
            raise ValueError("EntityAPMetric.compute() called before any update()")
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        rank = dist.get_rank() if distributed else 0
        if not distributed or self.compute_on_all_ranks:
            return self._compute_local(gathered)
        # rank 0 evaluates and broadcasts; an error there is re-raised on every rank (no hang)
        box: list[Any] = [None]
        if rank == 0:
            try:
                box[0] = ("ok", self._compute_local(gathered))
            except Exception as err:  # noqa: BLE001 - forwarded to the other ranks below
                box[0] = ("error", f"{type(err).__name__}: {err}")
                dist.broadcast_object_list(box, src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        status, payload = box[0]
        if status != "ok":
            raise RuntimeError(f"entity AP evaluation failed on rank 0: {payload}")
        return dict(payload)

    def _compute_local(self, gathered: dict[int, list[dict[str, Any]]]) -> dict[str, float]:
        if self._gt is None:
            self._gt = load_gt(self.gt_annotation_file)
        dets = [r for res in gathered.values() for r in res]
        summary = evaluate_entity_results(
            self._gt,
            dets,
            backend=self.backend,
            boundary=self.boundary,
            image_ids=list(gathered),
            dilation_ratio=self.dilation_ratio,
            gt_collapsed=True,
            renumber_ann_ids=self.renumber_ann_ids,
            _boundary_cache=self._boundary_cache,
        )
        metrics = {METRIC_KEYS[k]: summary[k] for k in METRIC_KEYS}
        if self.boundary:
            metrics["boundary_ap"] = summary["boundary_AP"]
        metrics["entity_num_images"] = float(len(gathered))
        return metrics
