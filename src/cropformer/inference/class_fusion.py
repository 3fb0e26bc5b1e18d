"""Class-aware multi-view fusion: class probabilities with the fused mask probabilities.

The official CropFormer code has no class-aware inference (its Table 10b rows on COCO / ADE20K
were produced with code that is not released; the released fusion sets every class to 0). What
this module does, and why:

- **Class probabilities.** The batch-level pass predicts ONE class distribution per query and
  image, shared by all T views (its class head reads the query after it has attended to every
  view), so there is nothing to fuse across views: the class probabilities of the batch-level
  pass are used as they are (``I-O``: those of the full view's image-level pass; Mask2Former:
  its single view).
- **Mask probabilities.** Exactly the entity fusion (``MultiViewFusion``): every used view's
  mask logits are resized into its region of the original image, passed through a sigmoid and
  averaged per pixel by how many views cover it.
- **Outputs.** Mask2Former's own class-aware post-processing (``inference.postprocess``) on those
  class logits and fused mask probabilities at the original resolution, so a CropFormer with
  crops off gives Mask2Former's outputs exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, get_args

import torch
from torch import Tensor

from cropformer.inference.fusion import DECODER_CHOICES, MERGE_DECODER, MultiViewFusion
from cropformer.inference.postprocess import (
    OBJECT_MASK_THRESHOLD,
    OVERLAP_THRESHOLD,
    TOP_K,
    SegmentPixels,
    instance_inference,
    instance_queries,
    panoptic_inference,
    semantic_inference,
)
from cropformer.inference.regions import int_box as _int_box
from cropformer.schema import Batch, Outputs
from cropformer.utils.errors import UserError

CLASS_TASKS = ("instance", "panoptic", "semantic")
#: the fusion decoders of a class-aware model (the test-time view merge is entity-only)
CLASS_DECODERS: tuple[str, ...] = tuple(d for d in DECODER_CHOICES if d != MERGE_DECODER)
SEGMENT_PIXELS: tuple[str, ...] = get_args(SegmentPixels)
#: settings only the class-aware fusion reads (conf/model/fusion/class_aware.yaml)
CLASS_OPTIONS = (
    "object_mask_threshold",
    "overlap_threshold",
    "top_k",
    "instance_score_threshold",
    "segment_pixels",
    "overlap_strict",
)
#: ``MultiViewFusion`` settings of the entity outputs, which the class-aware fusion never reads
ENTITY_OPTIONS = (
    "double_sigmoid",
    "order",
    "mask_threshold",
    "top_k_single_view",
    "drop_empty",
    "merge_threshold",
    "merge_metric",
    "merge_canvas_size",
)


def is_class_aware(fusion_config: Mapping[str, Any]) -> bool:
    """Whether a fusion config (``_target_`` node) builds a ``ClassAwareFusion``."""
    return str(fusion_config.get("_target_", "")).endswith(".ClassAwareFusion")


def check_fusion_options(
    fusion_config: Mapping[str, Any], given: Iterable[str], *, prefix: str = "inference.fusion"
) -> None:
    """Settings given for a fusion must be ones it reads: class-aware settings on an entity
    model (or the entity-only ones on a class-aware model) would be silently ignored.

    Raises:
        UserError: names the first such setting and what the model is.
    """
    class_aware = is_class_aware(fusion_config)
    for key in given:
        if not class_aware and key in CLASS_OPTIONS:
            raise UserError(
                f"{prefix}.{key}: a class-aware setting (task=instance|panoptic|semantic), but "
                "this is an entity model (its fusion has no classes); drop it"
            )
        if class_aware and key in ENTITY_OPTIONS:
            raise UserError(
                f"{prefix}.{key}: an entity-fusion setting, but this is a class-aware model "
                f"(task={fusion_config.get('task')}), whose fusion does not read it; drop it "
                f"(its settings: decoder, {', '.join(CLASS_OPTIONS)})"
            )


class ClassAwareFusion(MultiViewFusion):
    """Fuse the views of each image and run Mask2Former's class-aware inference.

    Args:
        task: ``instance`` (instances only), ``panoptic`` (panoptic, instances of the thing
            classes and semantic, as Mask2Former evaluates a panoptic model) or ``semantic``.
        isthing: thing flag of every class; set from the data at setup (``set_classes``).
        object_mask_threshold, overlap_threshold: panoptic settings (official 0.8 / 0.8).
        top_k: instances per image (official 100).
        instance_score_threshold: instances painted into the ``id_map`` (predict writers) need
            this score; the instance output (AP) keeps all ``top_k``.
        segment_pixels, overlap_strict: see ``panoptic_inference`` (official defaults).
        **fusion: the ``MultiViewFusion`` settings (``decoder``, chunking, devices); the
            entity-only ones (``ENTITY_OPTIONS``: double sigmoid, order, the view merge ...)
            are not read here, and ``decoder="I-OC-merge"`` is an error.

    Returns (per image, at the original size) a dict: ``panoptic`` (H, W) int32 (0 = void) and
    ``segments`` (panoptic), ``semantic`` (H, W) int64 (panoptic, semantic), ``instances``
    ``{masks (k, H, W) bool, scores, labels}`` (instance, panoptic), and for writers ``id_map``
    (H, W) int32 (-1 = none), ``scores``, ``labels`` (contiguous), ``query_indices``,
    ``category_ids`` and ``category_names`` (annotation-file ids and names) of non-overlapping
    outputs (panoptic: its segments; instance: the instances above the threshold, most
    confident first; semantic: one output per class present).
    """

    def __init__(
        self,
        *,
        task: str = "panoptic",
        isthing: Sequence[bool] | None = None,
        object_mask_threshold: float = OBJECT_MASK_THRESHOLD,
        overlap_threshold: float = OVERLAP_THRESHOLD,
        top_k: int = TOP_K,
        instance_score_threshold: float = 0.5,
        segment_pixels: SegmentPixels = "official",
        overlap_strict: bool = False,
        **fusion: Any,
    ) -> None:
        super().__init__(**fusion)
        if task not in CLASS_TASKS:
            raise ValueError(f"fusion task={task!r} is not one of {CLASS_TASKS}")
        if self.decoder not in CLASS_DECODERS:
            # its crops-only fallback would silently fuse the wrong views
            raise ValueError(
                f"fusion decoder={self.decoder!r} merges entity outputs only; a class-aware "
                f"model uses one of {', '.join(CLASS_DECODERS)}"
            )
        for name, value in (
            ("object_mask_threshold", object_mask_threshold),
            ("overlap_threshold", overlap_threshold),
            ("instance_score_threshold", instance_score_threshold),
        ):
            number = value if isinstance(value, (int, float)) else math.nan
            if isinstance(value, bool) or not 0.0 <= number <= 1.0:
                raise ValueError(f"fusion {name}={value!r} must lie in [0, 1]")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"fusion top_k={top_k!r} must be an integer >= 1")
        if segment_pixels not in SEGMENT_PIXELS:
            raise ValueError(
                f"fusion segment_pixels={segment_pixels!r} is not one of {SEGMENT_PIXELS}"
            )
        self.task = task
        self.isthing: list[bool] | None = None
        self.category_ids: list[int] = []
        self.category_names: list[str] | None = None
        if isthing is not None:
            self.set_classes(isthing)
        self.object_mask_threshold = float(object_mask_threshold)
        self.overlap_threshold = float(overlap_threshold)
        self.top_k = int(top_k)
        self.instance_score_threshold = float(instance_score_threshold)
        self.segment_pixels: SegmentPixels = segment_pixels
        self.overlap_strict = bool(overlap_strict)

    def set_classes(
        self,
        isthing: Sequence[bool],
        ids: Sequence[int] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        """The classes (from the data or the checkpoint): thing flags and, for the writers,
        the annotation-file ids and names (default: 0..C-1 and no names)."""
        self.isthing = [bool(t) for t in isthing]
        self.category_ids = list(ids) if ids is not None else list(range(len(self.isthing)))
        self.category_names = list(names) if names is not None else None

    def __repr__(self) -> str:
        return f"ClassAwareFusion(task={self.task!r}, decoder={self.decoder!r})"

    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self, outputs: Outputs | dict[str, Any], batch: Batch | dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Class-aware predictions of every image of the batch (see the class docstring)."""
        if self.isthing is None:
            raise ValueError(
                "ClassAwareFusion has no classes: call set_classes(isthing) (the training module "
                "does it from the data or the checkpoint)"
            )
        boxes = batch["boxes"]
        B, T = int(boxes.shape[0]), int(boxes.shape[1])
        padded_hw = (int(batch["images"].shape[-2]), int(batch["images"].shape[-1]))
        view_sizes = batch["view_sizes"].tolist()
        orig_sizes = batch["orig_sizes"].tolist()
        boxes_list = boxes.tolist()
        image_level = outputs["image_level"]
        batch_level = outputs.get("batch_level")
        use_batch_level = self._uses_batch_level(batch_level, T)
        results = []
        with torch.autocast(device_type=image_level["pred_logits"].device.type, enabled=False):
            for b in range(B):
                if use_batch_level:
                    assert batch_level is not None
                    logits = batch_level["pred_logits"][b]
                    masks = batch_level["pred_masks"][b]
                    view_ids = {"B-OC": list(range(T)), "B-O": [0]}.get(
                        self.decoder, list(range(1, T))
                    )
                    views = [
                        (masks[:, t], view_sizes[b * T + t], boxes_list[b][t]) for t in view_ids
                    ]
                else:
                    logits = image_level["pred_logits"][b * T]
                    views = [
                        (image_level["pred_masks"][b * T], view_sizes[b * T], boxes_list[b][0])
                    ]
                H, W = int(orig_sizes[b][0]), int(orig_sizes[b][1])
                # the instance task reads the masks of its top-k queries only
                # (on the device classify() runs it on, so that top-k ties break the same way)
                queries = None
                if self.task == "instance":
                    device = self.device if self.device is not None else views[0][0].device
                    queries = instance_queries(logits.float().to(device), top_k=self.top_k)
                probs = self.fused_probabilities(views, padded_hw, (H, W), queries=queries)
                results.append(self.classify(logits, probs))
        return results

    def fused_probabilities(
        self,
        views: Sequence[tuple[Tensor, Sequence[int], Sequence[float]]],
        padded_hw: tuple[int, int],
        orig_hw: tuple[int, int],
        *,
        queries: Tensor | None = None,
    ) -> Tensor:
        """Per-query mask probabilities at the original size, averaged over the used views.

        ``queries`` given: only their rows are computed (the others are left unset, never read).

        Shape: views' mask logits (Q, h, w); returns (Q, H, W) float32.
        """
        H, W = orig_hw
        device = self.device if self.device is not None else views[0][0].device
        boxes = [_int_box(box, H, W) for _, _, box in views]
        full_ids = [i for i, box in enumerate(boxes) if box == (0, 0, W, H)]
        Q = int(views[0][0].shape[0])
        out = torch.empty((Q, H, W), dtype=torch.float32, device=device)
        chunk = self._chunk_size(H, W, padded_hw, boxes, Q)
        coverage = torch.full((H, W), 1e-16, dtype=torch.float32, device=device)
        for x0, y0, x1, y1 in boxes:
            coverage[y0:y1, x0:x1] += 1.0
        single = len(views) == 1 and boxes[0] == (0, 0, W, H)
        wanted = torch.arange(Q, device=device) if queries is None else queries.to(device)
        for start in range(0, int(wanted.numel()), chunk):
            q_ids = wanted[start : start + chunk]
            canvas = self._fused_canvas(
                views, boxes, full_ids, q_ids, padded_hw, orig_hw, device, apply_sigmoid=True
            )
            if queries is None:  # rows start..: divide straight into them (no temporary)
                target = out[start : start + int(q_ids.numel())]
                if single:
                    target.copy_(canvas)
                else:
                    torch.div(canvas, coverage, out=target)
            else:
                out[q_ids] = canvas if single else canvas / coverage
            del canvas
        return out

    def classify(self, class_logits: Tensor, probs: Tensor) -> dict[str, Any]:
        """Mask2Former's inference of the task on one image's class logits and mask probabilities.

        Shape: class_logits (Q, C+1); probs (Q, H, W).
        """
        assert self.isthing is not None
        logits = class_logits.float().to(probs.device)
        if logits.shape[-1] - 1 != len(self.isthing):
            raise ValueError(
                f"the class head gives {logits.shape[-1] - 1} classes but the data has "
                f"{len(self.isthing)}"
            )
        out: dict[str, Any] = {}
        H, W = probs.shape[-2:]
        if self.task in ("panoptic", "semantic"):
            out["semantic"] = semantic_inference(logits, probs).argmax(0)
        if self.task in ("panoptic", "instance"):
            out["instances"] = instance_inference(
                logits,
                probs,
                top_k=self.top_k,
                isthing=self.isthing if self.task == "panoptic" else None,
            )
        if self.task == "panoptic":
            pan, segments = panoptic_inference(
                logits,
                probs,
                isthing=self.isthing,
                object_mask_threshold=self.object_mask_threshold,
                overlap_threshold=self.overlap_threshold,
                segment_pixels=self.segment_pixels,
                overlap_strict=self.overlap_strict,
            )
            out["panoptic"], out["segments"] = pan, segments
            id_map = pan.to(torch.int32) - 1
            scores = torch.tensor([s["score"] for s in segments], dtype=torch.float32)
            labels = torch.tensor([s["category"] for s in segments], dtype=torch.int64)
            queries = torch.tensor([s["query"] for s in segments], dtype=torch.int64)
        elif self.task == "instance":
            inst = out["instances"]
            keep = (inst["scores"] >= self.instance_score_threshold).nonzero().flatten()
            keep = keep[inst["scores"][keep].argsort(descending=True, stable=True)]
            id_map = torch.full((H, W), -1, dtype=torch.int32, device=probs.device)
            for k in reversed(range(int(keep.numel()))):  # the most confident is painted last
                id_map.masked_fill_(inst["masks"][keep[k]], k)
            scores = inst["scores"][keep].float()
            labels = inst["labels"][keep]
            queries = inst["query_indices"][keep]
        else:
            sem = out["semantic"]
            present = torch.unique(sem)
            lut = torch.full((len(self.isthing),), -1, dtype=torch.int32, device=sem.device)
            lut[present] = torch.arange(present.numel(), dtype=torch.int32, device=sem.device)
            id_map = lut[sem]
            scores = torch.ones(present.numel())
            labels = present.cpu()
            queries = torch.full((present.numel(),), -1, dtype=torch.int64)
        out_dev = self.output_device if self.output_device is not None else probs.device
        out["id_map"] = id_map.to(out_dev)
        out["scores"] = scores.to(out_dev)
        out["labels"] = labels.to(out_dev)
        out["query_indices"] = queries.to(out_dev)
        # what the writers put next to each output: the class's file id and name
        out["category_ids"] = [self.category_ids[int(k)] for k in labels.tolist()]
        if self.category_names is not None:
            out["category_names"] = [self.category_names[int(k)] for k in labels.tolist()]
        for key in ("panoptic", "semantic"):
            if key in out:
                out[key] = out[key].to(out_dev)
        if "instances" in out:
            out["instances"] = {k: v.to(out_dev) for k, v in out["instances"].items()}
        return out
