"""Our criterion reproduces the official CropFormer losses and matchings of the parity bundle.

The bundle (``../shared/reference/parity``, README sections 7-10) stores, for one training batch
(2 images x 2 views) run through the OFFICIAL code: the mapper outputs (views and per-view entity
id maps), every uniform point tensor drawn in the loss computation (in draw order), the point sets
selected by importance sampling, the Hungarian matchings per layer and pass, and the 24 weighted
loss terms. The training mask logits are not stored, so the predictions come from our network
loaded with the official weights (the model part's own parity test checks those outputs); the
class logits are stored and are checked here too.

Two injections (README section 9): (b) "robust" serves the stored matcher points and the stored
selected point sets (rtol 1e-4), (a) "raw" serves every stored draw and lets our importance
sampling select (rtol 1e-3: near-ties of the top-k may swap a point). Not marked ``parity``: it
needs no peer library and runs in the default selection.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers.shared import require_shared

from cropformer.losses.criterion import CropFormerCriterion
from cropformer.losses.matcher import HungarianMatcher
from cropformer.losses.point_sampling import ReplayPointSource

BUNDLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "parity"
LAYERS = ("final", "aux0", "aux1", "aux2")
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
PADDED = (256, 416)  # README section 7: the 4 training views padded to a multiple of 32
VIEWS = 2


def _load(name: str) -> Any:
    path = BUNDLE / name
    require_shared(path)
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return {
        "inputs": _load("train_inputs.pth"),
        "outputs": _load("train_outputs.pth"),
        "draws": _load("train_random_draws.pth"),
    }


def _views(inputs: dict[str, Any]) -> list[torch.Tensor]:
    """The uint8 views in training order [A-full, A-crop, B-full, B-crop]."""
    views = []
    for mapped in inputs["mapper_outputs"]:
        views.append(mapped["image"])
        views.extend(mapped["image_crop"])
    return views


def _images(inputs: dict[str, Any]) -> torch.Tensor:
    """README section 4: normalise each view, then zero-pad to the common padded size."""
    images = torch.zeros(len(_views(inputs)), 3, *PADDED)
    for n, view in enumerate(_views(inputs)):
        h, w = view.shape[-2:]
        images[n, :, :h, :w] = (view.float() - MEAN) / STD
    return images


def _targets(inputs: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
    """EntityTargets: masks (K, T, H, W) from the index-aligned per-view id maps, and valid."""
    targets = []
    for mapped in inputs["mapper_outputs"]:
        instances = [mapped["instances"], *mapped["instances_crop"]]
        num = instances[0]["num_instances"]
        masks = torch.zeros(num, VIEWS, *PADDED, dtype=torch.bool)
        valid = torch.zeros(num, VIEWS, dtype=torch.bool)
        for t, inst in enumerate(instances):
            id_map = inst["gt_masks_id_map"].long()
            h, w = id_map.shape
            masks[:, t, :h, :w] = id_map[None] == torch.arange(num)[:, None, None]
            valid[:, t] = inst["gt_boxes_valid"].bool()
        targets.append({"masks": masks, "valid": valid})
    return targets


@pytest.fixture(scope="module", params=["full", "factored"])
def predictions(request: pytest.FixtureRequest, bundle: dict[str, Any]) -> dict[str, Any]:
    """Our network with the official weights on the official training views (no grad).

    ``full``: full-resolution mask logits (the official computation); ``factored``: the default
    training outputs (``mask_embed`` + ``mask_features``, logits evaluated at the points only).
    """
    yaml = pytest.importorskip("yaml")
    convert = pytest.importorskip("cropformer.model.convert")
    cfg = yaml.safe_load((BUNDLE / "config_full.yaml").read_text())
    torch.manual_seed(0)
    net = convert.build_from_official_config(cfg)
    state, unmapped = convert.convert_official_state_dict(_load("official_state_dict.pth"))
    assert unmapped == []
    net.load_state_dict(state, strict=True)
    # The official training forward has dropout 0 and drop-path 0, so it equals an eval-mode
    # forward; eval() also guards against stochastic layers left on by a default.
    net.eval()
    images = _images(bundle["inputs"])
    digest = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()
    assert digest == bundle["inputs"]["images_tensor_sha256"]
    with torch.no_grad():
        return net(images, num_views=VIEWS, normalized=True, factored=request.param == "factored")


def _criterion(bundle: dict[str, Any]) -> CropFormerCriterion:
    draws = bundle["draws"]
    points = int(draws["num_points"])
    return CropFormerCriterion(
        matcher=HungarianMatcher(num_points=points),
        num_points=points,
        oversample_ratio=float(draws["oversample_ratio"]),
        importance_sample_ratio=float(draws["importance_sample_ratio"]),
        num_predictions=len(LAYERS),
    )


def _matcher_draws(draws: dict[str, Any]) -> ReplayPointSource:
    pairs = [
        (d, lab)
        for d, lab in zip(draws["draws"], draws["labels"])
        if lab["kind"] == "matcher_points"
    ]
    return ReplayPointSource([d for d, _ in pairs], [lab["kind"] for _, lab in pairs])


def _selected_points(draws: dict[str, Any]):
    """A mask-point sampler that serves the official selected point sets in call order."""
    stored = [draws["selected_point_coords"][p][layer] for p in ("2d", "3d") for layer in LAYERS]

    def sampler(logits: torch.Tensor) -> torch.Tensor:
        coords = stored.pop(0)
        assert coords.shape[0] == logits.shape[0], "mask-loss rows differ from the official rows"
        return coords

    return sampler


def _compare(
    criterion: CropFormerCriterion,
    losses: dict[str, torch.Tensor],
    bundle: dict[str, Any],
    rtol: float,
) -> None:
    official = bundle["outputs"]
    # Matchings: identical, every layer of both passes.
    for pass_name in ("2d", "3d"):
        ours = criterion.last_indices[pass_name]
        for i, layer in enumerate(LAYERS):
            ref = official[f"matching_{pass_name}"][layer]
            assert len(ours[i]) == len(ref)
            for b, ((q, t), (q_ref, t_ref)) in enumerate(zip(ours[i], ref)):
                assert torch.equal(q, q_ref), f"{pass_name} {layer} item {b}: queries differ"
                assert torch.equal(t, t_ref), f"{pass_name} {layer} item {b}: targets differ"
    # Losses: the official dict is weighted (term weight x pass weight); ours is raw.
    assert set(losses) == set(official["losses"])
    for key, ref in official["losses"].items():
        value = criterion.weight_of(key) * losses[key]
        torch.testing.assert_close(value, ref, rtol=rtol, atol=0, msg=key)
    total = criterion.total(losses)
    torch.testing.assert_close(total, official["total_loss"], rtol=rtol, atol=0)


def test_class_logits_of_our_network_match_official(bundle, predictions) -> None:
    official = bundle["outputs"]
    for ours, ref in (
        (predictions["image_level"], official["outputs_2d"]),
        (predictions["batch_level"], official["outputs_3d"]),
    ):
        torch.testing.assert_close(ours["pred_logits"], ref["pred_logits"], atol=1e-4, rtol=0)
        for aux, aux_ref in zip(ours["aux_outputs"], ref["aux_pred_logits"], strict=True):
            torch.testing.assert_close(aux["pred_logits"], aux_ref, atol=1e-4, rtol=0)
        if "pred_masks" in ours:
            assert tuple(ours["pred_masks"].shape) == tuple(ref["pred_masks_shape"])
        else:
            shape = ours["mask_features"].shape
            masks_shape = (*ours["mask_embed"].shape[:2], *shape[1:-3], *shape[-2:])
            assert masks_shape == tuple(ref["pred_masks_shape"])


def test_targets_match_the_official_preparation(bundle) -> None:
    targets = _targets(bundle["inputs"])
    official = bundle["outputs"]
    assert sum(int(t["valid"].sum()) for t in targets) == official["num_masks_2d"]
    assert sum(t["masks"].shape[0] for t in targets) == official["num_masks_3d"]
    for b, target in enumerate(targets):
        ids = official["targets_3d"][b]["ids"]
        assert torch.equal(target["valid"], ids >= 0)
        for t in range(VIEWS):
            valid_index = official["targets_2d"][b * VIEWS + t]["valid_index"]
            assert torch.equal(target["valid"][:, t].nonzero()[:, 0], valid_index)


def test_robust_injection_reproduces_matchings_and_losses(bundle, predictions) -> None:
    criterion = _criterion(bundle)
    source = _matcher_draws(bundle["draws"])
    criterion.set_point_source(source)
    criterion.mask_point_sampler = _selected_points(bundle["draws"])
    losses = criterion(predictions, _targets(bundle["inputs"]))
    assert source.remaining == 0
    _compare(criterion, losses, bundle, rtol=1e-4)


def test_raw_injection_consumes_the_draws_in_official_order(bundle, predictions) -> None:
    draws = bundle["draws"]
    criterion = _criterion(bundle)
    source = ReplayPointSource(draws["draws"], [lab["kind"] for lab in draws["labels"]])
    criterion.set_point_source(source)
    losses = criterion(predictions, _targets(bundle["inputs"]))
    assert source.remaining == 0
    _compare(criterion, losses, bundle, rtol=1e-3)  # README section 10: top-k near-ties


def test_class_loss_from_stored_logits_and_matchings(bundle) -> None:
    """Model-free: loss_ce from the official class logits and matchings equals the official."""
    official = bundle["outputs"]
    criterion = _criterion(bundle)
    for pass_name in ("2d", "3d"):
        logits = [
            official[f"outputs_{pass_name}"]["pred_logits"],
            *official[f"outputs_{pass_name}"]["aux_pred_logits"],
        ]
        for i, layer in enumerate(LAYERS):
            key = "loss_ce" + ("" if i == 0 else f"_{i - 1}") + f"_{pass_name}"
            indices = official[f"matching_{pass_name}"][layer]
            value = criterion.weight_of(key) * criterion.loss_labels(logits[i], indices)
            torch.testing.assert_close(value, official["losses"][key], rtol=1e-5, atol=0)
    assert F.softmax(logits[0], -1).shape[-1] == 2
