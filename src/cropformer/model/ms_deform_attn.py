"""Multi-scale deformable attention (Deformable DETR), pure PyTorch via ``grid_sample``.

The core follows the official CPU fallback: each level's values are sampled bilinearly
(``align_corners=False``, zero padding) at ``2 * location - 1`` and summed with the attention
weights. It runs on any device and dtype; :class:`MSDeformAttn` keeps itself in fp32 under
autocast (the official pixel decoder disables autocast as a whole).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn_core(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Weighted sum of bilinear samples of ``value`` at ``sampling_locations``.

    Args:
        value: values of all levels, flattened level by level (row-major within a level).
        spatial_shapes: (h, w) of each level, in the order of ``value``.
        sampling_locations: normalised (x, y) in [0, 1] of each sampling point (0 = left/top
            edge of the map, 1 = right/bottom edge).
        attention_weights: weight of each point (softmax over levels x points already applied).

    Shape:
        value: (N, S, M, D) with S = sum of h*w, M heads, D channels per head.
        sampling_locations: (N, Lq, M, L, P, 2).
        attention_weights: (N, Lq, M, L, P).
        returns (N, Lq, M*D).
    """
    N, _, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    if len(spatial_shapes) != L:
        raise ValueError(f"spatial_shapes has {len(spatial_shapes)} levels, locations have {L}")
    sizes = [h * w for h, w in spatial_shapes]
    if sum(sizes) != value.shape[1]:
        raise ValueError(f"value has {value.shape[1]} tokens, spatial_shapes sum to {sum(sizes)}")
    value_levels = value.split(sizes, dim=1)
    grids = 2 * sampling_locations - 1
    samples = []
    for level, (h, w) in enumerate(spatial_shapes):
        # (N, h*w, M, D) -> (N*M, D, h, w)
        v = value_levels[level].flatten(2).transpose(1, 2).reshape(N * M, D, h, w)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        samples.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (N*M, D, Lq, P)
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1)  # (N*M, D, Lq)
    return out.view(N, M * D, Lq).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with the official parameterisation and initialisation.

    Args:
        dim: model width (``value_proj``/``output_proj`` are dim x dim).
        num_levels: number of feature levels L.
        num_heads: attention heads M (dim must be divisible by it).
        num_points: sampling points per head and level P.
    """

    def __init__(
        self, dim: int = 256, num_levels: int = 3, num_heads: int = 8, num_points: int = 4
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.dim = dim
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: offsets start on a ring (head h points at angle 2*pi*h/M, point p at
        distance p+1), uniform attention weights, xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads
        )
        ring = torch.stack([angles.cos(), angles.sin()], -1)
        ring = ring / ring.abs().max(-1, keepdim=True)[0]
        ring = ring.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        ring = ring * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value_input: Tensor,
        spatial_shapes: list[tuple[int, int]],
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from each query to P points per head and level around its reference point.

        Shape:
            query: (N, Lq, C); reference_points: (N, Lq, L, 2) normalised (x, y);
            value_input: (N, S, C); padding_mask: (N, S) bool, True = padding (optional).
            returns (N, Lq, C).
        """
        N, Lq, _ = query.shape
        S = value_input.shape[1]
        M, L, P = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(N, S, M, self.dim // M)
        offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)
        weights = self.attention_weights(query).view(N, Lq, M, L * P).softmax(-1)
        weights = weights.view(N, Lq, M, L, P)
        # offsets are in pixels of each level: divide by (w, h)
        normalizer = torch.tensor(
            [[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device
        )
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / normalizer[None, None, None, :, None, :]
        )
        out = ms_deform_attn_core(value, spatial_shapes, locations, weights)
        return self.output_proj(out)
