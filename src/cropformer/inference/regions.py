"""Where a view's masks land in the image: integer boxes, the resize of a view's mask logits into
its region, and the window holding a mask's nonzero pixels. Shared by the multi-view fusion, the
class-aware fusion and the test-time view merge."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def nonzero_window(mask: Tensor) -> tuple[int, int, int, int] | None:
    """Bounding window (y0, y1, x0, x1), half-open, of the True pixels of an (H, W) mask."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = torch.nonzero(mask[y0:y1].any(dim=0)).flatten()
    return y0, y1, int(cols[0]), int(cols[-1]) + 1


def int_box(box: Sequence[float], H: int, W: int) -> tuple[int, int, int, int]:
    """Round a view region to integer pixels and check it lies inside the image."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise ValueError(
            f"view region {list(box)} (x0, y0, x1, y1) is empty or outside the {H}x{W} image"
        )
    return x0, y0, x1, y1


def view_to_region(
    mask_logits: Tensor,
    padded_hw: tuple[int, int],
    view_hw: tuple[int, int],
    region_hw: tuple[int, int],
) -> Tensor:
    """Upsample stride-4 logits to the padded size, cut the padding, resize to the region size.

    Both resizes are bilinear with ``align_corners=False`` like the official code.

    Shape: mask_logits (q, h, w) -> (q, region_h, region_w).
    """
    vh, vw = view_hw
    if vh > padded_hw[0] or vw > padded_hw[1]:
        raise ValueError(f"view size {view_hw} exceeds the padded batch size {padded_hw}")
    up = F.interpolate(mask_logits[None], size=padded_hw, mode="bilinear", align_corners=False)
    up = up[:, :, :vh, :vw]
    if (vh, vw) == tuple(region_hw):
        return up[0].contiguous()
    return F.interpolate(up, size=region_hw, mode="bilinear", align_corners=False)[0]
