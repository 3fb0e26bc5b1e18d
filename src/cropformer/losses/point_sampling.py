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
    """Bilinear samples of ``inputs`` at normalised points (zero outside).

    Args:
        inputs: (R, C, h, w) maps (float).
        coords: (R, P, 2) points, (x, y) in [0, 1] of the map's extent.

    Returns:
        (R, C, P) samples.
    """
    grid = 2.0 * coords.unsqueeze(2) - 1.0  # (R, P, 1, 2) in grid_sample's [-1, 1]
    return F.grid_sample(inputs, grid.to(inputs.dtype), align_corners=False).squeeze(3)


def sample_masks_at_points(masks: Tensor, coords: Tensor, chunk_size: int = 16) -> Tensor:
    """Samples (boolean) ground-truth masks at points, a few rows at a time.

    Full-resolution targets are kept boolean; converting all of them to float at once would
    cost 4 bytes per pixel per mask, so rows are converted in chunks.

    Args:
        masks: (R, C, H, W) bool or float masks.
        coords: (R, P, 2) points, or (1, P, 2) shared by all rows.
        chunk_size: rows converted to float at once.

    Returns:
        (R, C, P) float32 samples (fractional near edges).
    """
    rows = masks.shape[0]
    out = []
    for start in range(0, rows, chunk_size):
        part = masks[start : start + chunk_size].float()
        part_coords = coords if coords.shape[0] != rows else coords[start : start + chunk_size]
        part_coords = part_coords.float().expand(part.shape[0], -1, -1)
        out.append(point_sample(part, part_coords))
    if not out:
        return masks.new_zeros((0, masks.shape[1], coords.shape[1]), dtype=torch.float32)
    return torch.cat(out)


def uncertain_point_coords(
    logits: Tensor,
    *,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    point_source: PointSource,
) -> Tensor:
    """Importance-sampled points: the most uncertain of oversampled candidates plus uniform ones.

    Draws ``int(num_points * oversample_ratio)`` uniform candidates per row, keeps the
    ``int(importance_sample_ratio * num_points)`` with the smallest ``|logit|`` (sampled from that
    row's own prediction, in descending uncertainty), and appends the rest as fresh uniform points
    (two draws, kinds ``mask_loss_candidates`` then ``mask_loss_random``, as in the official code).

    Args:
        logits: (R, 1, h, w) mask logits (detached; no gradient flows through the selection).
        num_points: P, points per row.
        oversample_ratio: candidates per point (>= 1).
        importance_sample_ratio: fraction of P taken from the uncertain candidates (0..1).
        point_source: the uniform draws.

    Returns:
        (R, P, 2) points in [0, 1).
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
    top = torch.topk(uncertainty, k=num_uncertain, dim=1).indices  # descending uncertainty
    coords = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        extra = point_source((rows, num_random, 2), logits.device, "mask_loss_random")
        coords = torch.cat([coords, extra], dim=1)
    return coords
