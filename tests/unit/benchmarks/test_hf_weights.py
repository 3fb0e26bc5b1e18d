"""Weight converter of benchmark row 2: ours (Mask2Former mode) -> transformers' Mask2Former.

A tiny Swin Mask2Former on both sides; after the copy both compute the same class and mask
logits (fp32, eval). Needs transformers (marked parity).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.parity

BENCH = Path(__file__).resolve().parents[3] / "scripts" / "benchmarks"
sys.path.insert(0, str(BENCH))

transformers = pytest.importorskip("transformers")

from hf_weights import copy_ours_to_hf, hf_state_dict  # noqa: E402

from cropformer.model.association import QueryAssociation  # noqa: E402
from cropformer.model.backbone import TimmBackbone  # noqa: E402
from cropformer.model.cropformer import CropFormer  # noqa: E402
from cropformer.model.decoder import MaskedAttentionDecoder  # noqa: E402
from cropformer.model.pixel_decoder import MSDeformAttnPixelDecoder  # noqa: E402

EMBED, DIM, HEADS, QUERIES, LAYERS = 32, 64, 4, 10, 3
DEPTHS, SWIN_HEADS = (2, 2, 2, 2), (1, 2, 2, 4)


def _ours(association: bool = False) -> CropFormer:
    torch.manual_seed(0)
    backbone = TimmBackbone(
        model_name="swin_tiny_patch4_window7_224",
        out_norm=True,
        model_kwargs={"embed_dim": EMBED, "depths": DEPTHS, "num_heads": SWIN_HEADS},
    )
    pixel_decoder = MSDeformAttnPixelDecoder(
        in_channels=backbone.channels,
        conv_dim=DIM,
        mask_dim=DIM,
        num_encoder_layers=2,
        num_heads=HEADS,
    )
    decoder = MaskedAttentionDecoder(
        in_channels=DIM,
        hidden_dim=DIM,
        num_queries=QUERIES,
        num_heads=HEADS,
        ffn_dim=128,
        num_layers=LAYERS,
        mask_dim=DIM,
    )
    assoc = QueryAssociation(dim=DIM, num_heads=HEADS, ffn_dim=128) if association else None
    return CropFormer(
        backbone=backbone, pixel_decoder=pixel_decoder, decoder=decoder, association=assoc
    ).eval()


def _hf(num_queries: int = QUERIES) -> Any:
    swin = transformers.SwinConfig(
        embed_dim=EMBED,
        depths=list(DEPTHS),
        num_heads=list(SWIN_HEADS),
        window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    cfg = transformers.Mask2FormerConfig(
        backbone_config=swin,
        num_queries=num_queries,
        decoder_layers=LAYERS + 1,
        encoder_layers=2,
        hidden_dim=DIM,
        feature_size=DIM,
        mask_feature_size=DIM,
        encoder_feedforward_dim=1024,
        dim_feedforward=128,
        num_attention_heads=HEADS,
        dropout=0.0,
        num_labels=1,
    )
    torch.manual_seed(1)
    return transformers.Mask2FormerForUniversalSegmentation(cfg).eval()


def _image(h: int, w: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (1, 3, h, w), generator=g, dtype=torch.uint8)


def _max_diffs(net: CropFormer, hf: Any, img: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        ours = net(img, num_views=1)["image_level"]
        ref = hf(pixel_values=net.normalize(img))  # the same normalised, /32-padded tensor
    assert ref.masks_queries_logits.shape == ours["pred_masks"].shape
    d_cls = (ref.class_queries_logits - ours["pred_logits"]).abs().max().item()
    d_mask = (ref.masks_queries_logits - ours["pred_masks"]).abs().max().item()
    return d_cls, d_mask


@pytest.mark.parametrize("size", [(64, 96), (70, 100)])  # /32 and padded by our net
def test_converted_outputs_equal(size: tuple[int, int]) -> None:
    net, hf = _ours(), _hf()
    before = _max_diffs(net, hf, _image(*size))
    copy_ours_to_hf(net, hf)
    d_cls, d_mask = _max_diffs(net, hf, _image(*size))
    assert before[1] > 1e-2  # the models differed before the copy
    assert d_cls < 1e-4 and d_mask < 1e-4, (d_cls, d_mask)


def test_patch_merging_order_matters() -> None:
    """Negative control: swapping two merged sub-grids breaks the equality (order is checked)."""
    net, hf = _ours(), _hf()
    copy_ours_to_hf(net, hf)
    merge = hf.model.pixel_level_module.encoder.swin.encoder.layers[0].downsample
    c = EMBED
    perm = torch.cat([torch.arange(c), torch.arange(2 * c, 3 * c), torch.arange(c, 2 * c)])
    perm = torch.cat([perm, torch.arange(3 * c, 4 * c)])
    with torch.no_grad():
        merge.reduction.weight.copy_(merge.reduction.weight[:, perm].clone())
        merge.norm.weight.copy_(merge.norm.weight[perm].clone())
        merge.norm.bias.copy_(merge.norm.bias[perm].clone())
    assert _max_diffs(net, hf, _image(64, 96))[1] > 1e-2


def test_every_tensor_is_mapped() -> None:
    net = _ours()
    sd = hf_state_dict(net)
    n_ours = sum(
        v.numel() for k, v in net.state_dict().items() if "relative_position_index" not in k
    )
    assert sum(v.numel() for v in sd.values()) == n_ours


def test_cropformer_is_rejected() -> None:
    with pytest.raises(ValueError, match="association"):
        hf_state_dict(_ours(association=True))


def test_mismatched_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        copy_ours_to_hf(_ours(), _hf(num_queries=QUERIES + 1))
