"""Hungarian matcher: batched == per image, empty targets, perfect predictions, view axis."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cropformer.losses.matcher import (
    HungarianMatcher,
    pairwise_dice_cost,
    pairwise_sigmoid_bce_cost,
)
from cropformer.losses.point_sampling import UniformPointSource


def _random(batch: int, queries: int, counts: list[int], views: int | None, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    vshape = () if views is None else (views,)
    logits = torch.randn(batch, queries, 2, generator=gen)
    masks = 3 * torch.randn(batch, queries, *vshape, 8, 12, generator=gen)
    targets = [torch.rand(k, *vshape, 32, 48, generator=gen) > 0.5 for k in counts]
    coords = torch.rand(batch, 40, 2, generator=gen)
    return logits, masks, targets, coords


def _assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (qa, ta), (qb, tb) in zip(a, b):
        assert torch.equal(qa, qb)
        assert torch.equal(ta, tb)


def test_pairwise_costs_equal_elementwise_losses() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(4, 30, generator=gen)
    targets = torch.rand(3, 30, generator=gen)
    bce = pairwise_sigmoid_bce_cost(logits, targets)
    dice = pairwise_dice_cost(logits, targets)
    assert bce.shape == dice.shape == (4, 3)
    for q in range(4):
        for k in range(3):
            ref = F.binary_cross_entropy_with_logits(logits[q], targets[k])
            torch.testing.assert_close(bce[q, k], ref, atol=1e-6, rtol=1e-6)
            p = logits[q].sigmoid()
            ref_dice = 1 - (2 * (p * targets[k]).sum() + 1) / (p.sum() + targets[k].sum() + 1)
            torch.testing.assert_close(dice[q, k], ref_dice, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("views", [None, 3])
def test_batched_matching_equals_per_image_matching(views: int | None) -> None:
    matcher = HungarianMatcher(num_points=40)
    logits, masks, targets, coords = _random(3, 7, [4, 2, 7], views)
    batched = matcher(logits, masks, targets, point_coords=coords)
    single = [
        matcher(logits[b : b + 1], masks[b : b + 1], [targets[b]], point_coords=coords[b : b + 1])[
            0
        ]
        for b in range(3)
    ]
    _assert_same(batched, single)
    for (q, t), k in zip(batched, [4, 2, 7]):
        assert q.dtype == t.dtype == torch.int64
        assert len(q) == len(t) == k
        assert torch.equal(q, q.sort().values)  # query indices ascending
        assert sorted(t.tolist()) == list(range(k))


@pytest.mark.parametrize("counts", [[0, 3], [0, 0]])
@pytest.mark.parametrize("views", [None, 2])
def test_empty_targets_give_empty_indices(counts: list[int], views: int | None) -> None:
    matcher = HungarianMatcher(num_points=40)
    logits, masks, targets, _ = _random(2, 5, counts, views)
    indices = matcher(logits, masks, targets)
    for (q, t), k in zip(indices, counts):
        assert q.dtype == t.dtype == torch.int64
        assert q.shape == t.shape == (k,)


def test_perfect_prediction_is_matched_to_itself() -> None:
    gen = torch.Generator().manual_seed(3)
    targets = torch.rand(4, 6, 8, generator=gen) > 0.5
    targets = targets.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (4, 24, 32)
    perm = torch.tensor([7, 2, 5, 0])
    masks = 3 * torch.randn(1, 10, 24, 32, generator=gen)
    logits = torch.zeros(1, 10, 2)
    logits[0, :, 1] = 2.0  # everything looks like no-object ...
    masks[0, perm] = 20.0 * (2 * targets.float() - 1)
    logits[0, perm, 0] = 5.0  # ... except the perfect queries
    logits[0, perm, 1] = -5.0
    matcher = HungarianMatcher(num_points=200)
    matcher.point_source = UniformPointSource(torch.Generator().manual_seed(0))
    q, t = matcher(logits, masks, [targets])[0]
    assert dict(zip(t.tolist(), q.tolist())) == dict(enumerate(perm.tolist()))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_do_not_crash(bad: float) -> None:
    matcher = HungarianMatcher(num_points=40)
    logits, masks, targets, coords = _random(2, 6, [3, 4], None)
    masks[0, 1] = bad
    masks[1, :, 0, 0] = bad
    logits[0, 2, 0] = bad
    cost = matcher.cost_matrix(logits[0], masks[0], targets[0], coords[:1])
    assert bool(torch.isfinite(cost).all())
    indices = matcher(logits, masks, targets, point_coords=coords)
    assert [len(q) for q, _ in indices] == [3, 4]


def test_view_axis_with_one_view_equals_plain_matcher() -> None:
    matcher = HungarianMatcher(num_points=40)
    logits, masks, targets, coords = _random(3, 9, [5, 1, 6], None)
    plain = matcher(logits, masks, targets, point_coords=coords)
    viewed = matcher(logits, masks[:, :, None], [t[:, None] for t in targets], point_coords=coords)
    _assert_same(plain, viewed)
    c_plain = matcher.cost_matrix(logits[0], masks[0], targets[0], coords[:1])
    c_view = matcher.cost_matrix(logits[0], masks[0, :, None], targets[0][:, None], coords[:1])
    torch.testing.assert_close(c_plain, c_view, atol=0, rtol=0)


def test_view_costs_use_the_same_points_in_every_view() -> None:
    # Two identical views: the BCE cost (mean over T*P values) equals the single-view one.
    matcher = HungarianMatcher(cost_class=0.0, cost_mask=1.0, cost_dice=0.0, num_points=40)
    logits, masks, targets, coords = _random(1, 6, [3], None)
    single = matcher.cost_matrix(logits[0], masks[0], targets[0], coords)
    two = matcher.cost_matrix(
        logits[0],
        masks[0, :, None].repeat(1, 2, 1, 1),
        targets[0][:, None].repeat(1, 2, 1, 1),
        coords,
    )
    torch.testing.assert_close(single, two, atol=1e-6, rtol=1e-6)


def test_pinned_points_make_matching_reproducible() -> None:
    logits, masks, targets, _ = _random(2, 8, [3, 5], 2)
    results = []
    for _ in range(2):
        matcher = HungarianMatcher(num_points=30)
        matcher.point_source = UniformPointSource(torch.Generator().manual_seed(11))
        results.append(matcher(logits, masks, targets))
    _assert_same(*results)


def test_bad_inputs_raise_clear_errors() -> None:
    matcher = HungarianMatcher(num_points=10)
    logits, masks, targets, coords = _random(2, 4, [1, 2], None)
    with pytest.raises(ValueError, match="batch sizes"):
        matcher(logits, masks, targets[:1])
    with pytest.raises(ValueError, match="pred_masks must be"):
        matcher(logits, masks[:, :, None, None], targets)
    with pytest.raises(ValueError, match="point_coords"):
        matcher(logits, masks, targets, point_coords=coords[:1])
    with pytest.raises(ValueError, match="target masks of image 0"):
        matcher(logits, masks, [t[:, None] for t in targets])
    with pytest.raises(ValueError, match="all 0"):
        HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0)
    with pytest.raises(ValueError, match="num_points"):
        HungarianMatcher(num_points=0)
