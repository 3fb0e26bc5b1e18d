"""Mask2Former's class-aware inference: semantic, instance and panoptic outputs of one image.

These are the official ``MaskFormer.semantic_inference`` / ``instance_inference`` /
``panoptic_inference`` (Mask2Former, detectron2) on one image's class logits and mask
probabilities at the output resolution. They take probabilities, not logits, so the CropFormer
multi-view fusion (which averages per-view sigmoids) feeds them the same way a single view does
(probability = sigmoid(logit)); ``mask_probs > 0.5`` is the official ``mask_pred > 0``.

transformers' ``Mask2FormerImageProcessor.post_process_*_segmentation`` implements the same
three with two differences in the panoptic case (a segment keeps the pixels where it wins the
argmax even below the mask threshold, and a segment whose kept share equals the overlap
threshold is dropped): the flags ``segment_pixels="argmax"`` and ``overlap_strict=True``
reproduce it (the equality is a test).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

#: official COCO / ADE20K panoptic test settings (``MODEL.MASK_FORMER.TEST``)
OBJECT_MASK_THRESHOLD = 0.8
OVERLAP_THRESHOLD = 0.8
#: official ``TEST.DETECTIONS_PER_IMAGE`` of the instance output
TOP_K = 100

SegmentPixels = Literal["official", "argmax"]


def semantic_inference(class_logits: Tensor, mask_probs: Tensor) -> Tensor:
    """Per-class scores: sum over queries of class probability x mask probability.

    Shape: class_logits (Q, C+1) (last = no-object); mask_probs (Q, H, W); returns (C, H, W).
    The semantic map is ``argmax(0)``.
    """
    cls = class_logits.float().softmax(-1)[:, :-1]
    return torch.einsum("qc,qhw->chw", cls, mask_probs.float())


def instance_inference(
    class_logits: Tensor,
    mask_probs: Tensor,
    *,
    top_k: int = TOP_K,
    isthing: Sequence[bool] | Tensor | None = None,
) -> dict[str, Tensor]:
    """The top-k (query, class) pairs as instances, scored by class x mean mask probability.

    Args:
        class_logits: (Q, C+1) class logits (last = no-object).
        mask_probs: (Q, H, W) mask probabilities.
        top_k: pairs kept (official ``test_topk_per_image`` 100).
        isthing: (C,) thing flags; given (panoptic models, official ``panoptic_on``), pairs of
            stuff classes are dropped.

    Returns:
        ``masks`` (k, H, W) bool (prob > 0.5), ``scores`` (k,), ``labels`` (k,) contiguous class,
        ``query_indices`` (k,), in ``topk(sorted=False)`` order as the official code; empty
        masks are kept (score 0).
    """
    num_queries, num_classes = class_logits.shape[0], class_logits.shape[1] - 1
    scores = class_logits.float().softmax(-1)[:, :-1]
    labels = torch.arange(num_classes, device=scores.device).repeat(num_queries)
    k = min(top_k, scores.numel())
    scores_per_image, flat = scores.flatten().topk(k, sorted=False)
    labels_per_image = labels[flat]
    query = torch.div(flat, num_classes, rounding_mode="floor")
    if isthing is not None:
        thing = torch.as_tensor(isthing, dtype=torch.bool, device=scores.device)
        keep = thing[labels_per_image]
        scores_per_image, labels_per_image, query = (
            scores_per_image[keep],
            labels_per_image[keep],
            query[keep],
        )
    probs = mask_probs[query.to(mask_probs.device)].float()
    masks = probs > 0.5
    binary = masks.flatten(1).float()
    mask_scores = (probs.flatten(1) * binary).sum(1) / (binary.sum(1) + 1e-6)
    return {
        "masks": masks,
        "scores": scores_per_image * mask_scores.to(scores_per_image.device),
        "labels": labels_per_image,
        "query_indices": query,
    }


def panoptic_inference(
    class_logits: Tensor,
    mask_probs: Tensor,
    *,
    isthing: Sequence[bool] | Tensor,
    object_mask_threshold: float = OBJECT_MASK_THRESHOLD,
    overlap_threshold: float = OVERLAP_THRESHOLD,
    segment_pixels: SegmentPixels = "official",
    overlap_strict: bool = False,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """Non-overlapping segments: confident queries compete per pixel, stuff of a class merges.

    Queries whose best class is not no-object and whose probability exceeds
    ``object_mask_threshold`` compete for each pixel by class probability x mask probability.
    A query keeps the pixels it wins where its own mask probability is >= 0.5
    (``segment_pixels="official"``; ``"argmax"``: all pixels it wins, as transformers), if that
    is at least ``overlap_threshold`` of its own mask (``overlap_strict``: more than, as
    transformers); every stuff class becomes one segment.

    Shape: class_logits (Q, C+1); mask_probs (Q, H, W); isthing (C,).

    Returns:
        ``panoptic`` (H, W) int32, 0 = void, segment ids 1, 2, ... and the segments
        ``[{"id", "category" (contiguous class), "isthing", "score", "query"}]`` (one entry per
        segment; a merged stuff segment keeps the entry of its first query).
    """
    if segment_pixels not in ("official", "argmax"):
        raise ValueError(f"segment_pixels={segment_pixels!r}: use 'official' or 'argmax'")
    num_classes = class_logits.shape[-1] - 1
    thing = torch.as_tensor(isthing, dtype=torch.bool).tolist()
    if len(thing) != num_classes:
        raise ValueError(f"isthing has {len(thing)} flags for {num_classes} classes")
    scores, labels = class_logits.float().softmax(-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    queries = torch.nonzero(keep).flatten()
    H, W = mask_probs.shape[-2:]
    panoptic = torch.zeros((H, W), dtype=torch.int32, device=mask_probs.device)
    segments: list[dict[str, Any]] = []
    if queries.numel() == 0:
        return panoptic, segments
    cur_scores = scores[queries].to(mask_probs.device)
    cur_masks = mask_probs[queries.to(mask_probs.device)].float()
    mask_ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    stuff_ids: dict[int, int] = {}
    current = 0
    for k in range(int(queries.numel())):
        cls = int(labels[queries[k]])
        won = mask_ids == k
        own = cur_masks[k] >= 0.5
        mask_area = int(won.sum())
        original_area = int(own.sum())
        mask = won & own if segment_pixels == "official" else won
        if mask_area == 0 or original_area == 0 or not bool(mask.any()):
            continue
        ratio = mask_area / original_area
        if ratio < overlap_threshold or (overlap_strict and ratio == overlap_threshold):
            continue
        if not thing[cls]:
            if cls in stuff_ids:
                panoptic[mask] = stuff_ids[cls]
                continue
            stuff_ids[cls] = current + 1
        current += 1
        panoptic[mask] = current
        segments.append(
            {
                "id": current,
                "category": cls,
                "isthing": bool(thing[cls]),
                "score": float(cur_scores[k]),
                "query": int(queries[k]),
            }
        )
    return panoptic, segments
