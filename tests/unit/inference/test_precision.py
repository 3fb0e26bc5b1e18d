"""Reduced precision at inference: what runs in bf16, what stays fp32, the settings' plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from cropformer.inference.fusion import MultiViewFusion
from cropformer.inference.predictor import EntityPredictor, precision_parts
from cropformer.utils.errors import UserError


@pytest.fixture(scope="module")
def tiny_cropformer():
    from hydra.utils import instantiate

    from cropformer.run.config import compose_config

    torch.manual_seed(0)
    return instantiate(compose_config(["model=cropformer_tiny", "paths.output_dir=."]).model.net)


def _outputs(seed: int = 0, T: int = 3, Q: int = 6, h: int = 12, w: int = 16):
    g = torch.Generator().manual_seed(seed)
    masks = (4 * torch.randn(1, Q, T, h, w, generator=g)).bfloat16()
    logits = torch.randn(1, Q, 2, generator=g).bfloat16()
    outputs = {
        "image_level": {
            "pred_logits": logits.expand(T, Q, 2).clone(),
            "pred_masks": masks[0].transpose(0, 1).contiguous(),
        },
        "batch_level": {"pred_logits": logits, "pred_masks": masks},
    }
    boxes = [[0.0, 0.0, 64.0, 48.0], [0.0, 0.0, 40.0, 30.0], [24.0, 18.0, 64.0, 48.0]]
    batch = {
        "images": torch.zeros(T, 3, 4 * h, 4 * w, dtype=torch.uint8),
        "view_sizes": torch.tensor([[48, 64], [48, 64], [48, 64]]),
        "boxes": torch.tensor([boxes]),
        "orig_sizes": torch.tensor([[48, 64]]),
    }
    return outputs, batch


def test_fusion_is_fp32_under_bf16_autocast():
    """Lightning's bf16 validation calls the fusion inside autocast: the result must not move."""
    outputs, batch = _outputs()
    fusion = MultiViewFusion()
    plain = fusion(outputs, batch)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = fusion(outputs, batch)[0]
    assert torch.equal(plain["id_map"], under["id_map"])
    assert under["scores"].dtype == torch.float32
    torch.testing.assert_close(plain["scores"], under["scores"], rtol=0, atol=0)


def test_pixel_decoder_setting_reaches_the_network_and_the_parts_line(tiny_cropformer):
    net = tiny_cropformer
    pd = net.pixel_decoder
    assert pd.force_fp32 is True and pd.fpn_fp32 is False  # official defaults
    p = EntityPredictor(net, MultiViewFusion(), precision="32")  # auto under fp32: unchanged
    assert (pd.force_fp32, pd.fpn_fp32) == (True, False) and p.precision_parts() == "fp32: all"
    p = EntityPredictor(net, MultiViewFusion(), precision="bf16")  # auto = encoder
    assert (pd.force_fp32, pd.fpn_fp32) == (False, True)
    assert p.precision_parts() == (
        "bf16: backbone, pixel-decoder encoder, decoder, association; "
        "fp32: deformable sampling core, FPN + mask features, fusion"
    )
    p = EntityPredictor(net, MultiViewFusion(), precision="bf16", pixel_decoder="fp32")
    assert p.precision_parts() == (
        "bf16: backbone, decoder, association; fp32: pixel decoder (force_fp32), fusion"
    )
    p = EntityPredictor(net, MultiViewFusion(), precision="bf16", pixel_decoder="all")
    assert (pd.force_fp32, pd.fpn_fp32) == (False, False)
    assert "bf16: backbone, pixel decoder, decoder" in p.precision_parts()
    EntityPredictor(net, MultiViewFusion(), precision="bf16", pixel_decoder=None)  # unchanged
    assert (pd.force_fp32, pd.fpn_fp32) == (False, False)
    with pytest.raises(ValueError, match="pixel_decoder='half'"):
        EntityPredictor(net, MultiViewFusion(), pixel_decoder="half")
    pd.force_fp32, pd.fpn_fp32 = True, False
    assert precision_parts(net, "32-true") == "fp32: all"
    assert precision_parts(net, "bf16-true") == "bf16-true: all (no autocast)"


def test_fpn_fp32_keeps_the_mask_features_fp32_and_the_encoder_in_bf16(tiny_cropformer):
    pd = tiny_cropformer.pixel_decoder
    g = torch.Generator().manual_seed(0)
    channels = [m[0].in_channels for m in pd.lateral_convs] + [
        m[0].in_channels for m in reversed(pd.input_proj)
    ]
    feats = [torch.randn(1, c, 32 // 2**i, 48 // 2**i, generator=g) for i, c in enumerate(channels)]
    try:
        pd.force_fp32 = False
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            pd.fpn_fp32 = True
            mask, levels = pd(feats)
            pd.fpn_fp32 = False
            mask_all, _ = pd(feats)
        assert mask.dtype == torch.float32 and mask_all.dtype == torch.bfloat16
        assert levels[0].dtype == torch.bfloat16  # the encoder followed autocast
        with torch.no_grad():
            pd.fpn_fp32 = True
            plain, _ = pd(feats)  # no autocast: fpn_fp32 changes nothing
        assert plain.dtype == torch.float32
        torch.testing.assert_close(mask, plain, rtol=0.1, atol=0.1)
    finally:
        pd.force_fp32, pd.fpn_fp32 = True, False


def test_bf16_prediction_keeps_the_original_size_and_fp32_outputs(tiny_cropformer):
    img = np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8)
    p = EntityPredictor(
        tiny_cropformer, MultiViewFusion(), precision="bf16", short_side=32, max_size=64
    )
    pred = p.predict(img)
    assert pred["id_map"].shape == (40, 70) and pred["id_map"].dtype == torch.int32
    assert pred["scores"].dtype == torch.float32 and torch.isfinite(pred["scores"]).all()


def test_eval_precision_key_sets_the_trainer_and_bad_values_are_one_line():
    from cropformer.cli.eval import _apply_precision
    from cropformer.cli.validate import check_values, pixel_decoder_setting

    expected = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
    for name, trainer in expected.items():
        cfg = OmegaConf.create({"precision": name, "trainer": {"precision": "32-true"}})
        _apply_precision(cfg)
        assert cfg.trainer.precision == trainer
    cfg = OmegaConf.create({"precision": None, "trainer": {"precision": "32-true"}})
    _apply_precision(cfg)
    assert cfg.trainer.precision == "32-true"
    check_values(OmegaConf.create({"precision": None, "split": "val"}))  # eval: null keeps it
    with pytest.raises(UserError, match=r"precision='bf61': use fp32, bf16 or fp16 \(or null"):
        check_values(OmegaConf.create({"precision": "bf61", "split": "val", "trainer": {}}))
    with pytest.raises(UserError, match=r"precision=None: use fp32, bf16 or fp16$"):
        check_values(OmegaConf.create({"precision": None}))  # predict.py has no null
    assert pixel_decoder_setting(None) is None and pixel_decoder_setting("encoder") == "encoder"
    with pytest.raises(UserError, match=r"pixel_decoder='half': use auto \(= encoder"):
        pixel_decoder_setting("half")
