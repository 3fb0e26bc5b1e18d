"""Set criterion: keys, weights, empty targets, perfect predictions, view-axis equivalences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _losses_helpers import make_pass, make_targets

from cropformer.losses.criterion import CropFormerCriterion, average_num_masks
from cropformer.losses.matcher import HungarianMatcher
from cropformer.losses.point_sampling import UniformPointSource

SIZE = (32, 48)  # padded view size H, W
FEAT = (8, 12)  # stride-4 mask size h, w
CONF = Path(__file__).resolve().parents[3] / "conf" / "model" / "criterion" / "default.yaml"


def _criterion(points: int = 64, seed: int = 0, **kwargs) -> CropFormerCriterion:
    criterion = CropFormerCriterion(
        matcher=HungarianMatcher(num_points=points), num_points=points, **kwargs
    )
    criterion.set_point_source(UniformPointSource(torch.Generator().manual_seed(seed)))
    return criterion


def _outputs(batch: int, views: int, layers: int = 3, queries: int = 8, batch_level: bool = True):
    out = {"image_level": make_pass(batch * views, queries, FEAT, None, layers, seed=1)}
    if batch_level:
        out["batch_level"] = make_pass(batch, queries, FEAT, views, layers, seed=2)
    return out


@pytest.mark.parametrize("layers", [1, 4])
def test_keys_follow_the_official_names_and_count(layers: int) -> None:
    criterion = _criterion(num_predictions=2)
    losses = criterion(_outputs(2, 2, layers), make_targets([3, 2], 2, SIZE, seed=0))
    assert len(losses) == 3 * layers * 2
    expected = {
        f"loss_{term}{'' if i == 0 else f'_{i - 1}'}{suffix}"
        for term in ("ce", "mask", "dice")
        for i in range(layers)
        for suffix in ("_2d", "_3d")
    }
    assert set(losses) == expected
    assert set(losses) <= set(criterion.weight_dict)
    assert all(v.dim() == 0 and v.dtype == torch.float32 for v in losses.values())
    assert all(bool(torch.isfinite(v)) for v in losses.values())


def test_mask2former_mode_has_unsuffixed_keys_and_full_weight() -> None:
    criterion = _criterion()
    losses = criterion(_outputs(2, 1, 2, batch_level=False), make_targets([3, 2], 1, SIZE, 0))
    assert set(losses) == {
        "loss_ce",
        "loss_mask",
        "loss_dice",
        "loss_ce_0",
        "loss_mask_0",
        "loss_dice_0",
    }
    total = criterion.total(losses)
    expected = sum(
        {"ce": 2.0, "mask": 5.0, "dice": 5.0}[k.split("_")[1]] * v for k, v in losses.items()
    )
    torch.testing.assert_close(total, expected)


def test_total_applies_term_and_pass_weights() -> None:
    criterion = _criterion(image_level_weight=0.5, batch_level_weight=1.0)
    losses = criterion(_outputs(2, 2), make_targets([3, 2], 2, SIZE, 0))
    term = {"ce": 2.0, "mask": 5.0, "dice": 5.0}
    expected = sum(
        term[k.split("_")[1]] * (0.5 if k.endswith("_2d") else 1.0) * v for k, v in losses.items()
    )
    torch.testing.assert_close(criterion.total(losses), expected)
    weights = criterion.weight_dict
    assert weights["loss_ce_2d"] == 1.0
    assert weights["loss_mask_8_3d"] == 5.0
    assert weights["loss_dice_3_2d"] == 2.5
    assert len(weights) == 3 * 10 * 3  # terms x num_predictions x {_2d, _3d, none}
    with pytest.raises(ValueError, match="unknown loss key 'loss_box'"):
        criterion.weight_of("loss_box")
    with pytest.raises(ValueError, match="empty"):
        criterion.total({})


@pytest.mark.parametrize("counts", [[0, 3], [0, 0]])
def test_empty_targets_give_finite_losses_and_gradients(counts: list[int]) -> None:
    outputs = _outputs(2, 2, layers=2)
    leaves = [outputs["image_level"]["pred_masks"], outputs["batch_level"]["pred_logits"]]
    for leaf in leaves:
        leaf.requires_grad_(True)
    criterion = _criterion()
    losses = criterion(outputs, make_targets(counts, 2, SIZE, 0))
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    for indices in criterion.last_indices["2d"][0][:2]:  # views of the empty image
        assert indices[0].numel() == indices[1].numel() == 0
    criterion.total(losses).backward()
    assert all(leaf.grad is not None and bool(torch.isfinite(leaf.grad).all()) for leaf in leaves)
    if counts == [0, 0]:
        assert losses["loss_mask_2d"].item() == losses["loss_dice_3d"].item() == 0.0


def _perfect_outputs(targets, views: int, queries: int = 8):
    """Predictions equal to the targets (queries 0..K-1), all other queries no-object."""
    batch = len(targets)
    img = {
        "pred_logits": torch.tensor([-4.0, 4.0]).repeat(batch * views, queries, 1),
        "pred_masks": torch.full((batch * views, queries, *SIZE), -20.0),
        "aux_outputs": [],
    }
    bl = {
        "pred_logits": torch.tensor([-4.0, 4.0]).repeat(batch, queries, 1),
        "pred_masks": torch.full((batch, queries, views, *SIZE), -20.0),
        "aux_outputs": [],
    }
    for b, target in enumerate(targets):
        masks = 40.0 * target["masks"].float() - 20.0
        k = masks.shape[0]
        bl["pred_masks"][b, :k] = masks
        bl["pred_logits"][b, :k] = torch.tensor([4.0, -4.0])
        for t in range(views):
            valid = target["valid"][:, t]
            n = b * views + t
            img["pred_masks"][n, : int(valid.sum())] = masks[valid, t]
            img["pred_logits"][n, : int(valid.sum())] = torch.tensor([4.0, -4.0])
    return {"image_level": img, "batch_level": bl}


def test_perfect_prediction_is_matched_to_itself_and_scores_lower() -> None:
    targets = make_targets([3, 4], 2, SIZE, seed=4)
    # Uniform points: importance sampling would pick the edges, where bilinear targets are
    # fractional and a sharp "perfect" step prediction is not perfect.
    criterion = _criterion(points=128, importance_sample_ratio=0.0)
    perfect = criterion(_perfect_outputs(targets, 2), targets)
    for b, (q, t) in enumerate(criterion.last_indices["3d"][0]):
        assert torch.equal(q, t), f"image {b}: {q} vs {t}"
    for q, t in criterion.last_indices["2d"][0]:
        assert torch.equal(q, t)
    random = criterion(_outputs(2, 2, layers=1), targets)
    assert float(criterion.total(perfect)) < 0.2 * float(criterion.total(random))
    for key, value in perfect.items():
        assert float(value) < 0.4 * float(random[key]), key


class _CyclicSource:
    """Uniform draws that restart from the same seed every ``period`` requests."""

    def __init__(self, period: int) -> None:
        self.period, self.count = period, 0
        self.gen = torch.Generator()

    def __call__(self, shape, device, kind):
        if self.count % self.period == 0:
            self.gen.manual_seed(123)
        self.count += 1
        return torch.rand(shape, generator=self.gen).to(device)


def test_batch_level_with_one_view_equals_image_level() -> None:
    layers, batch = 3, 2
    targets = make_targets([3, 4], 1, SIZE, seed=2)
    image = make_pass(batch, 8, FEAT, None, layers, seed=3)
    batch_level = {
        "pred_logits": image["pred_logits"],
        "pred_masks": image["pred_masks"][:, :, None],
        "aux_outputs": [
            {"pred_logits": a["pred_logits"], "pred_masks": a["pred_masks"][:, :, None]}
            for a in image["aux_outputs"]
        ],
    }
    criterion = _criterion()
    criterion.set_point_source(_CyclicSource(period=layers * (batch + 2)))  # draws of one pass
    losses = criterion({"image_level": image, "batch_level": batch_level}, targets)
    for key in [k for k in losses if k.endswith("_2d")]:
        torch.testing.assert_close(losses[key], losses[key[:-3] + "_3d"], atol=0, rtol=0)


def test_entities_absent_from_a_view_are_trained_towards_an_empty_mask() -> None:
    targets = make_targets([2], 2, SIZE, seed=0)
    targets[0]["valid"][0, 1] = False  # entity 0 absent from the crop
    targets[0]["masks"][0, 1] = False
    outputs = _perfect_outputs(targets, 2)  # predicts nothing for entity 0 in the crop
    empty = _criterion(points=128)(outputs, targets)
    targets[0]["masks"][0, 1] = True  # a mask stored in an invalid view is ignored
    torch.testing.assert_close(_criterion(points=128)(outputs, targets), empty)
    outputs["batch_level"]["pred_masks"][0, 0, 1] = 20.0  # predict the entity all over the crop
    full = _criterion(points=128)(outputs, targets)
    assert float(full["loss_mask_3d"]) > float(empty["loss_mask_3d"]) + 1.0
    assert float(full["loss_dice_3d"]) > float(empty["loss_dice_3d"]) + 0.4  # ~1 / num_masks
    torch.testing.assert_close(full["loss_mask_2d"], empty["loss_mask_2d"])


def test_batch_level_mask_terms_sum_over_views() -> None:
    # The same entity, predicted equally badly in T identical views: T times the 1-view loss.
    def loss(views: int) -> dict[str, torch.Tensor]:
        masks = torch.zeros(1, views, *SIZE, dtype=torch.bool)
        masks[0, :, 8:24, 8:40] = True
        targets = [{"masks": masks, "valid": torch.ones(1, views, dtype=torch.bool)}]
        pred = make_pass(1, 1, FEAT, 1, 1, seed=9)
        pred["pred_masks"] = pred["pred_masks"].repeat(1, 1, views, 1, 1)
        image = make_pass(views, 1, FEAT, None, 1, seed=9)
        criterion = _criterion()
        fixed = torch.rand(1, 64, 2, generator=torch.Generator().manual_seed(0))
        criterion.mask_point_sampler = lambda logits: fixed.expand(logits.shape[0], -1, -1)
        return criterion({"image_level": image, "batch_level": pred}, targets)

    one, three = loss(1), loss(3)
    torch.testing.assert_close(three["loss_mask_3d"], 3 * one["loss_mask_3d"])
    torch.testing.assert_close(three["loss_dice_3d"], 3 * one["loss_dice_3d"])


def test_class_loss_weights_no_object_by_point_one() -> None:
    outputs = _outputs(1, 1, layers=1, batch_level=False)
    targets = make_targets([0], 1, SIZE, 0)  # nothing matched: every query is no-object
    losses = _criterion()(outputs, targets)
    logits = outputs["image_level"]["pred_logits"][0]
    expected = F.cross_entropy(logits, torch.ones(8, dtype=torch.int64))  # weights cancel
    torch.testing.assert_close(losses["loss_ce"], expected)
    targets = make_targets([3], 1, SIZE, 0)
    criterion = _criterion()
    losses = criterion(outputs, targets)
    q, _ = criterion.last_indices[""][0][0]
    classes = torch.ones(8, dtype=torch.int64)
    classes[q] = 0
    per_query = F.cross_entropy(logits, classes, reduction="none")
    weights = torch.where(classes == 0, 1.0, 0.1)
    torch.testing.assert_close(losses["loss_ce"], (weights * per_query).sum() / weights.sum())


def test_num_masks_is_clamped_to_one_without_distributed() -> None:
    assert average_num_masks(0, torch.device("cpu")) == 1.0
    assert average_num_masks(7, torch.device("cpu")) == 7.0


def test_losses_stay_fp32_under_autocast() -> None:
    outputs = _outputs(2, 2, layers=2)
    for pass_out in (outputs["image_level"], outputs["batch_level"]):
        pass_out["pred_masks"] = pass_out["pred_masks"].bfloat16()
        pass_out["pred_logits"] = pass_out["pred_logits"].bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = _criterion()(outputs, make_targets([2, 3], 2, SIZE, 0))
    assert all(v.dtype == torch.float32 and bool(torch.isfinite(v)) for v in losses.values())


def test_deep_supervision_off_keeps_only_the_final_prediction() -> None:
    losses = _criterion(deep_supervision=False)(_outputs(1, 2, 4), make_targets([2], 2, SIZE, 0))
    assert set(losses) == {f"loss_{t}_{p}" for t in ("ce", "mask", "dice") for p in ("2d", "3d")}


def test_bad_inputs_raise_clear_errors() -> None:
    criterion = _criterion()
    outputs = _outputs(2, 2, layers=1)
    targets = make_targets([1, 2], 2, SIZE, 0)
    with pytest.raises(ValueError, match="N = B \\* T"):
        criterion(outputs, targets[:1] * 3)
    with pytest.raises(ValueError, match="image_level"):
        criterion({}, targets)
    with pytest.raises(ValueError, match="expected \\(K, T=2, H, W\\)"):
        criterion(outputs, [{"masks": t["masks"][:, :1], "valid": t["valid"]} for t in targets])
    with pytest.raises(ValueError, match="'valid'"):
        criterion(outputs, [{"masks": t["masks"], "valid": t["valid"].long()} for t in targets])
    with pytest.raises(ValueError, match="torch.bool"):
        criterion(outputs, [{"masks": t["masks"].float(), "valid": t["valid"]} for t in targets])
    with pytest.raises(ValueError, match="no 'masks'"):
        criterion(outputs, [{"valid": t["valid"]} for t in targets])
    bad = _outputs(2, 2, layers=1)
    bad["batch_level"]["pred_masks"] = bad["batch_level"]["pred_masks"][:, :, :1]
    with pytest.raises(ValueError, match="batch_level pred_masks"):
        criterion(bad, targets)
    with pytest.raises(TypeError, match="HungarianMatcher"):
        CropFormerCriterion(matcher={"cost_class": 2.0})  # type: ignore[arg-type]
    for kwargs in (
        {"num_points": 0},
        {"oversample_ratio": 0.5},
        {"importance_sample_ratio": 2.0},
        {"no_object_weight": -1.0},
    ):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            CropFormerCriterion(matcher=HungarianMatcher(), **kwargs)


def test_config_builds_the_official_criterion() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    criterion = instantiate(OmegaConf.load(CONF))
    assert isinstance(criterion, CropFormerCriterion)
    assert criterion.matcher.num_points == criterion.num_points == 12544
    assert (criterion.matcher.cost_class, criterion.matcher.cost_mask) == (2.0, 5.0)
    assert criterion.matcher.cost_dice == 5.0
    assert criterion.weight_of("loss_ce_2d") == 1.0
    assert criterion.weight_of("loss_mask_3d") == 5.0
    torch.testing.assert_close(criterion.class_weights, torch.tensor([1.0, 0.1]))
    assert "class_weights" not in criterion.state_dict()
    assert criterion.sorted_uncertain_points is True  # official sorted top-k by default


def test_unsorted_uncertain_points_give_the_same_losses() -> None:
    """Same draws, same selected points in another order: equal up to summation order."""
    targets = make_targets([3, 2], views=2, size=SIZE, seed=3)
    outputs = _outputs(2, 2)
    ref = _criterion(points=96, seed=5)(outputs, targets)
    fast = _criterion(points=96, seed=5, sorted_uncertain_points=False)(outputs, targets)
    assert ref.keys() == fast.keys()
    for key in ref:
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-5, atol=1e-6, msg=key)
