"""Small builders shared by the model tests (tiny widths, CPU, seeded)."""

from __future__ import annotations

import torch

from cropformer.model.association import QueryAssociation
from cropformer.model.backbone import TimmBackbone
from cropformer.model.cropformer import CropFormer
from cropformer.model.decoder import MaskedAttentionDecoder
from cropformer.model.pixel_decoder import MSDeformAttnPixelDecoder

HIDDEN = 32


def tiny_swin() -> TimmBackbone:
    """A 4-stage Swin with width 8 (the official windowing path)."""
    return TimmBackbone(
        model_name="swin_tiny_patch4_window7_224",
        out_norm=True,
        model_kwargs={"embed_dim": 8, "depths": (2, 2, 2, 2), "num_heads": (1, 1, 2, 2)},
    )


def build_net(
    association: bool = True, view_code: str = "official", queries: int = 6
) -> CropFormer:
    """A very small CropFormer (or Mask2Former without association)."""
    torch.manual_seed(0)
    backbone = tiny_swin()
    pixel_decoder = MSDeformAttnPixelDecoder(
        in_channels=backbone.channels,
        in_strides=backbone.strides,
        conv_dim=HIDDEN,
        mask_dim=HIDDEN,
        num_encoder_layers=1,
        num_heads=4,
        ffn_dim=64,
    )
    decoder = MaskedAttentionDecoder(
        in_channels=HIDDEN,
        hidden_dim=HIDDEN,
        num_queries=queries,
        num_heads=4,
        ffn_dim=64,
        num_layers=3,
        mask_dim=HIDDEN,
        view_code=view_code,  # type: ignore[arg-type]
    )
    assoc = QueryAssociation(dim=HIDDEN, num_heads=4, ffn_dim=64) if association else None
    return CropFormer(
        backbone=backbone, pixel_decoder=pixel_decoder, decoder=decoder, association=assoc
    )
