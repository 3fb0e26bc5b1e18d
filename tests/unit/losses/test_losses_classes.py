"""Class-aware criterion: CE over C + 1 with the targets' labels, official no-object weight."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cropformer.losses.criterion import CropFormerCriterion
from cropformer.losses.matcher import HungarianMatcher

C, Q = 4, 6


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(2, 3, 16, 16, dtype=torch.bool)
    masks[0, :, :8] = True
    masks[1, :, 8:, :8] = True
    outputs = {
        "image_level": {
            "pred_masks": 3 * torch.randn(3, Q, 4, 4, generator=g),  # B=1 image, T=3 views
            "pred_logits": torch.randn(3, Q, C + 1, generator=g),
            "aux_outputs": [],
        },
        "batch_level": {
            "pred_masks": 3 * torch.randn(1, Q, 3, 4, 4, generator=g),
            "pred_logits": torch.randn(1, Q, C + 1, generator=g),
            "aux_outputs": [],
        },
    }
    valid = torch.tensor([[True, True, False], [True, False, True]])
    target = {"masks": masks, "valid": valid, "labels": torch.tensor([2, 0])}
    return outputs, [target]


def test_class_ce_uses_target_labels_and_no_object_weight():
    outputs, targets = _case()
    crit = CropFormerCriterion(
        matcher=HungarianMatcher(num_points=64), num_points=64, num_classes=C
    )
    losses = crit(outputs, targets)
    weight = torch.tensor([1.0] * C + [0.1])
    # image-level: view t holds the valid entities of that view with their labels
    for key, logits, views in (("loss_ce_2d", outputs["image_level"]["pred_logits"], 3),):
        indices = crit.last_indices["2d"][0]
        classes = torch.full((views, Q), C)
        for t, (q, k) in enumerate(indices):
            labels = targets[0]["labels"][targets[0]["valid"][:, t]]
            classes[t, q] = labels[k]
        ref = F.cross_entropy(logits.transpose(1, 2), classes, weight=weight)
        torch.testing.assert_close(losses[key], ref)
    ((q, k),) = crit.last_indices["3d"][0]
    classes = torch.full((1, Q), C)
    classes[0, q] = targets[0]["labels"][k]
    ref = F.cross_entropy(
        outputs["batch_level"]["pred_logits"].transpose(1, 2), classes, weight=weight
    )
    torch.testing.assert_close(losses["loss_ce_3d"], ref)


def test_class_aware_errors_name_the_setting():
    outputs, targets = _case()
    with pytest.raises(ValueError, match="gives 5 logits but the criterion has num_classes=1"):
        CropFormerCriterion(matcher=HungarianMatcher(num_points=64))(outputs, targets)
    crit = CropFormerCriterion(matcher=HungarianMatcher(num_points=64), num_classes=C)
    bad = [{**targets[0], "labels": torch.tensor([2, 7])}]
    with pytest.raises(ValueError, match=r"classes outside 0..3"):
        crit(outputs, bad)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        CropFormerCriterion(matcher=HungarianMatcher(), num_classes=0)
