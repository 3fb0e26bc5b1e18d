"""Factored training mask logits: the same losses, matchings and gradients as the full logits.

``training_mask_logits="factored"`` (opt-in; the default is "full") keeps each training
prediction's mask logits as ``mask_embed . mask_features`` and lets the losses evaluate them
only at their points;
``"full"`` is the official computation. The two differ only in float summation order, so a
whole training step (forward, matching, importance sampling, losses, backward) must agree to a
stated tolerance on a small seeded model with the same uniform draws.
"""

from __future__ import annotations

import pytest
import torch
from model_builders import build_net

from cropformer.losses.criterion import CropFormerCriterion
from cropformer.losses.mask_logits import FactoredMasks
from cropformer.losses.matcher import HungarianMatcher
from cropformer.losses.point_sampling import UniformPointSource, point_sample
from cropformer.model.cropformer import CropFormer

# Tolerances of the equality (fp32; observed max differences are ~10-100x smaller).
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6
VIEWS, SIZE = 2, (64, 96)


def _perturbed_net(association: bool) -> CropFormer:
    # as the official bundle: the zero-initialised deformable-attention weights would otherwise
    # give many parameters an all-zero gradient, which compares trivially
    net = build_net(association=association, queries=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return net.train()


def _batch(num_images: int, views: int) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (num_images * views, 3, *SIZE), generator=g, dtype=torch.uint8)
    targets = []
    for k in (3, 5)[:num_images]:
        coarse = torch.rand(k, views, SIZE[0] // 8, SIZE[1] // 8, generator=g) > 0.6
        masks = coarse.repeat_interleave(8, 2).repeat_interleave(8, 3)
        valid = masks.flatten(2).any(-1)
        targets.append({"masks": masks, "valid": valid})
    return images, targets


def _step(
    net: CropFormer, images: torch.Tensor, targets: list, views: int, factored: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    criterion = CropFormerCriterion(
        matcher=HungarianMatcher(num_points=96), num_points=96, num_predictions=4
    )
    criterion.set_point_source(UniformPointSource(torch.Generator().manual_seed(3)))
    net.zero_grad(set_to_none=True)
    outputs = net(images, num_views=views, factored=factored)
    key = "mask_embed" if factored else "pred_masks"
    assert key in outputs["image_level"] and all(
        key in a for a in outputs["image_level"]["aux_outputs"]
    )
    losses = criterion(outputs, targets)
    criterion.total(losses).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return losses, grads, criterion.last_indices


@pytest.mark.parametrize("association", [True, False], ids=["cropformer", "mask2former"])
def test_factored_training_step_equals_the_full_one(association: bool) -> None:
    views = VIEWS if association else 1
    net = _perturbed_net(association)
    images, targets = _batch(2, views)
    full_losses, full_grads, full_idx = _step(net, images, targets, views, factored=False)
    fact_losses, fact_grads, fact_idx = _step(net, images, targets, views, factored=True)

    # same matchings in every layer of every pass
    assert full_idx.keys() == fact_idx.keys()
    for name in full_idx:
        for a, b in zip(full_idx[name], fact_idx[name], strict=True):
            for (qa, ta), (qb, tb) in zip(a, b, strict=True):
                assert torch.equal(qa, qb) and torch.equal(ta, tb)
    # same losses (every raw term) and parameter gradients
    assert full_losses.keys() == fact_losses.keys()
    expected = 24 if association else 12
    assert len(full_losses) == expected
    for key, value in full_losses.items():
        torch.testing.assert_close(fact_losses[key], value, rtol=LOSS_RTOL, atol=LOSS_ATOL, msg=key)
    assert full_grads.keys() == fact_grads.keys()
    assert len(full_grads) == len(list(net.parameters()))
    for name, grad in full_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(fact_grads[name], grad, rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=name)


def test_training_forward_is_full_by_default_and_factored_on_request() -> None:
    net = build_net(queries=4).train()
    images, _ = _batch(1, VIEWS)
    assert net.decoder.training_mask_logits == "full"  # official default
    assert "pred_masks" in net(images, num_views=VIEWS)["image_level"]
    net.decoder.training_mask_logits = "factored"
    out = net(images, num_views=VIEWS)
    for level, views_axis in (("image_level", False), ("batch_level", True)):
        level_out = out[level]  # type: ignore[literal-required]
        assert "pred_masks" not in level_out
        assert level_out["mask_embed"].shape == (VIEWS if not views_axis else 1, 4, 32)
        expect = (1, VIEWS, 32, 16, 24) if views_axis else (VIEWS, 32, 16, 24)
        assert level_out["mask_features"].shape == expect
    # inference (aux=False), eval mode and the official flag: full-resolution pred_masks
    assert "pred_masks" in net(images, num_views=VIEWS, aux=False)["image_level"]
    net.decoder.training_mask_logits = "full"
    assert "pred_masks" in net(images, num_views=VIEWS)["batch_level"]
    net.decoder.training_mask_logits = "factored"
    with torch.no_grad():
        assert "pred_masks" in net.eval()(images, num_views=VIEWS)["image_level"]
    with pytest.raises(ValueError, match="aux=True"):
        net(images, num_views=VIEWS, aux=False, factored=True)


def test_factored_outputs_stand_for_the_full_logits() -> None:
    """Same class logits in every layer (the attention masks agree) and embed . features equals
    pred_masks, in both passes."""
    net = build_net(queries=5).eval()
    images, _ = _batch(2, VIEWS)
    with torch.no_grad():
        full = net(images, num_views=VIEWS, factored=False)
        fact = net(images, num_views=VIEWS, factored=True)
    for level in ("image_level", "batch_level"):
        a, b = full[level], fact[level]  # type: ignore[literal-required]
        for pa, pb in zip([a, *a["aux_outputs"]], [b, *b["aux_outputs"]], strict=True):
            torch.testing.assert_close(pb["pred_logits"], pa["pred_logits"], rtol=0, atol=1e-5)
            masks = FactoredMasks(pb["mask_embed"], b["mask_features"])
            images_idx, queries_idx = torch.meshgrid(
                torch.arange(masks.shape[0]), torch.arange(masks.shape[1]), indexing="ij"
            )
            rebuilt = masks.rows(images_idx.flatten(), queries_idx.flatten())
            assert rebuilt.shape[0] == masks.shape[0] * masks.shape[1]
            torch.testing.assert_close(
                rebuilt.view(masks.shape), pa["pred_masks"], rtol=0, atol=1e-4
            )


def test_factored_masks_sample_like_the_full_logits() -> None:
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(2, 7, 16, generator=g)
    for features in (
        torch.randn(2, 16, 12, 20, generator=g),
        torch.randn(2, 3, 16, 12, 20, generator=g),
    ):
        masks = FactoredMasks(embed, features)
        eq = "bqc,bchw->bqhw" if features.dim() == 4 else "bqc,btchw->bqthw"
        full = torch.einsum(eq, embed, features)
        assert masks.shape == tuple(full.shape)
        coords = torch.rand(1, 50, 2, generator=g)
        for b in range(2):
            expected = point_sample(full[b].reshape(7, -1, 12, 20), coords.expand(7, -1, -1))
            got = masks.point_logits(b, coords)
            torch.testing.assert_close(got.reshape(7, -1, 50), expected, rtol=0, atol=1e-5)
        # rows in the requested (unsorted) order, empty selection
        batch_idx, query_idx = torch.tensor([1, 0, 1, 0]), torch.tensor([3, 6, 0, 2])
        torch.testing.assert_close(
            masks.rows(batch_idx, query_idx), full[batch_idx, query_idx], rtol=0, atol=1e-5
        )
        empty = masks.rows(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        assert empty.shape == (0, *full.shape[2:])


def test_factored_masks_reject_mismatched_factors() -> None:
    with pytest.raises(ValueError, match=r"mask_embed has shape \(2, 7\)"):
        FactoredMasks(torch.zeros(2, 7), torch.zeros(2, 16, 4, 4))
    with pytest.raises(ValueError, match="C = 16"):
        FactoredMasks(torch.zeros(2, 7, 16), torch.zeros(2, 8, 4, 4))
    with pytest.raises(ValueError, match="B = 3"):
        FactoredMasks(torch.zeros(2, 7, 16), torch.zeros(3, 16, 4, 4))


def test_criterion_names_the_missing_mask_keys() -> None:
    criterion = CropFormerCriterion(matcher=HungarianMatcher(num_points=16), num_points=16)
    outputs = {"image_level": {"pred_logits": torch.zeros(1, 3, 2), "aux_outputs": []}}
    targets = [
        {
            "masks": torch.zeros(1, 1, 8, 8, dtype=torch.bool),
            "valid": torch.ones(1, 1, dtype=torch.bool),
        }
    ]
    with pytest.raises(ValueError, match="neither 'pred_masks' nor 'mask_embed'"):
        criterion(outputs, targets)  # type: ignore[arg-type]


def test_decoder_rejects_an_unknown_mask_logits_mode() -> None:
    from cropformer.model.decoder import MaskedAttentionDecoder

    with pytest.raises(ValueError, match="training_mask_logits='points'"):
        MaskedAttentionDecoder(training_mask_logits="points")  # type: ignore[arg-type]
