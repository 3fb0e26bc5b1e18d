"""Sine positional codes: the 2D code of DETR/Mask2Former and CropFormer's view-axis code.

Both follow the official formulas exactly (cumulative index + 1, normalised by the extent plus
1e-6, times 2*pi; channel j holds sin for even j and cos for odd j of
``position / 10000 ** (2 * (j // 2) / num_feats)``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_EPS = 1e-6


def _sine_features(position: Tensor, num_feats: int, temperature: float) -> Tensor:
    """Interleaved sin/cos features of ``position`` (any shape) -> shape + (num_feats,)."""
    index = torch.arange(num_feats, dtype=torch.float32, device=position.device)
    dim_t = temperature ** (2 * torch.div(index, 2, rounding_mode="trunc") / num_feats)
    phase = position[..., None] / dim_t
    return torch.stack((phase[..., 0::2].sin(), phase[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position_2d(
    height: int,
    width: int,
    num_feats: int,
    *,
    temperature: float = 10000.0,
    device: torch.device | None = None,
) -> Tensor:
    """The normalised 2D sine code of an ``height x width`` map (y code first, then x).

    Shape:
        returns (2 * num_feats, height, width), float32.
    """
    scale = 2 * math.pi
    ys = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    xs = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    ys = ys / (height + _EPS) * scale
    xs = xs / (width + _EPS) * scale
    pos_y = _sine_features(ys, num_feats, temperature)  # (h, F)
    pos_x = _sine_features(xs, num_feats, temperature)  # (w, F)
    pos = torch.cat(
        (
            pos_y[:, None, :].expand(height, width, num_feats),
            pos_x[None, :, :].expand(height, width, num_feats),
        ),
        dim=-1,
    )
    return pos.permute(2, 0, 1).contiguous()


def view_position_code(
    num_views: int,
    channels: int,
    *,
    normalize_by: int | None = None,
    temperature: float = 10000.0,
    device: torch.device | None = None,
) -> Tensor:
    """The view-axis sine code added to the 2D code in the batch-level pass.

    View k = 1..T gets phase ``k / (normalize_by + 1e-6) * 2*pi`` over ``channels`` sine features.
    ``normalize_by=None`` uses T itself (official; the full view's code then differs between
    training with T=2 and test with T=5, reference doc section 11 item 2).

    Shape:
        returns (T, channels), float32.
    """
    denom = float(num_views if normalize_by is None else normalize_by)
    k = torch.arange(1, num_views + 1, dtype=torch.float32, device=device)
    phase = k / (denom + _EPS) * (2 * math.pi)
    return _sine_features(phase, channels, temperature)
