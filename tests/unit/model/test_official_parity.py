"""Our network reproduces the official CropFormer outputs of the parity bundle.

The bundle (``../shared/reference/parity``, see its README) was produced by running the official
code on CPU: a reduced config, its state dict, the exact 5-view input and the outputs of both
passes. We build our model from that config, load the converted weights strictly and compare.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from helpers.shared import require_shared

from cropformer.model.convert import build_from_official_config, convert_official_state_dict

BUNDLE = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference" / "parity"
ATOL = 1e-4  # bundle README section 10


def _load(name: str) -> dict:
    path = BUNDLE / name
    require_shared(path)
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def model():
    cfg_path = BUNDLE / "config_full.yaml"
    require_shared(cfg_path)
    cfg = yaml.safe_load(cfg_path.read_text())
    torch.manual_seed(0)
    net = build_from_official_config(cfg).eval()
    state, unmapped = convert_official_state_dict(_load("official_state_dict.pth"))
    assert unmapped == []
    net.load_state_dict(state, strict=True)
    return net


@pytest.fixture(scope="module")
def eval_data():
    return _load("eval_inputs.pth"), _load("eval_outputs.pth")


def test_parameter_count_matches_official(model) -> None:
    parts = {
        "backbone": model.backbone,
        "pixel_decoder": model.pixel_decoder,
        "decoder": model.decoder,
        "association": model.association,
    }
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
    assert counts == {
        "backbone": 339_486,
        "pixel_decoder": 1_010_304,
        "decoder": 215_746,
        "association": 66_752,
    }


def test_normalisation_reproduces_official_input(model, eval_data) -> None:
    inputs, _ = eval_data
    mapper = inputs["mapper_output"]
    views = torch.cat([mapper["image"][None], mapper["image_crop"]])
    sizes = torch.tensor(inputs["image_sizes"])
    ours = model.normalize(views, sizes)
    assert torch.equal(ours, inputs["images_tensor"])


def test_view0_features_match_official(model, eval_data) -> None:
    inputs, outputs = eval_data
    with torch.no_grad():
        feats = model.backbone(inputs["images_tensor"][:1])
        mask_features, multi_scale = model.pixel_decoder(feats)
    for ours, name in zip(feats, ("res2", "res3", "res4", "res5")):
        torch.testing.assert_close(
            ours, outputs["view0_backbone_features"][name], atol=ATOL, rtol=0
        )
    ref = outputs["view0_pixel_decoder"]
    torch.testing.assert_close(mask_features, ref["mask_features"], atol=ATOL, rtol=0)
    for ours, theirs in zip(multi_scale, ref["multi_scale_features"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_both_passes_match_official(model, eval_data) -> None:
    # from the mapper's uint8 views: our normalisation is bit-exact (test above)
    inputs, outputs = eval_data
    mapper = inputs["mapper_output"]
    views = torch.cat([mapper["image"][None], mapper["image_crop"]])
    sizes = torch.tensor(inputs["image_sizes"])
    with torch.no_grad():
        out = model(views, num_views=5, view_sizes=sizes)
    for ours_key, ref_key in (("image_level", "outputs_2d"), ("batch_level", "outputs_3d")):
        ours, ref = out[ours_key], outputs[ref_key]  # type: ignore[literal-required]
        torch.testing.assert_close(ours["pred_logits"], ref["pred_logits"], atol=ATOL, rtol=0)
        torch.testing.assert_close(ours["pred_masks"], ref["pred_masks"], atol=ATOL, rtol=0)
        aux = [a["pred_logits"] for a in ours["aux_outputs"]]
        assert len(aux) == len(ref["aux_pred_logits"])
        for a, b in zip(aux, ref["aux_pred_logits"]):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("key", ["hidden64_T2", "hidden64_T5", "hidden256_T2", "hidden256_T5"])
def test_position_codes_match_official(key: str) -> None:
    from cropformer.model.position_encoding import sine_position_2d, view_position_code

    ref = _load("position_codes.pth")[key]
    t, c, h, w = ref["pos2d"].shape
    pos2d = sine_position_2d(h, w, c // 2)
    torch.testing.assert_close(pos2d[None].expand(t, c, h, w), ref["pos2d"], atol=1e-6, rtol=0)
    pos3d = pos2d[None] + view_position_code(t, c)[:, :, None, None]
    torch.testing.assert_close(pos3d[None], ref["pos3d"], atol=1e-6, rtol=0)


def test_training_forward_with_views_of_different_sizes_matches_official(model) -> None:
    """Train mode, B=2 images x T=2 views of unequal widths (312, 312, 385, 384) padded to 416:
    exercises the re-zeroed padding and the batch-level pass over several images."""
    import hashlib

    inputs, outputs = _load("train_inputs.pth"), _load("train_outputs.pth")
    views = []
    for mapper in inputs["mapper_outputs"]:
        views += [mapper["image"], *mapper["image_crop"]]
    sizes = torch.tensor(inputs["image_sizes"])
    h, w = (int(s) for s in sizes.max(0).values)
    canvas = torch.zeros(len(views), 3, h, w, dtype=torch.uint8)  # what collate does
    for i, v in enumerate(views):
        canvas[i, :, : v.shape[1], : v.shape[2]] = v
    x = model.normalize(canvas, sizes)
    assert tuple(x.shape) == tuple(inputs["images_tensor_shape"])
    digest = hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest()
    assert digest == inputs["images_tensor_sha256"]
    model.train()
    model.decoder.training_mask_logits = "factored"  # the opt-in form: same class logits
    try:
        with torch.no_grad():
            out = model(canvas, num_views=2, view_sizes=sizes)
    finally:
        model.decoder.training_mask_logits = "full"
        model.eval()
    for ours_key, ref_key in (("image_level", "outputs_2d"), ("batch_level", "outputs_3d")):
        ours, ref = out[ours_key], outputs[ref_key]  # type: ignore[literal-required]
        # training_mask_logits=factored: the mask logits as two factors
        features = ours["mask_features"]
        masks_shape = (*ours["mask_embed"].shape[:2], *features.shape[1:-3], *features.shape[-2:])
        assert masks_shape == tuple(ref["pred_masks_shape"])
        torch.testing.assert_close(ours["pred_logits"], ref["pred_logits"], atol=ATOL, rtol=0)
        for a, b in zip(ours["aux_outputs"], ref["aux_pred_logits"], strict=True):
            torch.testing.assert_close(a["pred_logits"], b, atol=ATOL, rtol=0)
