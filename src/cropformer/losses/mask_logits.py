"""Mask logits of a training prediction kept as their two factors (never built for every query).

The decoder's mask logits are ``logits[b, q(, t)] = mask_embed[b, q] . mask_features[b(, t)]``
(a C-channel dot product at every pixel). The losses read them only at sampled points (the
matcher's points, the importance-sampling candidates and the loss points) and only for the
matched queries. Bilinear sampling is linear in the map, so

    sample(embed . features, points) == embed . sample(features, points)

in exact arithmetic (in float the two orders of summation round differently, ~1e-7 relative).
``FactoredMasks`` serves the two things the losses need:

- ``point_logits``: the logits of all Q queries at the matcher's points from P sampled feature
  vectors (Q*C*P multiply-adds instead of Q*C*h*w, no gradient);
- ``rows``: the full-resolution logits of the R matched (image, query) pairs only, from which the
  importance sampling and the loss points read exactly as from the full logits; the backward pass
  of the mask head then covers R rows instead of all Q.

Shape letters: ``B`` images of the pass (views for the image-level pass), ``Q`` queries, ``C``
mask channels, ``T`` views, ``P`` points, ``R`` selected rows, ``h, w`` stride-4 size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cropformer.losses.point_sampling import point_sample

__all__ = ["FactoredMasks"]


class FactoredMasks:
    """The mask logits of one prediction as ``embed . features``.

    Args:
        embed: mask embeddings (B, Q, C) of the prediction (``mask_embed`` in the outputs).
        features: the pass's mask features, (B, C, h, w) (image-level: no view axis) or
            (B, T, C, h, w) (batch-level), as one tensor or as its B per-image tensors
            (``features.unbind(0)``: a pass shares one unbinding among its predictions, so the
            backward pass stacks the feature gradient once instead of once per prediction).

    Shape of the logits it stands for: (B, Q, h, w), or (B, Q, T, h, w) with a view axis.
    """

    def __init__(self, embed: Tensor, features: Tensor | Sequence[Tensor]) -> None:
        per_image = tuple(features.unbind(0) if isinstance(features, Tensor) else features)
        if embed.dim() != 3 or len(per_image) != embed.shape[0]:
            raise ValueError(
                f"FactoredMasks: mask_embed has shape {tuple(embed.shape)}, expected (B, Q, C) "
                f"with B = {len(per_image)} (the images of mask_features)"
            )
        first = per_image[0]
        if first.dim() not in (3, 4) or first.shape[-3] != embed.shape[2]:
            raise ValueError(
                f"FactoredMasks: mask_features per image has shape {tuple(first.shape)}, expected "
                f"(C, h, w) or (T, C, h, w) with C = {embed.shape[2]} (the mask_embed channels)"
            )
        self.embed = embed
        self.features = per_image

    @property
    def has_view_axis(self) -> bool:
        """True for the batch-level pass (logits (B, Q, T, h, w))."""
        return self.features[0].dim() == 4

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the logits: (B, Q, h, w) or (B, Q, T, h, w)."""
        first = self.features[0]
        views = (first.shape[0],) if self.has_view_axis else ()
        return (len(self.features), self.embed.shape[1], *views, *first.shape[-2:])

    @property
    def device(self) -> torch.device:
        """The device of the factors."""
        return self.embed.device

    def _views(self, b: int) -> Tensor:
        """(T, C, h, w) features of image ``b`` (T = 1 without a view axis)."""
        feats = self.features[b]
        return feats if self.has_view_axis else feats[None]

    def point_logits(self, b: int, coords: Tensor) -> Tensor:
        """Logits of every query of image ``b`` at points shared by its views.

        Equal (up to float rounding) to ``point_sample`` of the full logits at ``coords`` in
        every view. Sampled in the features' dtype; the product follows the caller's autocast.

        Shape:
            coords: (1, P, 2) in [0, 1); returns (Q, T, P) with a view axis, else (Q, P).
        """
        feats = self._views(b)
        sampled = point_sample(feats, coords.expand(feats.shape[0], -1, -1))  # (T, C, P)
        embed = self.embed[b]
        dtype = torch.promote_types(embed.dtype, sampled.dtype)
        logits = torch.einsum("qc,tcp->qtp", embed.to(dtype), sampled.to(dtype))
        return logits if self.has_view_axis else logits[:, 0]

    def rows(self, batch_idx: Tensor, query_idx: Tensor) -> Tensor:
        """Full-resolution logits of the given (image, query) pairs, in the given order.

        One product per image (its selected queries against its features), so only these rows
        enter the autograd graph.

        Shape:
            batch_idx, query_idx: (R,) int64; returns (R, T, h, w) with a view axis, else (R, h, w).
        """
        shape = self.shape
        if batch_idx.numel() == 0:
            return self.embed.new_zeros((0, *shape[2:]))
        batch_idx = batch_idx.to(self.device)
        query_idx = query_idx.to(self.device)
        parts, positions = [], []
        for b in torch.unique(batch_idx).tolist():
            pos = (batch_idx == b).nonzero()[:, 0]
            feats = self._views(b)  # (T, C, h, w)
            embed = self.embed[b].index_select(0, query_idx[pos])  # (R_b, C)
            dtype = torch.promote_types(embed.dtype, feats.dtype)
            part = torch.einsum("rc,tchw->rthw", embed.to(dtype), feats.to(dtype))
            parts.append(part if self.has_view_axis else part[:, 0])
            positions.append(pos)
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        order = torch.cat(positions)
        if not torch.equal(order, torch.arange(order.numel(), device=order.device)):
            out = out[torch.argsort(order)]  # back to the requested order
        return out
