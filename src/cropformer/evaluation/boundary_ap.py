"""Boundary IoU (Cheng et al., CVPR'21) for boundary AP.

The boundary of a mask is the set of its pixels within distance ``d`` of its contour, where
``d = max(1, round(dilation_ratio * image_diagonal))`` (ratio 0.02 as in the boundary-iou API and
Mask2Former's ``evaluate_coco_boundary_ap.py``). Distance is the chessboard distance of ``d``
iterated 3x3 erosions, with the image treated as surrounded by background, so a mask cut by the
image border has a boundary there too. Boundary AP is COCO AP with, for every non-crowd pair,
IoU = min(mask IoU, boundary IoU); crowd ground truth keeps the mask IoU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_util
from scipy import ndimage

from cropformer.evaluation.rle import RLE, c_ready_rle, decode_rles, json_ready_rle

DEFAULT_DILATION_RATIO = 0.02


def boundary_width(height: int, width: int, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> int:
    """Boundary width ``d`` in pixels for an image of the given size (at least 1)."""
    if dilation_ratio <= 0:
        raise ValueError(f"dilation_ratio={dilation_ratio} must be > 0")
    # Python's round (half to even) as in the boundary-iou API
    return max(1, int(round(dilation_ratio * float(np.sqrt(height**2 + width**2)))))


def mask_to_boundary(
    mask: np.ndarray, dilation_ratio: float = DEFAULT_DILATION_RATIO
) -> np.ndarray:
    """Inner boundary of a binary mask: the mask minus its erosion by a (2d+1) square.

    Works on the mask's bounding box only (plus a one-pixel background ring), which gives the
    same result as eroding the whole image because everything outside the box is background.

    Shape: mask (H, W) -> bool (H, W).
    """
    m = np.asarray(mask).astype(bool, copy=False)
    if m.ndim != 2:
        raise ValueError(f"mask_to_boundary expects an (H, W) mask, got shape {m.shape}")
    H, W = m.shape
    d = boundary_width(H, W, dilation_ratio)
    out = np.zeros((H, W), dtype=bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return out
    cols = np.flatnonzero(m.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.zeros((y1 - y0 + 2, x1 - x0 + 2), dtype=np.uint8)
    crop[1:-1, 1:-1] = m[y0:y1, x0:x1]
    # A (2d+1) square erosion equals d iterations of a 3x3 erosion; cval=1 means "beyond the
    # background ring nothing erodes", which the ring makes irrelevant anyway.
    eroded = ndimage.minimum_filter(crop, size=2 * d + 1, mode="constant", cval=1)
    out[y0:y1, x0:x1] = (crop[1:-1, 1:-1] > 0) & (eroded[1:-1, 1:-1] == 0)
    return out


def rle_to_boundary_rle(rle: RLE, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> RLE:
    """Boundary of a compressed-RLE mask, as compressed RLE (``counts`` str)."""
    m = decode_rles([c_ready_rle(rle)])[:, :, 0]
    return json_ready_rle(
        mask_util.encode(np.asfortranarray(mask_to_boundary(m, dilation_ratio).astype(np.uint8)))
    )


def boundary_iou(
    gt: np.ndarray, dt: np.ndarray, dilation_ratio: float = DEFAULT_DILATION_RATIO
) -> float:
    """Boundary IoU of two binary masks of the same size (1.0 when both are empty).

    Shape: gt (H, W), dt (H, W).
    """
    if gt.shape != dt.shape:
        raise ValueError(f"masks differ in size: gt {gt.shape} vs dt {dt.shape}")
    gb = mask_to_boundary(gt, dilation_ratio)
    db = mask_to_boundary(dt, dilation_ratio)
    union = np.logical_or(gb, db).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(gb, db).sum() / union)


def combined_ious(
    dt_masks: Sequence[RLE],
    gt_masks: Sequence[RLE],
    dt_boundaries: Sequence[RLE],
    gt_boundaries: Sequence[RLE],
    iscrowd: Sequence[int],
) -> np.ndarray | list:
    """Boundary-AP IoU matrix: min(mask IoU, boundary IoU) for non-crowd ground truth.

    Shape: returns (D, G) float64, or ``[]`` when either side is empty (COCOeval convention).
    """
    if len(dt_masks) == 0 or len(gt_masks) == 0:
        return []
    crowd = [int(c) for c in iscrowd]
    mask_ious = np.asarray(
        mask_util.iou([c_ready_rle(r) for r in dt_masks], [c_ready_rle(r) for r in gt_masks], crowd)
    )
    b_ious = np.asarray(
        mask_util.iou(
            [c_ready_rle(r) for r in dt_boundaries], [c_ready_rle(r) for r in gt_boundaries], crowd
        )
    )
    non_crowd = ~np.asarray(crowd, dtype=bool)
    out = mask_ious.copy()
    out[:, non_crowd] = np.minimum(mask_ious[:, non_crowd], b_ious[:, non_crowd])
    return out
