"""Point sampling of mask logits and targets, and uncertainty-based importance sampling.

Masks are compared at random points instead of at full resolution (PointRend / Mask2Former):
predictions (stride 4) and ground truth (full padded size) are sampled at the same normalised
coordinates, so no mask is ever resized. Coordinates are ``(x, y)`` in ``[0, 1)`` relative to the
padded batch extent, sampled bilinearly with zero padding (``align_corners=False``).

Every uniform draw goes through a *point source* (``source(shape, device, kind) -> Tensor``), so
tests can pin the points (a seeded ``torch.Generator``) or replay the official draws in order
(``ReplayPointSource``). ``kind`` is one of ``POINT_KINDS``, the labels the parity bundle uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "POINT_KINDS",
    "PointSource",
    "ReplayPointSource",
    "UniformPointSource",
    "point_sample",
    "sample_masks_at_points",
    "uncertain_point_coords",
]

#: Labels of the three kinds of uniform draws, in the words of the parity bundle.
POINT_KINDS = ("matcher_points", "mask_loss_candidates", "mask_loss_random")

#: ``source(shape, device, kind)`` returns uniform ``[0, 1)`` float32 points of ``shape``.
PointSource = Callable[[tuple[int, ...], torch.device, str], Tensor]


class UniformPointSource:
    """Uniform points from ``torch.rand``, optionally from a private generator.

    Args:
        generator: draw from this generator (reproducible, independent of the global RNG); ``None``
            uses the global RNG like the official code (so ``torch.manual_seed`` replays it).
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def __call__(self, shape: tuple[int, ...], device: torch.device, kind: str) -> Tensor:
        if self.generator is None:
            return torch.rand(shape, device=device)
        # A generator lives on one device; draw there and move (a CPU generator for CUDA data).
        points = torch.rand(shape, generator=self.generator, device=self.generator.device)
        return points.to(device)


class ReplayPointSource:
    """Serves stored point tensors in order (e.g. the official draws of the parity bundle).

    Args:
        draws: the tensors, in the order they will be requested.
        kinds: optional kind label of each draw; when given, every request is checked against it.

    Raises:
        ValueError: when more points are requested than stored, or a request's shape or kind
            differs from the next stored draw (the consumer draws in a different order).
    """

    def __init__(self, draws: Sequence[Tensor], kinds: Sequence[str] | None = None) -> None:
        if kinds is not None and len(kinds) != len(draws):
            raise ValueError(f"ReplayPointSource: {len(draws)} draws but {len(kinds)} kinds")
        self.draws = list(draws)
        self.kinds = None if kinds is None else list(kinds)
        self.position = 0

    @property
    def remaining(self) -> int:
        """Number of stored draws not served yet."""
        return len(self.draws) - self.position

    def __call__(self, shape: tuple[int, ...], device: torch.device, kind: str) -> Tensor:
        i = self.position
        if i >= len(self.draws):
            raise ValueError(
                f"ReplayPointSource: request {i} ({kind}, shape {tuple(shape)}) but only "
                f"{len(self.draws)} draws are stored"
            )
        draw = self.draws[i]
        if tuple(draw.shape) != tuple(shape):
            raise ValueError(
                f"ReplayPointSource: request {i} ({kind}) has shape {tuple(shape)}, stored draw "
                f"has {tuple(draw.shape)}; the draws are consumed in a different order"
            )
        if self.kinds is not None and self.kinds[i] != kind:
            raise ValueError(
                f"ReplayPointSource: request {i} is of kind {kind!r}, stored draw is "
                f"{self.kinds[i]!r}; the draws are consumed in a different order"
            )
        self.position += 1
        return draw.to(device=device, dtype=torch.float32)


def point_sample(inputs: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples of ``inputs`` at normalised points, (x, y) in [0, 1] (zero outside).

    Shape:
        inputs: (R, C, h, w) float maps; coords: (R, P, 2); returns (R, C, P).
    """
    grid = 2.0 * coords.unsqueeze(2) - 1.0  # (R, P, 1, 2) in grid_sample's [-1, 1]
    return F.grid_sample(inputs, grid.to(inputs.dtype), align_corners=False).squeeze(3)


def sample_masks_at_points(masks: Tensor, coords: Tensor, rows: Tensor | None = None) -> Tensor:
    """Bilinear samples of ground-truth masks at points, without converting them to float.

    Gathers the 4 neighbours of every point from the (boolean) masks and blends them with the
    same weights as ``grid_sample(..., align_corners=False)`` with zero padding (equal up to
    float rounding of the coordinates, ~1 ulp of the pixel position): converting all
    full-resolution targets to float for every prediction layer would cost 4 bytes per pixel
    per mask and dominate the criterion's memory traffic.

    ``rows`` picks the masks to sample (row r of the output samples ``masks[rows[r]]``) without
    copying them out first (``masks[rows]`` would copy every selected full-resolution mask).

    Shape:
        masks: (R, C, H, W) bool (or float), or (K, C, H, W) with ``rows`` (R,) int64 in [0, K);
        coords: (R, P, 2), or (1, P, 2) shared by all rows; returns (R, C, P) float32
        (fractional near edges).
    """
    _, channels, height, width = masks.shape
    num_rows = masks.shape[0] if rows is None else int(rows.shape[0])
    num_points = coords.shape[1]
    if num_rows == 0:
        return torch.zeros((0, channels, num_points), dtype=torch.float32, device=masks.device)
    grid = 2.0 * coords.float() - 1.0
    # grid_sample's unnormalisation for align_corners=False (as its CPU kernel writes it)
    x = (grid[..., 0] + 1) * (width / 2) - 0.5  # (R or 1, P)
    y = (grid[..., 1] + 1) * (height / 2) - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    # integer arithmetic: float32 indices are inexact beyond 2^24 pixels
    x0i, y0i = x0.long(), y0.long()
    x1i, y1i = x0i + 1, y0i + 1
    # per-axis weights, zero where that neighbour lies outside the mask (zero padding)
    wx0 = (1 - fx) * ((x0i >= 0) & (x0i < width))
    wx1 = fx * ((x1i >= 0) & (x1i < width))
    wy0 = (1 - fy) * ((y0i >= 0) & (y0i < height))
    wy1 = fy * ((y1i >= 0) & (y1i < height))
    c0, c1 = x0i.clamp(0, width - 1), x1i.clamp(0, width - 1)
    r0, r1 = y0i.clamp(0, height - 1) * width, y1i.clamp(0, height - 1) * width
    # the 4 neighbours gathered at once: (R or 1, 4, P)
    index = torch.stack((r0 + c0, r0 + c1, r1 + c0, r1 + c1), 1)
    weight = torch.stack((wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1), 1)
    index = index.reshape(index.shape[0], 1, 4 * num_points)
    if rows is None:
        flat = masks.reshape(num_rows, channels, height * width)
        index = index.expand(num_rows, channels, -1)
        values = torch.gather(flat, 2, index)
    else:
        # offsets of (mask, channel) planes in the flat storage, then one take
        plane = rows.to(index.device)[:, None, None] * channels + torch.arange(
            channels, device=index.device
        ).view(1, channels, 1)
        values = masks.reshape(-1).take(plane * (height * width) + index)
    values = values.view(num_rows, channels, 4, num_points).float()
    return (values * weight[:, None]).sum(2)


def uncertain_point_coords(
    logits: Tensor,
    *,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    point_source: PointSource,
    sorted_topk: bool = True,
) -> Tensor:
    """Importance-sampled points: the most uncertain of oversampled candidates plus uniform ones.

    Draws ``int(num_points * oversample_ratio)`` uniform candidates per row, keeps the
    ``int(importance_sample_ratio * num_points)`` with the smallest ``|logit|`` (sampled from that
    row's own prediction, in descending uncertainty; any order with ``sorted_topk=False``), and
    appends the rest as fresh uniform points (two draws, kinds ``mask_loss_candidates`` then
    ``mask_loss_random``, as in the official code).

    Shape:
        logits: (R, 1, h, w) mask logits (detached: no gradient flows through the selection);
        returns (R, P, 2) points in [0, 1).

    Args:
        logits: the mask logits of each row.
        num_points: P, points per row.
        oversample_ratio: candidates per point (>= 1).
        importance_sample_ratio: fraction of P taken from the uncertain candidates (0..1).
        point_source: the uniform draws.
        sorted_topk: official sorted top-k; False: unsorted (same points, other order, faster).
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}"
        )
    rows = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    candidates = point_source((rows, num_sampled, 2), logits.device, "mask_loss_candidates")
    uncertainty = -point_sample(logits.float(), candidates).abs()[:, 0]  # (R, num_sampled)
    # parity: official sorted top-k (descending uncertainty); unsorted gives the same points in
    # another order (the losses average over points), ~2.5x faster on CPU.
    top = torch.topk(uncertainty, k=num_uncertain, dim=1, sorted=sorted_topk).indices
    coords = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        extra = point_source((rows, num_random, 2), logits.device, "mask_loss_random")
        coords = torch.cat([coords, extra], dim=1)
    return coords
