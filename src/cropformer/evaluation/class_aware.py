"""The metrics of a class-aware task, fed with predictions and the split's records.

``panoptic``: PQ / SQ / RQ, instance AP (thing classes) and mIoU, as Mask2Former reports a
panoptic model; ``instance``: AP; ``semantic``: mIoU. Each metric is a ``torchmetrics.Metric``
correct under DDP; the ground truth of an image is decoded from its record when its prediction
arrives (``record_ground_truth``), the instance ground truth of the whole split once, on the rank
that runs COCOeval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from cropformer.data.categories import CategorySet
from cropformer.data.records import Record
from cropformer.evaluation.class_gt import instance_annotations, record_ground_truth
from cropformer.evaluation.instance_ap import InstanceAPMetric
from cropformer.evaluation.panoptic_quality import PanopticQualityMetric
from cropformer.evaluation.semantic_iou import SemanticIoUMetric

CLASS_TASKS = ("instance", "panoptic", "semantic")


class ClassAwareEvaluator:
    """PQ / AP / mIoU of one split for a class-aware task.

    Args:
        task: ``instance`` | ``panoptic`` | ``semantic``.
        records: the split's records (all entities, crowd included, with categories).
        categories: the class set (contiguous index = class-head index).
        backend: COCOeval backend of the instance AP.
    """

    def __init__(
        self,
        task: str,
        records: Sequence[Record],
        categories: CategorySet,
        *,
        backend: str = "faster_coco_eval",
    ) -> None:
        if task not in CLASS_TASKS:
            raise ValueError(f"task={task!r} is not one of {CLASS_TASKS}")
        self.task = task
        self.categories = categories
        self.records = {int(r.image_id): r for r in records}
        self.pq = PanopticQualityMetric(categories.isthing) if task == "panoptic" else None
        self.sem = SemanticIoUMetric(len(categories)) if task != "instance" else None
        self.ap = (
            InstanceAPMetric(self._instance_gt, categories.ids, backend=backend)
            if task != "semantic"
            else None
        )

    def metrics(self) -> list[Any]:
        """The torchmetrics of this task."""
        return [m for m in (self.pq, self.ap, self.sem) if m is not None]

    def to(self, device: torch.device | str) -> ClassAwareEvaluator:
        """Move the metric states (gathered by torch.distributed on the process group's device)."""
        for m in self.metrics():
            m.to(device)
        return self

    def reset(self) -> None:
        """Forget the predictions (keeps the instance ground truth)."""
        for m in self.metrics():
            m.reset()

    def _instance_gt(self) -> dict[str, Any]:
        images: list[dict[str, Any]] = []
        anns: list[dict[str, Any]] = []
        for image_id, rec in sorted(self.records.items()):
            images.append(
                {
                    "id": image_id,
                    "file_name": rec.file_name,
                    "height": rec.height,
                    "width": rec.width,
                }
            )
            gt = record_ground_truth(rec, self.categories)
            anns += instance_annotations(gt, image_id, self.categories, first_id=len(anns) + 1)
        cats = [{"id": c.id, "name": c.name} for c in self.categories.categories if c.isthing]
        return {"images": images, "annotations": anns, "categories": cats}

    def update(
        self, predictions: Sequence[Mapping[str, Any]], image_ids: Tensor | Sequence[int]
    ) -> None:
        """Add the predictions of a batch (``ClassAwareFusion`` outputs), one per image id."""
        ids = image_ids.tolist() if isinstance(image_ids, Tensor) else list(image_ids)
        if len(ids) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions but {len(ids)} image ids")
        for pred, image_id in zip(predictions, ids):
            if self.pq is not None or self.sem is not None:
                rec = self.records.get(int(image_id))
                if rec is None:
                    raise ValueError(f"image id {image_id} is not in the evaluated split")
                gt = record_ground_truth(rec, self.categories)
                if self.pq is not None:
                    self.pq.update(
                        int(image_id),
                        pred["panoptic"],
                        pred["segments"],
                        torch.from_numpy(gt.panoptic),
                        gt.segments,
                    )
                if self.sem is not None:
                    self.sem.update(int(image_id), pred["semantic"], torch.from_numpy(gt.semantic))
            if self.ap is not None:
                self.ap.update([pred["instances"]], [int(image_id)])

    def compute(self) -> dict[str, float]:
        """All numbers of the task in percent (collective under DDP: call on every rank)."""
        out: dict[str, float] = {}
        for m in self.metrics():
            out.update(m.compute())
        return out

    def results(self) -> list[dict[str, Any]]:
        """The instance results (COCO json entries) of the last evaluation, if any."""
        return self.ap.results() if self.ap is not None else []
