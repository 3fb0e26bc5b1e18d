"""Point sampling: bilinear samples, gathered mask samples, importance sampling, point sources."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cropformer.losses.point_sampling import (
    ReplayPointSource,
    UniformPointSource,
    point_sample,
    sample_masks_at_points,
    uncertain_point_coords,
)


def test_point_sample_hits_pixel_centres_exactly() -> None:
    maps = torch.randn(2, 3, 5, 7)
    ys, xs = torch.meshgrid(torch.arange(5), torch.arange(7), indexing="ij")
    coords = torch.stack([(xs + 0.5) / 7, (ys + 0.5) / 5], -1).reshape(1, -1, 2).expand(2, -1, -1)
    samples = point_sample(maps, coords)
    assert samples.shape == (2, 3, 35)
    torch.testing.assert_close(samples, maps.flatten(2), atol=1e-6, rtol=0)


def test_point_sample_is_zero_padded_outside() -> None:
    maps = torch.ones(1, 1, 4, 4)
    coords = torch.tensor([[[0.0, 0.5], [0.5, 0.5]]])  # left border: half outside
    samples = point_sample(maps, coords)[0, 0]
    torch.testing.assert_close(samples, torch.tensor([0.5, 1.0]))


@pytest.mark.parametrize("shared", [True, False])
def test_gathered_mask_samples_equal_grid_sample(shared: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(11, 2, 16, 24, generator=gen) > 0.5
    coords = torch.rand(1 if shared else 11, 500, 2, generator=gen)
    coords[0, :4] = torch.tensor([[0.0, 0.0], [0.999, 0.999], [0.01, 0.5], [0.5, 0.99]])  # borders
    out = sample_masks_at_points(masks, coords)
    grid = (2 * coords - 1).unsqueeze(2).expand(11, -1, -1, -1)
    ref = F.grid_sample(masks.float(), grid, align_corners=False).squeeze(3)
    assert out.shape == (11, 2, 500)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    float_out = sample_masks_at_points(masks.float(), coords)
    torch.testing.assert_close(float_out, out, atol=0, rtol=0)


@pytest.mark.parametrize("shared", [True, False])
def test_sample_masks_with_rows_equals_sampling_the_selected_masks(shared: bool) -> None:
    """``rows`` (unsorted, repeated) samples masks[rows] without copying them out first."""
    gen = torch.Generator().manual_seed(2)
    masks = torch.rand(7, 3, 10, 13, generator=gen) > 0.5
    rows = torch.tensor([4, 0, 6, 4, 2])
    coords = torch.rand(1 if shared else len(rows), 50, 2, generator=gen)
    out = sample_masks_at_points(masks, coords, rows=rows)
    assert out.shape == (5, 3, 50)
    torch.testing.assert_close(out, sample_masks_at_points(masks[rows], coords), atol=0, rtol=0)
    empty = sample_masks_at_points(masks, coords[:0], rows=rows[:0])
    assert empty.shape == (0, 3, 50)


def test_sample_masks_of_no_rows_is_empty() -> None:
    out = sample_masks_at_points(torch.zeros(0, 1, 8, 8, dtype=torch.bool), torch.rand(1, 5, 2))
    assert out.shape == (0, 1, 5)


def test_uncertain_points_keep_the_most_uncertain_candidates_then_the_random_draw() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(3, 1, 8, 8, generator=gen)
    candidates = torch.rand(3, 60, 2, generator=gen)
    extra = torch.rand(3, 5, 2, generator=gen)
    source = ReplayPointSource(
        [candidates, extra], kinds=["mask_loss_candidates", "mask_loss_random"]
    )
    coords = uncertain_point_coords(
        logits,
        num_points=20,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        point_source=source,
    )
    assert coords.shape == (3, 20, 2)
    assert source.remaining == 0
    torch.testing.assert_close(coords[:, 15:], extra, atol=0, rtol=0)
    cand_unc = -point_sample(logits, candidates).abs()[:, 0]
    kept_unc = -point_sample(logits, coords[:, :15]).abs()[:, 0]
    # The kept points are the 15 most uncertain candidates, in descending uncertainty.
    torch.testing.assert_close(kept_unc, cand_unc.sort(dim=1, descending=True).values[:, :15])
    # unsorted selection: the same set of points
    source = ReplayPointSource(
        [candidates, extra], kinds=["mask_loss_candidates", "mask_loss_random"]
    )
    unsorted = uncertain_point_coords(
        logits,
        num_points=20,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        point_source=source,
        sorted_topk=False,
    )
    unsorted_unc = -point_sample(logits, unsorted[:, :15]).abs()[:, 0]
    torch.testing.assert_close(unsorted_unc.sort(dim=1, descending=True).values, kept_unc)


def test_uncertain_points_without_importance_are_all_uniform() -> None:
    source = UniformPointSource(torch.Generator().manual_seed(0))
    coords = uncertain_point_coords(
        torch.randn(2, 1, 4, 4),
        num_points=10,
        oversample_ratio=1.0,
        importance_sample_ratio=0.0,
        point_source=source,
    )
    assert coords.shape == (2, 10, 2)
    assert bool(((coords >= 0) & (coords < 1)).all())


@pytest.mark.parametrize(("oversample", "importance"), [(0.5, 0.75), (3.0, 1.5), (3.0, -0.1)])
def test_uncertain_points_reject_bad_ratios(oversample: float, importance: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        uncertain_point_coords(
            torch.randn(1, 1, 4, 4),
            num_points=4,
            oversample_ratio=oversample,
            importance_sample_ratio=importance,
            point_source=UniformPointSource(),
        )


def test_uniform_source_with_generator_is_reproducible() -> None:
    a = UniformPointSource(torch.Generator().manual_seed(5))((2, 3, 2), torch.device("cpu"), "x")
    b = UniformPointSource(torch.Generator().manual_seed(5))((2, 3, 2), torch.device("cpu"), "x")
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_replay_source_reports_order_errors() -> None:
    cpu = torch.device("cpu")
    source = ReplayPointSource([torch.rand(1, 4, 2)], kinds=["matcher_points"])
    with pytest.raises(ValueError, match="shape"):
        source((1, 5, 2), cpu, "matcher_points")
    with pytest.raises(ValueError, match="kind"):
        source((1, 4, 2), cpu, "mask_loss_random")
    source((1, 4, 2), cpu, "matcher_points")
    with pytest.raises(ValueError, match="only 1 draws"):
        source((1, 4, 2), cpu, "matcher_points")
    with pytest.raises(ValueError, match="kinds"):
        ReplayPointSource([torch.rand(1)], kinds=[])
