"""Hungarian matching of queries to entities, for one view or jointly across the views of an image.

One matcher serves both passes (the official code has two near-identical copies): with masks of
shape (Q, h, w) it matches per view (image-level pass); with a view axis (Q, T, h, w) the same
random points are sampled in every view and the costs are computed on the T*P values flattened
over views, so one query is matched to one entity jointly in the full image and its crops
(batch-level pass).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from cropformer.losses.mask_logits import FactoredMasks
from cropformer.losses.point_sampling import (
    PointSource,
    UniformPointSource,
    point_sample,
    sample_masks_at_points,
)

__all__ = ["HungarianMatcher", "pairwise_dice_cost", "pairwise_sigmoid_bce_cost"]


def pairwise_sigmoid_bce_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE between every prediction and every target.

    Shape:
        logits: (Q, P) point logits; targets: (K, P) point values in [0, 1]; returns (Q, K).
    """
    num_points = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    cost = torch.einsum("qp,kp->qk", pos, targets) + torch.einsum("qp,kp->qk", neg, 1 - targets)
    return cost / num_points


def pairwise_dice_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss (with +1 smoothing) between every prediction and every target.

    Shape:
        logits: (Q, P) point logits; targets: (K, P) point values in [0, 1]; returns (Q, K).
    """
    probs = logits.sigmoid()
    numerator = 2 * torch.einsum("qp,kp->qk", probs, targets)
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """Minimum-cost one-to-one assignment of queries to ground-truth entities, per image.

    cost = cost_class * (-p(target class)) + cost_mask * BCE + cost_dice * dice (entity tasks:
    the target class is 0, "entity"), with BCE and dice on
    ``num_points`` uniform points shared by all queries and targets of an image (and reused in
    every view when the masks have a view axis). Costs are computed in fp32 (autocast off) and
    sanitised (NaN and +-inf become large finite values) before scipy sees them.

    Args:
        cost_class: weight of the entity-probability cost (official 2.0).
        cost_mask: weight of the sigmoid BCE cost (official 5.0).
        cost_dice: weight of the dice cost (official 5.0).
        num_points: P, points per image (official 12544).
        max_cost: magnitude that replaces non-finite costs.
    """

    def __init__(
        self,
        *,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
        max_cost: float = 1e8,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: cost_class, cost_mask and cost_dice are all 0")
        if num_points < 1:
            raise ValueError(f"HungarianMatcher: num_points must be >= 1, got {num_points}")
        self.cost_class = float(cost_class)
        self.cost_mask = float(cost_mask)
        self.cost_dice = float(cost_dice)
        self.num_points = int(num_points)
        self.max_cost = float(max_cost)
        self.point_source: PointSource = UniformPointSource()

    @torch.no_grad()
    def cost_matrix(
        self,
        pred_logits: Tensor,
        pred_masks: Tensor,
        target_masks: Tensor,
        point_coords: Tensor,
        target_labels: Tensor | None = None,
    ) -> Tensor:
        """Sanitised fp32 cost matrix of one image.

        Shape:
            pred_logits: (Q, 2); pred_masks: (Q, h, w) or (Q, T, h, w);
            target_masks: (K, H, W) or (K, T, H, W) (bool or float); point_coords: (1, P, 2);
            returns (Q, K).
        """
        with torch.autocast(device_type=pred_masks.device.type, enabled=False):
            preds = pred_masks.float()
            if preds.dim() == 3:
                preds = preds.unsqueeze(1)
            coords = point_coords.float()
            pred_points = point_sample(preds, coords.expand(preds.shape[0], -1, -1))
        return self.cost_from_points(
            pred_logits, pred_points, target_masks, point_coords, target_labels
        )

    @torch.no_grad()
    def cost_from_points(
        self,
        pred_logits: Tensor,
        pred_points: Tensor,
        target_masks: Tensor,
        point_coords: Tensor,
        target_labels: Tensor | None = None,
    ) -> Tensor:
        """Sanitised fp32 cost matrix of one image from the predictions' point logits.

        Shape:
            pred_logits: (Q, 2); pred_points: (Q, P) or (Q, T, P) mask logits at
            ``point_coords`` (in every view); target_masks: (K, H, W) or (K, T, H, W);
            point_coords: (1, P, 2); returns (Q, K).
        """
        with torch.autocast(device_type=pred_points.device.type, enabled=False):
            if target_masks.dim() == 3:  # no view axis
                target_masks = target_masks.unsqueeze(1)
            coords = point_coords.float()
            # (Q, T, P) -> (Q, T*P): view-major flattening, as the official view matcher.
            pred_points = pred_points.float().flatten(1)
            tgt_points = sample_masks_at_points(target_masks, coords).flatten(1)
            probs = pred_logits.float().softmax(-1)
            if target_labels is None:  # class-agnostic: index 0 = entity
                class_prob = probs[:, :1]
            else:  # official: -p(target class) per (query, target)
                class_prob = probs[:, target_labels.to(probs.device)]
            cost = (
                self.cost_mask * pairwise_sigmoid_bce_cost(pred_points, tgt_points)
                + self.cost_class * (-class_prob)
                + self.cost_dice * pairwise_dice_cost(pred_points, tgt_points)
            )
        # parity: the official matcher hands non-finite costs to scipy, which raises; here they
        # become the largest cost (matched only if nothing else can be). Finite costs unchanged.
        big = self.max_cost
        cost = torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)
        return cost.clamp(-big, big)

    @torch.no_grad()
    def forward(
        self,
        pred_logits: Tensor,
        pred_masks: Tensor | FactoredMasks,
        target_masks: Sequence[Tensor],
        point_coords: Tensor | None = None,
        target_labels: Sequence[Tensor] | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """Matches each image's queries to its targets.

        Shape:
            pred_logits: (B, Q, 2) class logits (index 0 = entity);
            pred_masks: (B, Q, h, w), or (B, Q, T, h, w) to match jointly over T views, or the
                same logits as ``FactoredMasks`` (evaluated at the points only);
            target_masks: B tensors (K_b, H, W), or (K_b, T, H, W) with a view axis (bool);
            point_coords: (B, P, 2).
            target_labels: B tensors (K_b,) of class indices (None: every target is class 0).

        Args:
            point_coords: optional points to use instead of drawing (P may differ from
                ``num_points``); otherwise one (1, P, 2) draw per image from ``point_source``
                (also for images without targets, as the official code does).

        Returns:
            B pairs ``(query_idx, target_idx)`` of int64 CPU tensors, query indices ascending;
            empty for an image without targets.
        """
        batch = pred_logits.shape[0]
        if pred_masks.shape[0] != batch or len(target_masks) != batch:
            raise ValueError(
                f"HungarianMatcher: batch sizes differ: pred_logits {batch}, pred_masks "
                f"{pred_masks.shape[0]}, targets {len(target_masks)}"
            )
        mask_shape = tuple(pred_masks.shape)
        view_dims = len(mask_shape) - 4  # 0 (image-level) or 1 (batch-level)
        if view_dims not in (0, 1):
            raise ValueError(
                f"HungarianMatcher: pred_masks must be (B, Q, h, w) or (B, Q, T, h, w), got "
                f"{mask_shape}"
            )
        if point_coords is not None and point_coords.shape[0] != batch:
            raise ValueError(
                f"HungarianMatcher: point_coords has {point_coords.shape[0]} images, "
                f"expected {batch}"
            )
        costs: list[Tensor | None] = []
        for b in range(batch):
            target = target_masks[b]
            if target.dim() != 3 + view_dims or (view_dims and target.shape[1] != mask_shape[2]):
                raise ValueError(
                    f"HungarianMatcher: target masks of image {b} have shape "
                    f"{tuple(target.shape)}, incompatible with pred_masks {mask_shape}"
                )
            if point_coords is None:
                coords = self.point_source(
                    (1, self.num_points, 2), pred_masks.device, "matcher_points"
                )
            else:
                coords = point_coords[b : b + 1]
            if target.shape[0] == 0:
                costs.append(None)
                continue
            labels = None if target_labels is None else target_labels[b]
            if isinstance(pred_masks, FactoredMasks):
                # embed . sampled features == the full logits sampled (linearity), Q*C*P MACs
                points = pred_masks.point_logits(b, coords.to(pred_masks.device))
                costs.append(self.cost_from_points(pred_logits[b], points, target, coords, labels))
            else:
                costs.append(
                    self.cost_matrix(pred_logits[b], pred_masks[b], target, coords, labels)
                )
        # One device-to-host copy for the whole batch instead of one synchronisation per image.
        present = [c for c in costs if c is not None]
        host = torch.cat([c.flatten() for c in present]).cpu() if present else None
        indices = []
        offset = 0
        for cost in costs:
            if cost is None or host is None:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            size = cost.numel()
            matrix = host[offset : offset + size].view(cost.shape).numpy()
            offset += size
            rows, cols = linear_sum_assignment(matrix)
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices
