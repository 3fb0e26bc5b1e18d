"""Instance AP with categories as a ``torchmetrics.Metric``, through the AP^e COCOeval path.

The same accumulation as ``EntityAPMetric`` (RLE results as bytes in list states, gathered across
ranks, each image id once) and the same ``run_cocoeval`` (faster-coco-eval or pycocotools, COCO's
standard parameters); only the categories are kept instead of collapsed. As Mask2Former reports
it, instance AP is over the thing classes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from cropformer.evaluation.cocoeval import run_cocoeval
from cropformer.evaluation.entity_ap import coco_subset
from cropformer.evaluation.metric import EntityAPMetric
from cropformer.evaluation.rle import encode_mask

#: compute() keys for the COCO summary keys
INSTANCE_KEYS = {
    "AP": "ap",
    "AP50": "ap50",
    "AP75": "ap75",
    "APs": "ap_s",
    "APm": "ap_m",
    "APl": "ap_l",
}


class InstanceAPMetric(EntityAPMetric):
    """Accumulates class-aware instance predictions; ``compute`` gives COCO mask AP (percent).

    Args:
        gt: the COCO ground-truth dict (``images``, ``annotations`` with annotation-file
            ``category_id``, ``categories``), or a callable building it (called once, on the
            rank that evaluates).
        category_ids: annotation-file id of every contiguous class.
        backend: ``faster_coco_eval`` or ``pycocotools``.
    """

    def __init__(
        self,
        gt: Mapping[str, Any] | Callable[[], dict[str, Any]],
        category_ids: Sequence[int],
        *,
        backend: str = "faster_coco_eval",
    ) -> None:
        super().__init__({"images": [], "annotations": []}, backend=backend)
        self._gt_source = gt
        self.category_ids = [int(c) for c in category_ids]

    def update(  # type: ignore[override]
        self, instances: Sequence[Mapping[str, Tensor]], image_ids: Tensor | Sequence[int]
    ) -> None:
        """Add the instances of a batch: per image ``masks`` (k, H, W) bool, ``scores`` (k,),
        ``labels`` (k,) contiguous classes. Empty masks are skipped (AP unchanged)."""
        ids = image_ids.tolist() if isinstance(image_ids, Tensor) else list(image_ids)
        if len(ids) != len(instances):
            raise ValueError(f"{len(instances)} predictions but {len(ids)} image ids")
        for inst, image_id in zip(instances, ids):
            results = []
            masks = inst["masks"]
            queries = inst.get("query_indices")
            query_list = queries.tolist() if queries is not None else [None] * len(masks)
            # a query kept with several classes has one mask: encode it once (checked equal)
            encoded: dict[int, tuple[Tensor, dict[str, Any] | None]] = {}
            for m, s, c, q in zip(
                masks, inst["scores"].tolist(), inst["labels"].tolist(), query_list
            ):
                if q is not None and q in encoded and torch.equal(encoded[q][0], m):
                    rle = encoded[q][1]
                else:
                    rle = encode_mask(m) if bool(m.any()) else None
                    if q is not None:
                        encoded[int(q)] = (m, rle)
                if rle is None:
                    continue
                results.append(
                    {
                        "image_id": int(image_id),
                        "category_id": self.category_ids[int(c)],
                        "segmentation": rle,
                        "score": float(s),
                    }
                )
            blob = json.dumps(results).encode()
            self.image_ids.append(torch.tensor([int(image_id)], device=self.device))
            self.result_lengths.append(torch.tensor([len(blob)], device=self.device))
            self.result_bytes.append(
                torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(self.device)
            )
        self._merged = None

    def _evaluate(self, merged: dict[int, list[dict[str, Any]]]) -> dict[str, float]:
        if self._gt is None:
            source = self._gt_source
            self._gt = dict(source() if callable(source) else source)
        gt = self._gt
        known = {int(img["id"]) for img in gt["images"]}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"image ids {unknown[:10]} are not in the instance ground truth")
        ids = sorted(merged)
        sub = coco_subset(gt, ids, False)
        dets = [r for res in merged.values() for r in res]
        if not dets:  # no detection at all: AP 0 (COCOeval needs one result; this one is empty)
            img = sub["images"][0]
            empty = encode_mask(
                torch.zeros((int(img["height"]), int(img["width"])), dtype=torch.bool)
            )
            dets = [
                {
                    "image_id": ids[0],
                    "category_id": self.category_ids[0],
                    "segmentation": empty,
                    "score": 0.0,
                }
            ]
        out = run_cocoeval(sub, dets, ids, iou_type="segm", backend=self.backend)
        metrics = {INSTANCE_KEYS[k]: out[k] for k in INSTANCE_KEYS}
        metrics["ap_num_images"] = float(len(merged))
        return metrics
