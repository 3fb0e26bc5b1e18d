"""Deformable attention: the grid_sample core against a direct per-point bilinear reference."""

from __future__ import annotations

import pytest
import torch

from cropformer.model.ms_deform_attn import MSDeformAttn, ms_deform_attn_core
from cropformer.model.pixel_decoder import MSDeformAttnPixelDecoder


def _bilinear(value: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample value (D, h, w) at normalised (x, y) like grid_sample(align_corners=False, zeros)."""
    _, h, w = value.shape
    px, py = x * w - 0.5, y * h - 0.5  # pixel-centre coordinates
    x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
    out = torch.zeros(value.shape[0], dtype=value.dtype)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
                weight = (1 - abs(px - xx)) * (1 - abs(py - yy))
                out = out + weight * value[:, yy, xx]
    return out


def _random_inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (2, 3)]
    n, lq, m, d, p = 2, 5, 2, 3, 2
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g, dtype=dtype)
    # include points outside [0, 1] (zero padding) and on the border
    loc = torch.rand(n, lq, m, len(shapes), p, 2, generator=g, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g, dtype=dtype).softmax(-1)
    return value, shapes, loc, weights


def test_core_equals_direct_bilinear_reference() -> None:
    value, shapes, loc, weights = _random_inputs()
    out = ms_deform_attn_core(value, shapes, loc, weights)
    n, s, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = loc.shape
    starts = [0, shapes[0][0] * shapes[0][1]]
    ref = torch.zeros(n, lq, m * d, dtype=value.dtype)
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                acc = torch.zeros(d, dtype=value.dtype)
                for level, (h, w) in enumerate(shapes):
                    v = value[b, starts[level] : starts[level] + h * w, head].T.reshape(d, h, w)
                    for pt in range(num_points):
                        x, y = loc[b, q, head, level, pt].tolist()
                        acc += weights[b, q, head, level, pt] * _bilinear(v, x, y)
                ref[b, q, head * d : (head + 1) * d] = acc
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


def test_core_passes_gradcheck() -> None:
    value, shapes, loc, weights = _random_inputs()
    # keep points away from pixel centres' kinks for a smooth numerical derivative
    loc = loc.detach().requires_grad_(True)
    value = value.detach().requires_grad_(True)
    weights = weights.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, lo, wt: ms_deform_attn_core(v, shapes, lo, wt), (value, loc, weights), eps=1e-6
    )


def test_core_rejects_inconsistent_shapes() -> None:
    value, shapes, loc, weights = _random_inputs()
    with pytest.raises(ValueError, match="tokens"):
        ms_deform_attn_core(value, [(3, 4), (2, 2)], loc, weights)
    with pytest.raises(ValueError, match="levels"):
        ms_deform_attn_core(value, [(3, 4)], loc, weights)


def test_module_initial_offsets_ring() -> None:
    attn = MSDeformAttn(dim=16, num_levels=2, num_heads=4, num_points=3)
    bias = attn.sampling_offsets.bias.view(4, 2, 3, 2)
    # head 0 points along +x at distances 1, 2, 3 on every level
    torch.testing.assert_close(bias[0, 1, :, 0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(bias[0, 1, :, 1], torch.zeros(3), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(dim=10, num_heads=4)


def test_pixel_decoder_stays_fp32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    dec = MSDeformAttnPixelDecoder([8, 16, 32, 64], conv_dim=32, mask_dim=32, num_encoder_layers=1)
    feats = [
        torch.randn(2, c, 32 // s, 32 // s).bfloat16()
        for c, s in zip([8, 16, 32, 64], [1, 2, 4, 8])
    ]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mask_features, multi_scale = dec(feats)
    assert mask_features.dtype == torch.float32
    assert all(f.dtype == torch.float32 for f in multi_scale)
    ref_mask, _ = dec([f.float() for f in feats])
    torch.testing.assert_close(mask_features, ref_mask)
    assert [tuple(f.shape[-2:]) for f in multi_scale] == [(4, 4), (8, 8), (16, 16)]


def test_pixel_decoder_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="multiple of num_groups"):
        MSDeformAttnPixelDecoder([8, 16, 32, 64], conv_dim=48)
    with pytest.raises(ValueError, match="increasing"):
        MSDeformAttnPixelDecoder([8, 16, 32, 64], in_strides=[32, 16, 8, 4])
    with pytest.raises(ValueError, match="differ in length"):
        MSDeformAttnPixelDecoder([8, 16, 32], in_strides=[4, 8, 16, 32])
    dec = MSDeformAttnPixelDecoder([8, 16, 32, 64], conv_dim=32, mask_dim=32, num_encoder_layers=1)
    with pytest.raises(ValueError, match="feature maps"):
        dec([torch.randn(1, 8, 8, 8)])
