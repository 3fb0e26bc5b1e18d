"""Peer parity with transformers' Mask2Former matcher and loss (marker ``parity``, ``ref`` extra).

transformers draws its random points with ``torch.rand`` on the global RNG; our criterion does the
same with the default ``UniformPointSource()``, in the same order (matcher points per image, then
mask-loss candidates and extras, prediction by prediction). Re-seeding the global RNG before each
call therefore pins identical points in both implementations.
"""

from __future__ import annotations

import pytest
import torch

from cropformer.losses.criterion import CropFormerCriterion
from cropformer.losses.matcher import (
    HungarianMatcher,
    pairwise_dice_cost,
    pairwise_sigmoid_bce_cost,
)

hf = pytest.importorskip("transformers.models.mask2former.modeling_mask2former")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.parity

POINTS = 96
SIZE = (24, 40)  # target masks H, W
FEAT = (6, 10)  # predicted masks h, w


def _inputs(counts: list[int], layers: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    batch, queries = len(counts), 9
    preds = [
        (
            3 * torch.randn(batch, queries, *FEAT, generator=gen),
            torch.randn(batch, queries, 2, generator=gen),
        )
        for _ in range(layers)
    ]
    targets = []
    for k in counts:
        coarse = torch.rand(k, SIZE[0] // 4, SIZE[1] // 4, generator=gen) > 0.5
        targets.append(coarse.repeat_interleave(4, 1).repeat_interleave(4, 2))
    return preds, targets


def test_pairwise_costs_equal_transformers() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(7, 50, generator=gen)
    targets = torch.rand(4, 50, generator=gen)
    torch.testing.assert_close(
        pairwise_sigmoid_bce_cost(logits, targets),
        hf.pair_wise_sigmoid_cross_entropy_loss(logits, targets),
        atol=1e-5,
        rtol=0,
    )
    torch.testing.assert_close(
        pairwise_dice_cost(logits, targets),
        hf.pair_wise_dice_loss(logits, targets),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("counts", [[3, 5, 1], [0, 4], [6]])
@pytest.mark.parametrize("seed", [0, 1])
def test_matched_indices_equal_transformers(counts: list[int], seed: int) -> None:
    preds, targets = _inputs(counts, 1, seed)
    masks, logits = preds[0]
    peer = hf.Mask2FormerHungarianMatcher(
        cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=POINTS
    )
    torch.manual_seed(100 + seed)
    ref = peer(
        masks,
        logits,
        [t.float() for t in targets],
        [torch.zeros(len(t), dtype=torch.int64) for t in targets],
    )
    ours_matcher = HungarianMatcher(num_points=POINTS)  # default source: global torch.rand
    torch.manual_seed(100 + seed)
    ours = ours_matcher(logits, masks, targets)
    for (q, t), (q_ref, t_ref) in zip(ours, ref, strict=True):
        assert torch.equal(q, q_ref)
        assert torch.equal(t, t_ref)


@pytest.mark.parametrize("counts", [[3, 5], [2, 0, 4]])
def test_single_view_losses_equal_transformers(counts: list[int]) -> None:
    layers = 3
    preds, targets = _inputs(counts, layers, seed=7)
    config = transformers.Mask2FormerConfig(
        num_labels=1,
        no_object_weight=0.1,
        class_weight=2.0,
        mask_weight=5.0,
        dice_weight=5.0,
        train_num_points=POINTS,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )
    peer = hf.Mask2FormerLoss(config, weight_dict={})
    aux = [{"masks_queries_logits": m, "class_queries_logits": c} for m, c in preds[:-1]]
    torch.manual_seed(3)
    ref = peer(
        preds[-1][0],
        preds[-1][1],
        [t.float() for t in targets],
        [torch.zeros(len(t), dtype=torch.int64) for t in targets],
        auxiliary_predictions=aux,
    )

    criterion = CropFormerCriterion(matcher=HungarianMatcher(num_points=POINTS), num_points=POINTS)
    outputs = {
        "image_level": {
            "pred_masks": preds[-1][0],
            "pred_logits": preds[-1][1],
            "aux_outputs": [{"pred_masks": m, "pred_logits": c} for m, c in preds[:-1]],
        }
    }
    entity_targets = [
        {"masks": t[:, None], "valid": torch.ones(len(t), 1, dtype=torch.bool)} for t in targets
    ]
    torch.manual_seed(3)
    ours = criterion(outputs, entity_targets)  # Mask2Former mode: unsuffixed keys

    assert len(ours) == len(ref) == 3 * layers
    for key, value in ref.items():
        our_key = key.replace("loss_cross_entropy", "loss_ce")
        torch.testing.assert_close(ours[our_key], value.float(), atol=1e-5, rtol=0, msg=key)


def _class_inputs(counts: list[int], layers: int, num_classes: int, seed: int):
    """The inputs above with C + 1 class logits and a class label per target."""
    preds, targets = _inputs(counts, layers, seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    preds = [(m, 2 * torch.randn(*c.shape[:2], num_classes + 1, generator=gen)) for m, c in preds]
    labels = [torch.randint(0, num_classes, (len(t),), generator=gen) for t in targets]
    return preds, targets, labels


@pytest.mark.parametrize("counts", [[3, 5, 1], [0, 4]])
def test_class_aware_matching_equals_transformers(counts: list[int]) -> None:
    # class cost -p(target class) over C + 1 logits (Mask2Former COCO panoptic: C = 133)
    preds, targets, labels = _class_inputs(counts, 1, num_classes=133, seed=2)
    masks, logits = preds[0]
    peer = hf.Mask2FormerHungarianMatcher(
        cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=POINTS
    )
    torch.manual_seed(5)
    ref = peer(masks, logits, [t.float() for t in targets], labels)
    torch.manual_seed(5)
    ours = HungarianMatcher(num_points=POINTS)(logits, masks, targets, target_labels=labels)
    for (q, t), (q_ref, t_ref) in zip(ours, ref, strict=True):
        assert torch.equal(q, q_ref) and torch.equal(t, t_ref)


@pytest.mark.parametrize("num_classes", [5, 133])
def test_class_aware_losses_equal_transformers(num_classes: int) -> None:
    layers = 3
    preds, targets, labels = _class_inputs([3, 5, 2], layers, num_classes, seed=4)
    config = transformers.Mask2FormerConfig(
        num_labels=num_classes,
        no_object_weight=0.1,
        class_weight=2.0,
        mask_weight=5.0,
        dice_weight=5.0,
        train_num_points=POINTS,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )
    peer = hf.Mask2FormerLoss(config, weight_dict={})
    aux = [{"masks_queries_logits": m, "class_queries_logits": c} for m, c in preds[:-1]]
    torch.manual_seed(3)
    ref = peer(
        preds[-1][0], preds[-1][1], [t.float() for t in targets], labels, auxiliary_predictions=aux
    )
    criterion = CropFormerCriterion(
        matcher=HungarianMatcher(num_points=POINTS), num_points=POINTS, num_classes=num_classes
    )
    outputs = {
        "image_level": {
            "pred_masks": preds[-1][0],
            "pred_logits": preds[-1][1],
            "aux_outputs": [{"pred_masks": m, "pred_logits": c} for m, c in preds[:-1]],
        }
    }
    class_targets = [
        {"masks": t[:, None], "valid": torch.ones(len(t), 1, dtype=torch.bool), "labels": lab}
        for t, lab in zip(targets, labels)
    ]
    torch.manual_seed(3)
    ours = criterion(outputs, class_targets)
    assert len(ours) == len(ref) == 3 * layers
    for key, value in ref.items():
        our_key = key.replace("loss_cross_entropy", "loss_ce")
        torch.testing.assert_close(ours[our_key], value.float(), atol=1e-5, rtol=0, msg=key)
