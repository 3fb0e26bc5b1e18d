"""``EntityAPMetric``: entity AP (and boundary AP) as a ``torchmetrics.Metric``.

Each image's predictions are RLE-encoded at ``update`` (memory) and kept as the UTF-8 bytes of
their COCO results json in torchmetrics list states (``dist_reduce_fx="cat"``), next to the image
ids and byte lengths; torchmetrics gathers them across ranks at ``compute``. One de-duplication
rule applies after gathering: the first occurrence of an image id, in rank order and then update
order, is kept (DDP samplers pad the last batches by repeating images).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import Metric

from cropformer.evaluation.boundary_ap import DEFAULT_DILATION_RATIO
from cropformer.evaluation.entity_ap import BACKENDS, evaluate_entity_results, load_gt
from cropformer.evaluation.rle import prediction_to_coco_results
from cropformer.schema import EntityPrediction

#: ``EntityAPMetric.compute`` key for each ``evaluate_entity_results`` summary key.
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


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class EntityAPMetric(Metric):
    """Accumulates entity predictions per image and computes entity AP (and boundary AP).

    ``compute`` evaluates the distinct images seen on all ranks (collective under DDP: call it
    on every rank); ``results`` returns their COCO results (after ``compute`` it needs no
    collective, so rank 0 alone may call it).

    Args:
        gt_annotation_file: the split's annotation file (COCO / EntitySeg format); read lazily.
        backend: ``"faster_coco_eval"`` (default) or ``"pycocotools"``; identical numbers.
        boundary: also compute boundary AP (``boundary_ap``); slower (boundary of every mask).
        dilation_ratio: boundary width as a fraction of the image diagonal.
        compute_on_all_ranks: every rank runs COCOeval; otherwise rank 0 does and broadcasts.
        renumber_ann_ids: see ``evaluate_entity_results`` (fixes the annotation-id-0 quirk).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    image_ids: list[Tensor]
    result_bytes: list[Tensor]
    result_lengths: list[Tensor]

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
        super().__init__()
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
        # (N,) image ids, (N,) byte lengths, and the N results jsons concatenated as uint8
        self.add_state("image_ids", default=[], dist_reduce_fx="cat")
        self.add_state("result_lengths", default=[], dist_reduce_fx="cat")
        self.add_state("result_bytes", default=[], dist_reduce_fx="cat")
        self._merged: dict[int, list[dict[str, Any]]] | None = None

    def update(
        self, predictions: Sequence[EntityPrediction], image_ids: Tensor | Sequence[int]
    ) -> None:
        """Add the predictions of a batch (one per image id)."""
        ids = image_ids.tolist() if isinstance(image_ids, Tensor) else list(image_ids)
        if len(ids) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions but {len(ids)} image ids")
        for pred, image_id in zip(predictions, ids):
            blob = json.dumps(prediction_to_coco_results(pred, int(image_id))).encode()
            self.image_ids.append(torch.tensor([int(image_id)], device=self.device))
            self.result_lengths.append(torch.tensor([len(blob)], device=self.device))
            self.result_bytes.append(
                torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(self.device)
            )
        self._merged = None

    def reset(self) -> None:
        """Forget every accumulated prediction (keeps the loaded ground truth)."""
        super().reset()
        self._merged = None

    def _merge(self) -> dict[int, list[dict[str, Any]]]:
        """COCO results by image id from the (synced) states, first occurrence of an id kept."""
        ids = _cat(self.image_ids).tolist()
        lengths = _cat(self.result_lengths).tolist()
        blob = _cat(self.result_bytes).cpu().numpy().tobytes()
        merged: dict[int, list[dict[str, Any]]] = {}
        start = 0
        for image_id, n in zip(ids, lengths):
            if int(image_id) not in merged:
                merged[int(image_id)] = json.loads(blob[start : start + n])
            start += n
        return dict(sorted(merged.items()))

    @property
    def num_images(self) -> int:
        """Distinct images accumulated (across ranks after ``compute``/``results``)."""
        if self._merged is not None:
            return len(self._merged)
        return len(set(_cat(self.image_ids).tolist()))

    def results(self) -> list[dict[str, Any]]:
        """COCO results of every distinct image seen (all ranks), sorted by image id."""
        if self._merged is None:
            with self.sync_context(should_sync=_distributed()):
                self._merged = self._merge()
        return [r for res in self._merged.values() for r in res]

    def compute(self) -> dict[str, float]:
        """Entity AP numbers in percent (``entity_ap``, ``entity_ap50``, ``entity_ap75``,
        ``entity_ap_s``, ``entity_ap_m``, ``entity_ap_l``, ``entity_ar100``, ``entity_ar100_50``,
        and ``boundary_ap`` when enabled). Collective under DDP: call it on every rank."""
        self._merged = self._merge()  # torchmetrics has synced the states of every rank
        if not self._merged:
            raise ValueError("EntityAPMetric.compute() called before any update()")
        if not _distributed() or self.compute_on_all_ranks:
            return self._evaluate(self._merged)
        # rank 0 evaluates and broadcasts; an error there is re-raised on every rank (no hang)
        box: list[Any] = [None]
        if dist.get_rank() == 0:
            try:
                box[0] = ("ok", self._evaluate(self._merged))
            except Exception as err:  # noqa: BLE001 - forwarded to the other ranks below
                box[0] = ("error", f"{type(err).__name__}: {err}")
                dist.broadcast_object_list(box, src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        status, payload = box[0]
        if status != "ok":
            raise RuntimeError(f"entity AP evaluation failed on rank 0: {payload}")
        return dict(payload)

    def _evaluate(self, merged: dict[int, list[dict[str, Any]]]) -> dict[str, float]:
        if self._gt is None:
            self._gt = load_gt(self.gt_annotation_file)
        summary = evaluate_entity_results(
            self._gt,
            [r for res in merged.values() for r in res],
            backend=self.backend,
            boundary=self.boundary,
            image_ids=list(merged),
            dilation_ratio=self.dilation_ratio,
            gt_collapsed=True,
            renumber_ann_ids=self.renumber_ann_ids,
        )
        metrics = {METRIC_KEYS[k]: summary[k] for k in METRIC_KEYS}
        if self.boundary:
            metrics["boundary_ap"] = summary["boundary_AP"]
        metrics["entity_num_images"] = float(len(merged))
        return metrics


def _cat(state: list[Tensor] | Tensor) -> Tensor:
    """A list state as one tensor (torchmetrics leaves a synced list state concatenated)."""
    if isinstance(state, Tensor):
        return state
    return torch.cat(state) if state else torch.zeros(0, dtype=torch.int64)
