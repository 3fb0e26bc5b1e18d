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

#: elements of the (kept queries, rows, W) block of the panoptic winner pass
_BLOCK_ELEMENTS = 1 << 22


def semantic_inference(class_logits: Tensor, mask_probs: Tensor) -> Tensor:
    """Per-class scores: sum over queries of class probability x mask probability.

    Shape: class_logits (Q, C+1) (last = no-object); mask_probs (Q, H, W); returns (C, H, W).
    The semantic map is ``argmax(0)``.
    """
    cls = class_logits.float().softmax(-1)[:, :-1]
    return torch.einsum("qc,qhw->chw", cls, mask_probs.float())


def instance_queries(class_logits: Tensor, *, top_k: int = TOP_K) -> Tensor:
    """The queries whose masks ``instance_inference`` reads (those of its top-k pairs), sorted.

    Shape: class_logits (Q, C+1) -> (n,) int64.
    """
    num_classes = class_logits.shape[1] - 1
    scores = class_logits.float().softmax(-1)[:, :-1]
    flat = scores.flatten().topk(min(top_k, scores.numel()), sorted=False).indices
    return torch.unique(torch.div(flat, num_classes, rounding_mode="floor"))


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
    # A query is often kept with several classes: its mask and mask score are computed once
    # (not per pair, as the official code does on a (k, H, W) float copy).
    unique, inverse = torch.unique(query, return_inverse=True)
    H, W = mask_probs.shape[-2:]
    n, device = int(unique.numel()), mask_probs.device
    unique_masks = torch.empty((n, H, W), dtype=torch.bool, device=device)
    mask_scores = torch.empty(n, dtype=torch.float32, device=device)
    for j, q in enumerate(unique.tolist()):
        probs = mask_probs[q].float()
        torch.gt(probs, 0.5, out=unique_masks[j])
        binary = unique_masks[j].float()
        mask_scores[j] = (probs * binary).sum() / (binary.sum() + 1e-6)
    inverse = inverse.to(device)
    return {
        "masks": unique_masks[inverse],
        "scores": scores_per_image * mask_scores[inverse].to(scores_per_image.device),
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

    The official per-segment loop over full-resolution masks is computed as per-pixel winners
    (row block by row block) and per-query pixel counts; the segment decisions are the official
    ones on those counts, and the map is painted once through a lookup table.

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
    device = mask_probs.device
    panoptic = torch.zeros((H, W), dtype=torch.int32, device=device)
    segments: list[dict[str, Any]] = []
    K = int(queries.numel())
    if K == 0:
        return panoptic, segments
    cur_scores = scores[queries].to(device)
    q_dev = queries.to(device)
    # per pixel: the winning kept query (argmax: the first of equal values) and whether its own
    # probability is >= 0.5; per kept query: its own area. Row blocks bound the (K, rows, W) copy.
    mask_ids = torch.empty((H, W), dtype=torch.int64, device=device)
    own_win = torch.empty((H, W), dtype=torch.bool, device=device)
    original_area = torch.zeros(K, dtype=torch.int64, device=device)
    rows = max(1, _BLOCK_ELEMENTS // max(1, K * W))
    for y0 in range(0, H, rows):
        cur = mask_probs[q_dev, y0 : y0 + rows].float()
        ids = (cur_scores.view(-1, 1, 1) * cur).argmax(0)
        mask_ids[y0 : y0 + rows] = ids
        own = cur >= 0.5
        original_area += own.flatten(1).sum(1)
        own_win[y0 : y0 + rows] = own.gather(0, ids[None])[0]
    mask_area = torch.bincount(mask_ids.flatten(), minlength=K).tolist()
    kept_area = torch.bincount(mask_ids[own_win], minlength=K).tolist()
    orig_area = original_area.tolist()
    label_list = labels[queries].tolist()
    score_list = cur_scores.tolist()
    query_list = queries.tolist()
    lut = [0] * K  # kept query -> segment id (0: dropped)
    stuff_ids: dict[int, int] = {}
    current = 0
    for k in range(K):
        cls = label_list[k]
        painted = kept_area[k] if segment_pixels == "official" else mask_area[k]
        if mask_area[k] == 0 or orig_area[k] == 0 or painted == 0:
            continue
        ratio = mask_area[k] / orig_area[k]
        if ratio < overlap_threshold or (overlap_strict and ratio == overlap_threshold):
            continue
        if not thing[cls]:
            if cls in stuff_ids:
                lut[k] = stuff_ids[cls]
                continue
            stuff_ids[cls] = current + 1
        current += 1
        lut[k] = current
        segments.append(
            {
                "id": current,
                "category": cls,
                "isthing": bool(thing[cls]),
                "score": score_list[k],
                "query": query_list[k],
            }
        )
    if not segments:
        return panoptic, segments
    painted_ids = torch.tensor(lut, dtype=torch.int32, device=device)[mask_ids]
    if segment_pixels == "official":
        painted_ids.masked_fill_(~own_win, 0)
    return painted_ids, segments
