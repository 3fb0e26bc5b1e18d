"""Banded operations on (H, W) integer id maps (fusion, writers): bounded int64 temporaries.

At 8000 x 6000 an int64 index or float64 weight of the whole map is 384 MB; these work in row
bands of about 2 M pixels instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

_BAND_PIXELS = 1 << 21  # rows per band ~ 2 M pixels: bounds int64/float64 temporaries


def area_and_sum(id_map: Tensor, values: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Per-id pixel count and float64 value sum, in row bands (bounded temporaries).

    Shape: id_map (H, W) int in [0, n), values (H, W) -> (n,) int64, (n,) float64.
    """
    area = torch.zeros(n, dtype=torch.int64, device=id_map.device)
    total = torch.zeros(n, dtype=torch.float64, device=id_map.device)
    rows = max(1, _BAND_PIXELS // max(1, id_map.shape[1]))
    for y in range(0, id_map.shape[0], rows):
        ids = id_map[y : y + rows].reshape(-1).long()
        area += torch.bincount(ids, minlength=n)
        total += torch.bincount(ids, weights=values[y : y + rows].reshape(-1).double(), minlength=n)
    return area, total


def remap_ids(id_map: Tensor, lut: Tensor) -> Tensor:
    """``lut[id_map]`` in row bands (the index must be int64; this bounds that temporary).

    Shape: id_map (H, W) int; lut (L,) -> (H, W) with lut's dtype.
    """
    out = torch.empty(id_map.shape, dtype=lut.dtype, device=id_map.device)
    rows = max(1, _BAND_PIXELS // max(1, id_map.shape[1]))
    for y in range(0, id_map.shape[0], rows):
        out[y : y + rows] = lut[id_map[y : y + rows].long()]
    return out
