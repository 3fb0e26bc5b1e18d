"""Random predictions and targets for the loss tests (imported by the test modules)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def make_pass(
    num: int, queries: int, size: tuple[int, int], views: int | None, layers: int, seed: int
) -> dict[str, Any]:
    """Random pass outputs: ``layers`` predictions (final + layers-1 aux), masks at ``size``."""
    gen = torch.Generator().manual_seed(seed)
    shape = (num, queries, *(() if views is None else (views,)), *size)

    def one() -> dict[str, Tensor]:
        return {
            "pred_logits": torch.randn(num, queries, 2, generator=gen),
            "pred_masks": 3 * torch.randn(shape, generator=gen),
        }

    out: dict[str, Any] = one()
    out["aux_outputs"] = [one() for _ in range(layers - 1)]
    return out


def make_targets(
    counts: list[int], views: int, size: tuple[int, int], seed: int, invalid: float = 0.3
) -> list[dict[str, Tensor]]:
    """Random blob-like entity masks (K, T, H, W) and validity; invalid views are all-zero."""
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for k in counts:
        coarse = torch.rand(k, views, size[0] // 8, size[1] // 8, generator=gen) > 0.6
        masks = coarse.repeat_interleave(8, 2).repeat_interleave(8, 3)
        valid = torch.rand(k, views, generator=gen) > invalid
        valid[:, 0] |= True  # every entity is present in the full view
        masks = masks & valid[:, :, None, None]
        valid &= masks.flatten(2).any(-1)
        targets.append({"masks": masks, "valid": valid})
    return targets
