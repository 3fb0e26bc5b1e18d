"""Agreement of two entity id maps of the same image (e.g. fp32 vs bf16 predictions).

Entity ids are arbitrary labels: output k of one run need not be output k of the other (the
order follows the scores, which move with the precision). The entities of the two maps are
therefore matched one-to-one first (Hungarian assignment maximising the shared pixels), and the
agreement is the fraction of pixels whose two labels are a matched pair or both "no entity".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


@dataclass(frozen=True)
class Agreement:
    """Result of :func:`id_map_agreement`.

    ``fraction``: pixels labelled alike after matching / all pixels (1.0 = same partition).
    ``entities_a``/``entities_b``: non-empty entities of each map; ``matched``: matched pairs
    sharing at least one pixel; ``pixels``: H * W.
    """

    fraction: float
    entities_a: int
    entities_b: int
    matched: int
    pixels: int


def _dense_labels(id_map: Tensor) -> tuple[Tensor, int]:
    """Labels 0..n-1 for the non-empty entities and n for "no entity" (negative ids).

    Shape: (H, W) int -> (H*W,) int64 and n.
    """
    flat = id_map.reshape(-1).long()
    ids, inverse = torch.unique(flat, return_inverse=True)
    empty = ids < 0
    if bool(empty.any()):
        # torch.unique sorts: the negative ids come first; every one of them means no entity
        k = int(empty.sum())
        inverse = torch.where(inverse < k, ids.numel() - k, inverse - k)
        return inverse, int(ids.numel() - k)
    return inverse, int(ids.numel())


def id_map_agreement(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> Agreement:
    """Fraction of pixels on which two id maps assign the same entity, after matching entities.

    Each non-empty entity of ``a`` is matched to at most one of ``b`` (maximum total overlap);
    "no entity" (negative id) only agrees with "no entity". Pixel counts, not probabilities: a
    one-pixel shift of a boundary costs that pixel only.

    Shape: a, b (H, W) integer id maps, -1 (any negative value) = no entity.
    """
    ta = torch.as_tensor(a)
    tb = torch.as_tensor(b)
    if ta.shape != tb.shape or ta.ndim != 2:
        raise ValueError(
            f"id maps must be (H, W) and of one shape, got {tuple(ta.shape)}, {tuple(tb.shape)}"
        )
    la, na = _dense_labels(ta)
    lb, nb = _dense_labels(tb)
    pixels = int(la.numel())
    if pixels == 0:
        return Agreement(1.0, na, nb, 0, 0)
    joint = torch.bincount(la * (nb + 1) + lb, minlength=(na + 1) * (nb + 1))
    joint = joint.view(na + 1, nb + 1)
    agree = int(joint[na, nb])  # no entity in both maps
    matched = 0
    if na and nb:
        overlap = joint[:na, :nb].numpy()
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        shared = overlap[rows, cols]
        agree += int(shared.sum())
        matched = int((shared > 0).sum())
    return Agreement(agree / pixels, na, nb, matched, pixels)
