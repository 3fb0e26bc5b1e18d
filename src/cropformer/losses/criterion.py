"""Set criterion of CropFormer (paper eq. 7) for the image-level and the batch-level pass.

For every decoder prediction (the final one and, with deep supervision, each earlier one) the
queries are matched to the targets (``HungarianMatcher``) and three raw terms are computed:

- ``loss_ce``: cross-entropy over the C classes + no-object for all queries, no-object weighted
  0.1 (entity tasks: C = 1, {entity, no-object}; class-aware tasks: the targets' ``labels``);
- ``loss_mask``: sigmoid BCE on importance-sampled points, summed over matched masks / num_masks;
- ``loss_dice``: dice on the same points, summed over matched masks / num_masks.

Image-level pass: each of the N = B*T views is an image of its own whose targets are the entities
valid in that view. Batch-level pass: one image = all T views, targets = all K entities with a
mask per view (all-zero where the entity is not valid), matched jointly over views; the matched
pairs are expanded to one mask row per view, so the mask terms sum over views while ``num_masks``
counts entities (official behaviour, reference doc §4.3): an entity absent from a crop is trained
towards an empty mask there.

Predictions may come with full-resolution ``pred_masks`` or factored (``mask_embed`` per
prediction, ``mask_features`` per pass, ``schema.PassOutputs``): the factored logits are evaluated
only at the matcher's points and for the matched queries (``losses.mask_logits``), the same
values up to float rounding.

Keys follow the official code: ``loss_{ce,mask,dice}`` for the final prediction, ``_<i>`` for the
i-th earlier prediction (``_0`` = from the raw queries), then ``_2d``/``_3d`` for the pass. Without
a batch-level pass (Mask2Former mode) the keys carry no pass suffix, as the official MaskFormer
meta-architecture logs them, and get ``single_pass_weight`` (official 1.0) in ``total``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from cropformer.losses.mask_logits import FactoredMasks
from cropformer.losses.matcher import HungarianMatcher
from cropformer.losses.point_sampling import (
    PointSource,
    point_sample,
    sample_masks_at_points,
    uncertain_point_coords,
)
from cropformer.schema import EntityTarget, Outputs, PassOutputs

__all__ = ["CropFormerCriterion", "average_num_masks", "dice_loss", "sigmoid_bce_loss"]

_KEY = re.compile(r"^loss_(ce|mask|dice)(?:_(\d+))?(?:_(2d|3d))?$")

Indices = list[tuple[Tensor, Tensor]]


def average_num_masks(count: float, device: torch.device) -> float:
    """Mean number of target masks per rank (all-reduced when distributed), at least 1.

    The official normaliser: every rank divides its mask losses by the same number, so the
    gradient does not depend on how the masks happen to be spread over the ranks.
    """
    num = torch.as_tensor([float(count)], dtype=torch.float32, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num)
        num = num / dist.get_world_size()
    return float(torch.clamp(num, min=1.0).item())


def sigmoid_bce_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Sum over rows of the mean sigmoid BCE over points, divided by ``num_masks``.

    Shape:
        logits, targets: (R, P); returns a scalar.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Sum over rows of the dice loss (+1 smoothing), divided by ``num_masks``.

    Shape:
        logits, targets: (R, P); returns a scalar.
    """
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def _source_index(indices: Indices, device: torch.device) -> tuple[Tensor, Tensor]:
    """(batch index, query index) of every matched pair, batch order then ascending query."""
    batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
    query_idx = torch.cat([src for src, _ in indices])
    return batch_idx.to(device), query_idx.to(device)


class CropFormerCriterion(nn.Module):
    """Matching + CE/BCE/dice losses of both passes, with deep supervision.

    Args:
        matcher: the Hungarian matcher (used by both passes; the view axis selects the mode).
        class_weight: weight of ``loss_ce`` (official 2.0).
        mask_weight: weight of ``loss_mask`` (official 5.0).
        dice_weight: weight of ``loss_dice`` (official 5.0).
        no_object_weight: CE weight of the no-object class (official 0.1).
        num_points: P, points per mask row in the mask losses (official 12544).
        oversample_ratio: candidates per point for importance sampling (official 3.0).
        importance_sample_ratio: fraction of points taken from the most uncertain candidates
            (official 0.75).
        sorted_uncertain_points: select the uncertain candidates with a sorted top-k (official).
            False uses an unsorted top-k: the same points in another order (losses equal up to
            float summation order), ~2.5x faster selection on CPU.
        image_level_weight: factor on all image-level (``_2d``) terms (official 0.5).
        batch_level_weight: factor on all batch-level (``_3d``) terms (official 1.0).
        single_pass_weight: factor on the unsuffixed terms of Mask2Former mode (official 1.0).
        deep_supervision: also supervise the earlier decoder predictions (official True).
        num_predictions: supervised predictions per pass (official DEC_LAYERS, 10); only used to
            list ``weight_dict`` (which also grows to the most predictions seen in a call);
            ``total`` accepts any number of layers.
        num_classes: C, classes of the class head (1 = entity; the head has C + 1 logits, the last
            one no-object). Targets without ``labels`` are class 0.

    Randomness: all uniform points come from ``point_source`` (``set_point_source``); setting
    ``mask_point_sampler`` (``(R, 1, h, w) logits -> (R, P, 2) points``) replaces the importance
    sampling of the mask losses, e.g. to feed stored point sets.
    """

    def __init__(
        self,
        *,
        matcher: HungarianMatcher,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        sorted_uncertain_points: bool = True,  # parity: official sorted top-k
        image_level_weight: float = 0.5,
        batch_level_weight: float = 1.0,
        single_pass_weight: float = 1.0,
        deep_supervision: bool = True,
        num_predictions: int = 10,
        num_classes: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(matcher, HungarianMatcher):
            raise TypeError(
                f"CropFormerCriterion: matcher must be a HungarianMatcher, got {type(matcher)!r} "
                "(in the config, give the matcher node a _target_)"
            )
        if num_points < 1:
            raise ValueError(f"CropFormerCriterion: num_points must be >= 1, got {num_points}")
        if oversample_ratio < 1:
            raise ValueError(
                f"CropFormerCriterion: oversample_ratio must be >= 1, got {oversample_ratio}"
            )
        if not 0 <= importance_sample_ratio <= 1:
            raise ValueError(
                "CropFormerCriterion: importance_sample_ratio must be in [0, 1], got "
                f"{importance_sample_ratio}"
            )
        if no_object_weight < 0:
            raise ValueError(
                f"CropFormerCriterion: no_object_weight must be >= 0, got {no_object_weight}"
            )
        self.matcher = matcher
        self.class_weight = float(class_weight)
        self.mask_weight = float(mask_weight)
        self.dice_weight = float(dice_weight)
        self.num_points = int(num_points)
        self.oversample_ratio = float(oversample_ratio)
        self.importance_sample_ratio = float(importance_sample_ratio)
        self.sorted_uncertain_points = bool(sorted_uncertain_points)
        self.pass_weights: dict[str | None, float] = {
            "2d": float(image_level_weight),
            "3d": float(batch_level_weight),
            None: float(single_pass_weight),
        }
        self.deep_supervision = bool(deep_supervision)
        self.num_predictions = int(num_predictions)
        self._most_predictions_seen = 0
        if num_classes < 1:
            raise ValueError(f"CropFormerCriterion: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        # Not persistent: checkpoints hold the model, the weights come from the config.
        # (official ``empty_weight``: 1 for every class, eos_coef for no-object)
        weights = torch.ones(self.num_classes + 1)
        weights[-1] = float(no_object_weight)
        self.register_buffer("class_weights", weights, persistent=False)
        self.point_source: PointSource = matcher.point_source
        self.mask_point_sampler: Callable[[Tensor], Tensor] | None = None
        #: Matchings of the last call: {pass suffix: [indices of final, _0, _1, ...]}.
        self.last_indices: dict[str, list[Indices]] = {}

    # ----------------------------------------------------------------------------------- weights
    def set_point_source(self, source: PointSource) -> None:
        """Uses ``source`` for every uniform draw (matcher points, mask-loss candidates/extras)."""
        self.point_source = source
        self.matcher.point_source = source

    def weight_of(self, key: str) -> float:
        """The total weight of one loss-dict entry (term weight x pass weight)."""
        match = _KEY.match(key)
        if match is None:
            raise ValueError(
                f"CropFormerCriterion: unknown loss key {key!r}; expected "
                "loss_{ce,mask,dice}[_<layer>][_2d|_3d]"
            )
        term, _, pass_name = match.groups()
        base = {"ce": self.class_weight, "mask": self.mask_weight, "dice": self.dice_weight}[term]
        return base * self.pass_weights[pass_name]

    @property
    def weight_dict(self) -> dict[str, float]:
        """Total weight of every key this criterion can produce (``num_predictions`` layers)."""
        weights = {}
        for suffix in ("_2d", "_3d", ""):
            for i in range(max(self.num_predictions, self._most_predictions_seen)):
                layer = "" if i == 0 else f"_{i - 1}"
                for term in ("ce", "mask", "dice"):
                    key = f"loss_{term}{layer}{suffix}"
                    weights[key] = self.weight_of(key)
        return weights

    def total(self, loss_dict: Mapping[str, Tensor]) -> Tensor:
        """Weighted sum of the raw terms (incl. 0.5 image-level / 1.0 batch-level)."""
        if not loss_dict:
            raise ValueError("CropFormerCriterion.total: empty loss dict")
        terms = [self.weight_of(key) * value for key, value in loss_dict.items()]
        return torch.stack(terms).sum()

    # ----------------------------------------------------------------------------------- forward
    def forward(self, outputs: Outputs, targets: Sequence[EntityTarget]) -> dict[str, Tensor]:
        """Raw (unweighted) loss terms of all supervised predictions of both passes.

        Shape:
            outputs: image_level pred_logits (N, Q, 2), pred_masks (N, Q, h, w); optional
            batch_level pred_logits (B, Q, 2), pred_masks (B, Q, T, h, w); N = B * T.
            targets: B dicts with masks (K, T, H, W) bool and valid (K, T) bool.

        Args:
            outputs: ``schema.Outputs``; ``batch_level`` optional (Mask2Former mode without it).
            targets: B ``schema.EntityTarget`` (T is read from N // B).

        Returns:
            ``{loss_ce[_i]_2d: ..., loss_mask..., loss_dice..., ..._3d}`` (scalars, fp32).
        """
        if "image_level" not in outputs:
            raise ValueError("CropFormerCriterion: outputs has no 'image_level' entry")
        image_level = outputs["image_level"]
        num_images = len(targets)
        num_view_images = image_level["pred_logits"].shape[0]
        if num_images == 0 or num_view_images % num_images:
            raise ValueError(
                f"CropFormerCriterion: {num_view_images} view predictions for {num_images} "
                "targets; expected N = B * T views (image-major)"
            )
        num_views = num_view_images // num_images
        for b, target in enumerate(targets):
            self._check_target(b, target, num_views)

        num_logits = int(image_level["pred_logits"].shape[-1])
        if num_logits != self.num_classes + 1:
            raise ValueError(
                f"CropFormerCriterion: the class head gives {num_logits} logits but the criterion "
                f"has num_classes={self.num_classes} (+1 no-object); set model.criterion."
                "num_classes to the decoder's num_classes"
            )
        labels = [self._labels_of(b, target) for b, target in enumerate(targets)]
        # Image-level targets: view t of image b holds the entities valid in that view.
        view_targets = [
            target["masks"][target["valid"][:, t], t]
            for target in targets
            for t in range(num_views)
        ]
        view_labels = [
            lab[target["valid"][:, t].to(lab.device)]
            for target, lab in zip(targets, labels)
            for t in range(num_views)
        ]
        batch_level = outputs.get("batch_level")
        self.last_indices = {}
        losses = self._pass_losses(
            image_level, view_targets, "" if batch_level is None else "_2d", view_labels
        )
        if batch_level is not None:
            shape = tuple(self._masks_of(batch_level, batch_level, None).shape)
            if len(shape) != 5 or shape[0] != num_images or shape[2] != num_views:
                raise ValueError(
                    f"CropFormerCriterion: batch_level pred_masks has shape {shape}, expected "
                    f"(B={num_images}, Q, T={num_views}, h, w)"
                )
            # Batch-level targets: all K entities in all views, empty where not valid.
            entity_targets = [self._masks_where_valid(target) for target in targets]
            losses.update(self._pass_losses(batch_level, entity_targets, "_3d", labels))
        return losses

    def _labels_of(self, b: int, target: EntityTarget) -> Tensor:
        """The (K,) class index of every target of image b (0 without ``labels``)."""
        k = int(target["masks"].shape[0])
        device = target["masks"].device
        labels = target.get("labels")
        if labels is None:
            return torch.zeros(k, dtype=torch.int64, device=device)
        labels = labels.to(device=device, dtype=torch.int64)
        if tuple(labels.shape) != (k,):
            raise ValueError(
                f"CropFormerCriterion: targets[{b}]['labels'] has shape {tuple(labels.shape)}, "
                f"expected ({k},)"
            )
        if k and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"CropFormerCriterion: targets[{b}]['labels'] has classes outside "
                f"0..{self.num_classes - 1} (min {int(labels.min())}, max {int(labels.max())})"
            )
        return labels

    @staticmethod
    def _check_target(b: int, target: EntityTarget, num_views: int) -> None:
        for key in ("masks", "valid"):
            if key not in target:
                raise ValueError(f"CropFormerCriterion: targets[{b}] has no {key!r} entry")
        masks, valid = target["masks"], target["valid"]
        if masks.dtype != torch.bool:
            raise ValueError(
                f"CropFormerCriterion: targets[{b}]['masks'] has dtype {masks.dtype}, expected "
                "torch.bool (binary entity masks, see schema.EntityTarget)"
            )
        if masks.dim() != 4 or masks.shape[1] != num_views:
            raise ValueError(
                f"CropFormerCriterion: targets[{b}]['masks'] has shape {tuple(masks.shape)}, "
                f"expected (K, T={num_views}, H, W)"
            )
        if tuple(valid.shape) != tuple(masks.shape[:2]) or valid.dtype != torch.bool:
            raise ValueError(
                f"CropFormerCriterion: targets[{b}]['valid'] has shape {tuple(valid.shape)} and "
                f"dtype {valid.dtype}, expected bool {tuple(masks.shape[:2])}"
            )

    @staticmethod
    def _masks_where_valid(target: EntityTarget) -> Tensor:
        masks, valid = target["masks"], target["valid"]
        if bool(valid.all()):
            return masks
        return masks & valid[:, :, None, None].to(masks.device)

    @staticmethod
    def _masks_of(
        prediction: Mapping[str, object],
        outputs: PassOutputs,
        features: Sequence[Tensor] | None,
    ) -> Tensor | FactoredMasks:
        """The mask logits of one prediction: ``pred_masks``, or factored from ``mask_embed`` and
        the pass's ``mask_features`` (``features``: their per-image unbinding, shared)."""
        masks = prediction.get("pred_masks")
        if isinstance(masks, Tensor):
            return masks
        embed = prediction.get("mask_embed")
        mask_features = outputs.get("mask_features")
        if not isinstance(embed, Tensor) or not isinstance(mask_features, Tensor):
            raise ValueError(
                "CropFormerCriterion: a prediction has neither 'pred_masks' nor 'mask_embed' "
                "(with the pass's 'mask_features'); see schema.PassOutputs"
            )
        return FactoredMasks(embed, mask_features if features is None else features)

    def _pass_losses(
        self,
        outputs: PassOutputs,
        target_masks: list[Tensor],
        suffix: str,
        target_labels: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        device = outputs["pred_logits"].device
        num_masks = average_num_masks(sum(int(m.shape[0]) for m in target_masks), device)
        final = {key: value for key, value in outputs.items() if key != "aux_outputs"}
        predictions: list[Mapping[str, object]] = [final]
        if self.deep_supervision:
            predictions += list(outputs.get("aux_outputs", []))
        # Factored predictions share one per-image split of the pass's mask features, so the
        # backward pass stacks their gradient once (not once per prediction and image).
        mask_features = outputs.get("mask_features")
        features = None if mask_features is None else mask_features.unbind(0)
        self._most_predictions_seen = max(self._most_predictions_seen, len(predictions))
        losses: dict[str, Tensor] = {}
        all_indices = []
        # Official order (it fixes the order of the random draws): final first, then aux 0, 1, ..
        for i, prediction in enumerate(predictions):
            layer = "" if i == 0 else f"_{i - 1}"
            pred_logits = prediction["pred_logits"]
            assert isinstance(pred_logits, Tensor)
            masks = self._masks_of(prediction, outputs, features)
            indices = self.matcher(pred_logits, masks, target_masks, target_labels=target_labels)
            all_indices.append(indices)
            losses[f"loss_ce{layer}{suffix}"] = self.loss_labels(
                pred_logits, indices, target_labels
            )
            loss_mask, loss_dice = self.loss_masks(masks, target_masks, indices, num_masks)
            losses[f"loss_mask{layer}{suffix}"] = loss_mask
            losses[f"loss_dice{layer}{suffix}"] = loss_dice
        self.last_indices[suffix.lstrip("_")] = all_indices
        return losses

    def loss_labels(
        self, pred_logits: Tensor, indices: Indices, target_labels: Sequence[Tensor] | None = None
    ) -> Tensor:
        """Weighted CE over the C classes + no-object of all B*Q query slots.

        Shape:
            pred_logits: (B, Q, C+1); target_labels: B tensors (K_b,) (None: all class 0);
            returns a scalar.
        """
        with torch.autocast(device_type=pred_logits.device.type, enabled=False):
            logits = pred_logits.float()
            no_object = logits.shape[-1] - 1
            classes = torch.full(
                logits.shape[:2], no_object, dtype=torch.int64, device=logits.device
            )
            batch_idx, query_idx = _source_index(indices, logits.device)
            if target_labels is None:
                classes[batch_idx, query_idx] = 0  # matched queries are entities
            else:
                matched = [
                    lab.to(logits.device)[tgt] for lab, (_, tgt) in zip(target_labels, indices)
                ]
                if matched:
                    classes[batch_idx, query_idx] = torch.cat(matched)
            weight = self.class_weights
            assert isinstance(weight, Tensor)
            weight = weight.to(logits.device)
            return F.cross_entropy(logits.transpose(1, 2), classes, weight=weight)

    def sample_mask_points(self, logits: Tensor) -> Tensor:
        """Points of the mask losses: importance sampling, or ``mask_point_sampler`` if set.

        Shape:
            logits: (R, 1, h, w) detached mask logits; returns (R, P, 2).
        """
        if self.mask_point_sampler is not None:
            return self.mask_point_sampler(logits)
        return uncertain_point_coords(
            logits,
            num_points=self.num_points,
            oversample_ratio=self.oversample_ratio,
            importance_sample_ratio=self.importance_sample_ratio,
            sorted_topk=self.sorted_uncertain_points,
            point_source=self.point_source,
        )

    def loss_masks(
        self,
        pred_masks: Tensor | FactoredMasks,
        target_masks: Sequence[Tensor],
        indices: Indices,
        num_masks: float,
    ) -> tuple[Tensor, Tensor]:
        """BCE and dice of the matched masks on importance-sampled points.

        Shape:
            pred_masks: (B, Q, h, w), or (B, Q, T, h, w) (one row per matched pair and view,
                entity-major), or the same logits factored (only the matched rows are built);
            target_masks: B tensors (K_b, [T,] H, W); returns two scalars.
        """
        batch_idx, query_idx = _source_index(indices, pred_masks.device)
        # the matched rows in the dtype the mask head gives them (bf16 under autocast, as the
        # decoder's einsum would); the points and losses below are fp32
        if isinstance(pred_masks, FactoredMasks):
            matched = pred_masks.rows(batch_idx, query_idx)
        else:
            matched = pred_masks[batch_idx, query_idx]
        with torch.autocast(device_type=pred_masks.device.type, enabled=False):
            h, w = matched.shape[-2:]
            src = matched.float().reshape(-1, 1, h, w)  # (R, 1, h, w)
            with torch.no_grad():
                coords = self.sample_mask_points(src.detach())
                labels = []
                row = 0
                for b, (_, tgt_idx) in enumerate(indices):
                    if len(tgt_idx) == 0:
                        continue
                    # (K, [T,] H, W) -> (K*T, 1, H, W) view; rows of entity-major (pair, view)
                    masks_b = target_masks[b]
                    per_entity = int(masks_b[0].numel() // (masks_b.shape[-2] * masks_b.shape[-1]))
                    planes = masks_b.reshape(-1, 1, *masks_b.shape[-2:])
                    select = (
                        tgt_idx.to(masks_b.device)[:, None] * per_entity
                        + torch.arange(per_entity, device=masks_b.device)
                    ).flatten()
                    rows = int(select.numel())
                    labels.append(
                        sample_masks_at_points(planes, coords[row : row + rows], rows=select)
                    )
                    row += rows
                point_labels = (
                    torch.cat(labels)[:, 0].to(src.device)
                    if labels
                    else src.new_zeros((0, coords.shape[1]))
                )
            point_logits = point_sample(src, coords)[:, 0]  # (R, P)
            return (
                sigmoid_bce_loss(point_logits, point_labels, num_masks),
                dice_loss(point_logits, point_labels, num_masks),
            )
