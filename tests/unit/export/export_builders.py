"""Small networks of every backbone family (official backbone code at small widths)."""

from __future__ import annotations

import torch

from cropformer.model.association import QueryAssociation
from cropformer.model.backbone import TimmBackbone
from cropformer.model.cropformer import CropFormer
from cropformer.model.decoder import MaskedAttentionDecoder
from cropformer.model.hornet import HorNet
from cropformer.model.pixel_decoder import MSDeformAttnPixelDecoder

WIDTH = 32


def small_backbone(family: str) -> torch.nn.Module:
    """The official backbone code of ``family`` at a small width and depth."""
    if family == "swin":  # Swin-T / Swin-L: official detection windows, shifts and padding
        return TimmBackbone(
            model_name="swin_tiny_patch4_window7_224",
            out_norm=True,
            model_kwargs={"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 1, 2, 2)},
        )
    if family == "r50":  # the bottleneck ResNet-50 itself (frozen BN as official)
        return TimmBackbone(model_name="resnet50", out_indices=(1, 2, 3, 4), frozen_bn=True)
    if family == "hornet":  # HorNet with the global-local (FFT) filter in stages 3-4
        return HorNet(
            base_dim=16,
            depths=(1, 1, 2, 1),
            global_filter_sizes=(None, None, (24, 13), (12, 7)),
            drop_path_rate=0.0,
        )
    if family == "regnet":  # our embedded tiny models
        return TimmBackbone(model_name="regnetx_002", out_indices=(1, 2, 3, 4))
    raise ValueError(family)


def small_net(family: str, association: bool = True, seed: int = 0) -> CropFormer:
    """A small CropFormer (or Mask2Former without association) on ``family``'s backbone."""
    torch.manual_seed(seed)
    backbone = small_backbone(family)
    channels = list(backbone.channels)  # type: ignore[union-attr]
    net = CropFormer(
        backbone=backbone,
        pixel_decoder=MSDeformAttnPixelDecoder(
            in_channels=channels,
            conv_dim=WIDTH,
            mask_dim=WIDTH,
            num_encoder_layers=1,
            num_heads=4,
            ffn_dim=64,
        ),
        decoder=MaskedAttentionDecoder(
            in_channels=WIDTH,
            hidden_dim=WIDTH,
            num_queries=8,
            num_heads=4,
            ffn_dim=64,
            num_layers=3,
            mask_dim=WIDTH,
        ),
        association=QueryAssociation(dim=WIDTH, num_heads=4, ffn_dim=64) if association else None,
    )
    return net.eval()


SETTINGS = {
    "short_side": 160,
    "max_size": 256,
    "num_crops": 4,
    "crop_ratio": 0.7,
    "stride_ratio": 0.6,
    "crop_mode": "fixed",
    "crop_max_size": 256,
}
FUSION = {"_target_": "cropformer.inference.fusion.MultiViewFusion", "decoder": "B-OC"}


def metadata(num_views: int) -> dict:
    settings = dict(SETTINGS, num_crops=num_views - 1)
    if num_views == 1:
        settings["crop_mode"] = "none"
    return {
        "model": "small",
        "checkpoint": "none",
        "step": 0,
        "test_settings": settings,
        "fusion": FUSION,
        "num_views": num_views,
    }
