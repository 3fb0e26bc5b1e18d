"""Arrays to look at entities with: id maps from masks, each view's own entities, the fusion's
decoder choices, the entities two predictions disagree on, highlighted overlays.

Plain numpy / torch, no plotting library (the notebooks draw these arrays with matplotlib).
Id maps follow ``EntityPrediction``: (H, W) integers, ``-1`` = no entity, ``k`` = output k.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from cropformer.evaluation.writers import entity_colors
from cropformer.inference.fusion import DECODER_CHOICES, MultiViewFusion
from cropformer.schema import Batch, EntityPrediction, Outputs

__all__ = [
    "EntityMatch",
    "entity_boundaries",
    "fuse_with_decoder",
    "highlight",
    "label_iou",
    "label_map_in_frame",
    "masks_to_id_map",
    "match_entities",
    "network_outputs",
    "view_entities",
]


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def masks_to_id_map(masks: torch.Tensor | np.ndarray) -> np.ndarray:
    """Binary masks -> id map (``k`` where mask k is set, ``-1`` elsewhere; a later mask wins
    where two overlap), e.g. one view's training label masks ``batch["targets"][b]["masks"][:, t]``.

    Shape: (K, h, w) bool -> (h, w) int32.
    """
    m = _np(masks).astype(bool, copy=False)
    if m.ndim != 3:
        raise ValueError(f"masks must be (K, h, w), got shape {m.shape}")
    out = np.full(m.shape[1:], -1, dtype=np.int32)
    for k in range(m.shape[0]):
        out[m[k]] = k
    return out


def entity_boundaries(id_map: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour belongs to another entity (or to none).

    Shape: (H, W) -> (H, W) bool.
    """
    ids = _np(id_map)
    edge = np.zeros(ids.shape, dtype=bool)
    if ids.ndim != 2:
        raise ValueError(f"id_map must be (H, W), got shape {ids.shape}")
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return edge


def label_map_in_frame(
    view_map: torch.Tensor | np.ndarray,
    box: Sequence[float],
    frame_size: tuple[int, int],
) -> np.ndarray:
    """A view's label map put back into the original frame (nearest neighbour), ``-1`` outside
    the view's box: what a mask at the view's resolution can say about the original pixels.

    Args:
        view_map: the view's label map (e.g. ``data.views.render_label_view``).
        box: the view's ``(x0, y0, x1, y1)`` in original pixels.
        frame_size: (H, W) of the original image.

    Shape: view_map (h, w) -> (H, W) int32.
    """
    vm = _np(view_map).astype(np.int32, copy=False)
    H, W = frame_size
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise ValueError(f"box {tuple(box)} does not lie inside the {H}x{W} frame")
    h, w = vm.shape
    # centre of each original pixel mapped into the view, truncated (nearest)
    rows = np.minimum(((np.arange(y1 - y0) + 0.5) * h / (y1 - y0)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(x1 - x0) + 0.5) * w / (x1 - x0)).astype(np.int64), w - 1)
    out = np.full((H, W), -1, dtype=np.int32)
    out[y0:y1, x0:x1] = vm[rows[:, None], cols[None, :]]
    return out


def label_iou(
    reference: torch.Tensor | np.ndarray,
    other: torch.Tensor | np.ndarray,
    num_labels: int | None = None,
    region: np.ndarray | None = None,
) -> np.ndarray:
    """IoU of label k in ``reference`` with the same label k in ``other``, per label.

    Args:
        reference, other: label maps of one frame (``-1`` = none) with the same label ids.
        num_labels: K (default: ``reference.max() + 1``).
        region: optional (H, W) bool: compare only these pixels (e.g. a crop's box).

    Returns:
        (K,) float64; NaN for a label absent from both maps (inside ``region``).
    """
    a = _np(reference).astype(np.int64).ravel()
    b = _np(other).astype(np.int64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in size: {_np(reference).shape} vs {_np(other).shape}")
    if region is not None:
        keep = np.asarray(region, dtype=bool).ravel()
        a, b = a[keep], b[keep]
    K = int(num_labels) if num_labels is not None else int(max(a.max(initial=-1), -1)) + 1
    area_a = np.bincount(a[(a >= 0) & (a < K)], minlength=K)[:K]
    area_b = np.bincount(b[(b >= 0) & (b < K)], minlength=K)[:K]
    same = (a == b) & (a >= 0) & (a < K)
    inter = np.bincount(a[same], minlength=K)[:K]
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


@torch.no_grad()
def network_outputs(
    predictor: Any, images: Sequence[np.ndarray]
) -> tuple[Outputs | dict[str, Any], Batch]:
    """The raw network outputs of a predictor's views (what its fusion consumes), for looking
    at the views and passes one by one.

    Args:
        predictor: an ``inference.predictor.EntityPredictor`` (e.g. the ``predictor`` of a
            loaded segmenter): its ``make_batch``, ``net``, ``net_kwargs`` and ``device``.
        images: (H, W, 3) uint8 images with the same number of views.

    Returns:
        (outputs on the CPU, batch): ``predictor.fusion(outputs, batch)`` equals
        ``predictor.predict_batch(images)`` (fp32).
    """
    batch = predictor.make_batch(list(images))
    T = int(batch["boxes"].shape[1])
    outputs = predictor.net(
        batch["images"].to(predictor.device),
        num_views=T,
        view_sizes=batch["view_sizes"].to(predictor.device),
        **predictor.net_kwargs,
    )
    return _to_cpu(outputs), batch


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu() if x.is_floating_point() else x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


def view_entities(
    outputs: Outputs | dict[str, Any],
    batch: Batch | dict[str, Any],
    fusion: MultiViewFusion,
    *,
    image: int = 0,
    level: Literal["image", "batch"] = "batch",
) -> list[EntityPrediction]:
    """Each view's own entities, as if that view were the only one, in the original frame.

    ``level="image"``: the image-level pass of each view (its own queries and classes);
    ``"batch"``: the batch-level pass (one query set for all views, so output ids follow the same
    queries from view to view). Each view is fused alone by ``fusion.fuse_image`` (same threshold,
    scores and ordering as the full fusion); pixels outside the view's box are ``-1``.

    Returns:
        T predictions of ``image`` (view 0 = full view), id maps (H, W) at the original size.
    """
    boxes = batch["boxes"]
    B, T = int(boxes.shape[0]), int(boxes.shape[1])
    if not 0 <= image < B:
        raise ValueError(f"image={image} out of range: the batch holds {B} image(s)")
    if level not in ("image", "batch"):
        raise ValueError(f"level={level!r} must be 'image' or 'batch'")
    if level == "batch" and outputs.get("batch_level") is None:
        raise ValueError(
            "level='batch' needs the batch-level pass, but the outputs have none "
            "(Mask2Former mode): use level='image'"
        )
    padded_hw = (int(batch["images"].shape[-2]), int(batch["images"].shape[-1]))
    H, W = (int(v) for v in batch["orig_sizes"][image].tolist())
    out: list[EntityPrediction] = []
    for t in range(T):
        n = image * T + t
        size = [int(v) for v in batch["view_sizes"][n].tolist()]
        box = [float(v) for v in boxes[image, t].tolist()]
        if level == "image":
            logits = outputs["image_level"]["pred_logits"][n]
            masks = outputs["image_level"]["pred_masks"][n]
            top_k = fusion.top_k_single_view
        else:
            level_out = outputs["batch_level"]  # type: ignore[typeddict-item]
            logits = level_out["pred_logits"][image]
            masks = level_out["pred_masks"][image][:, t]
            top_k = None
        out.append(
            fusion.fuse_image(
                logits, [(masks, size, box)], padded_hw=padded_hw, orig_size=(H, W), top_k=top_k
            )
        )
    return out


def fuse_with_decoder(
    fusion: MultiViewFusion,
    outputs: Outputs | dict[str, Any],
    batch: Batch | dict[str, Any],
    decoder: str,
) -> list[EntityPrediction]:
    """The fusion of ``outputs`` with another decoder choice (Table 8b of the paper: ``I-O``,
    ``B-O``, ``B-C``, ``B-OC``), every other fusion setting kept; no new forward pass."""
    if decoder not in DECODER_CHOICES:
        raise ValueError(f"decoder={decoder!r} is not one of {DECODER_CHOICES}")
    other = copy.copy(fusion)
    other.decoder = decoder
    return other(outputs, batch)


@dataclass
class EntityMatch:
    """Entities of two id maps paired by IoU.

    Attributes:
        pairs: ``(k_a, k_b)`` of matched entities.
        ious: IoU of each pair.
        only_a: entities of ``a`` without a partner in ``b`` (missed or shaped differently by b).
        only_b: entities of ``b`` without a partner in ``a``.
    """

    pairs: list[tuple[int, int]] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)
    only_a: list[int] = field(default_factory=list)
    only_b: list[int] = field(default_factory=list)


def match_entities(
    a: torch.Tensor | np.ndarray,
    b: torch.Tensor | np.ndarray,
    *,
    iou_threshold: float = 0.5,
) -> EntityMatch:
    """Pair the non-empty entities of two id maps of one image (e.g. CropFormer vs Mask2Former).

    Pairs are taken greedily by IoU, highest first, if above ``iou_threshold``; for thresholds
    >= 0.5 the pairing is unique (non-overlapping entities: an entity has at most one partner
    with IoU > 0.5). Empty outputs are ignored.

    Shape: a, b (H, W) id maps (-1 = none) of the same size.
    """
    ia = _np(a).astype(np.int64).ravel()
    ib = _np(b).astype(np.int64).ravel()
    if ia.shape != ib.shape:
        raise ValueError(f"id maps differ in size: {_np(a).shape} vs {_np(b).shape}")
    na, nb = int(ia.max(initial=-1)) + 1, int(ib.max(initial=-1)) + 1
    # joint histogram over (a + 1, b + 1): row/col 0 = no entity
    joint = np.bincount((ia + 1) * (nb + 1) + (ib + 1), minlength=(na + 1) * (nb + 1))
    joint = joint.reshape(na + 1, nb + 1)
    area_a, area_b = joint.sum(1)[1:], joint.sum(0)[1:]
    inter = joint[1:, 1:].astype(np.float64)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    result = EntityMatch()
    used_a, used_b = np.zeros(na, bool), np.zeros(nb, bool)
    if iou.size:
        order = np.argsort(-iou, axis=None, kind="stable")
        for flat in order:
            i, j = divmod(int(flat), nb)
            if iou[i, j] <= iou_threshold:
                break
            if used_a[i] or used_b[j]:
                continue
            used_a[i] = used_b[j] = True
            result.pairs.append((i, j))
            result.ious.append(float(iou[i, j]))
    result.only_a = [int(k) for k in np.flatnonzero(~used_a & (area_a > 0))]
    result.only_b = [int(k) for k in np.flatnonzero(~used_b & (area_b > 0))]
    return result


def highlight(
    image: np.ndarray,
    id_map: torch.Tensor | np.ndarray,
    ids: Sequence[int] | None = None,
    *,
    alpha: float = 0.6,
    dim: float = 0.35,
    boundaries: bool = True,
) -> np.ndarray:
    """The image with the entities ``ids`` coloured (all entities when None), the rest dimmed,
    and thin white boundaries of every entity.

    Shape: image (H, W, 3) uint8, id_map (H, W) -> (H, W, 3) uint8.
    """
    img = np.asarray(image)
    ids_map = _np(id_map).astype(np.int64, copy=False)
    if img.shape[:2] != ids_map.shape or img.ndim != 3:
        raise ValueError(f"image {img.shape} and id map {ids_map.shape} differ in size")
    if not (0.0 <= alpha <= 1.0 and 0.0 <= dim <= 1.0):
        raise ValueError(f"alpha={alpha} and dim={dim} must lie in [0, 1]")
    n = int(ids_map.max(initial=-1)) + 1
    chosen = np.zeros(n + 1, dtype=bool)  # index k + 1; entry 0 = no entity
    if ids is None:
        chosen[1:] = True
    else:
        for k in ids:
            if 0 <= int(k) < n:
                chosen[int(k) + 1] = True
    palette = np.concatenate([np.zeros((1, 3)), entity_colors(n).astype(np.float64)])
    base = img.astype(np.float64)
    sel = chosen[ids_map + 1]
    colour = palette[ids_map + 1]
    out = np.where(sel[..., None], base * (1 - alpha) + colour * alpha, base * dim)
    if boundaries:
        out[entity_boundaries(ids_map)] = 255.0
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
