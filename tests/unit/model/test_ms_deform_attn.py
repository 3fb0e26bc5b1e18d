"""Deformable attention: the grid_sample core against a direct per-point bilinear reference,
and the gather core against the grid_sample core (outputs, gradients, dtypes)."""

from __future__ import annotations

import pytest
import torch

from cropformer.model.ms_deform_attn import (
    MSDeformAttn,
    ms_deform_attn_core,
    ms_deform_attn_core_gather,
)
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
    dec = MSDeformAttnPixelDecoder(
        in_channels=[8, 16, 32, 64], conv_dim=32, mask_dim=32, num_encoder_layers=1
    )
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
        MSDeformAttnPixelDecoder(in_channels=[8, 16, 32, 64], conv_dim=48)
    with pytest.raises(ValueError, match="increasing"):
        MSDeformAttnPixelDecoder(in_channels=[8, 16, 32, 64], in_strides=[32, 16, 8, 4])
    with pytest.raises(ValueError, match="differ in length"):
        MSDeformAttnPixelDecoder(in_channels=[8, 16, 32], in_strides=[4, 8, 16, 32])
    dec = MSDeformAttnPixelDecoder(
        in_channels=[8, 16, 32, 64], conv_dim=32, mask_dim=32, num_encoder_layers=1
    )
    with pytest.raises(ValueError, match="feature maps"):
        dec([torch.randn(1, 8, 8, 8)])


# ---------------------------------------------------------------- gather core vs grid_sample core

# fp32: both cores sum the same L*P*4 products in different orders
FP32_TOL = {"rtol": 1e-5, "atol": 2e-6}


def _gather_case(dtype=torch.float32, seed=0, n=2, lq=7, m=3, d=5, p=3):
    """Random inputs over 3 levels with odd sizes; ~1/4 of the points lie outside the map."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 7), (3, 1), (1, 4)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g, dtype=dtype)
    loc = torch.rand(n, lq, m, len(shapes), p, 2, generator=g, dtype=dtype) * 1.6 - 0.3
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g, dtype=dtype)
    return value, shapes, loc, weights


def _forward_backward(core, value, shapes, loc, weights, grad_out):
    leaves = [t.detach().clone().requires_grad_(True) for t in (value, loc, weights)]
    out = core(leaves[0], shapes, leaves[1], leaves[2])
    out.backward(grad_out)
    return (out.detach(), *(t.grad for t in leaves))


def test_gather_forward_equals_grid_sample_random_points() -> None:
    value, shapes, loc, weights = _gather_case()
    torch.testing.assert_close(
        ms_deform_attn_core_gather(value, shapes, loc, weights),
        ms_deform_attn_core(value, shapes, loc, weights),
        **FP32_TOL,
    )


def test_gather_forward_equals_grid_sample_on_pixel_centres_and_edges() -> None:
    value, shapes, loc, weights = _gather_case(dtype=torch.float64)
    n, lq, m, num_levels, p, _ = loc.shape
    gen = torch.Generator().manual_seed(5)
    # pixel centres (k + 0.5) / size, integer pixel coordinates (pixel edges) k / size, the
    # map borders 0 and 1, and points just / far outside
    for level, (h, w) in enumerate(shapes):
        size = torch.tensor([w, h], dtype=torch.float64)
        k = torch.randint(-1, max(h, w) + 2, (n, lq, m, p, 2), generator=gen)
        shift = torch.tensor([0.5, 0.0], dtype=torch.float64)[torch.arange(lq) % 2]
        loc[:, :, :, level] = (k + shift[None, :, None, None, None]) / size
    loc[0, 0, 0, 0, 0] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    loc[0, 0, 0, 0, 1] = torch.tensor([-1e-9, 5.0], dtype=torch.float64)
    loc[0, 0, 0, 0, 2] = torch.tensor([1e6, -1e6], dtype=torch.float64)
    out = ms_deform_attn_core_gather(value, shapes, loc, weights)
    torch.testing.assert_close(out, ms_deform_attn_core(value, shapes, loc, weights))
    # on the kinks of the bilinear interpolation the location gradient is one-sided: the
    # gather core rounds coordinates as grid_sample does, so it takes the same side (fp32)
    value, loc, weights = value.float(), loc.float(), weights.float()
    grad_out = torch.randn(n, lq, m * value.shape[-1], generator=gen)
    ours = _forward_backward(ms_deform_attn_core_gather, value, shapes, loc, weights, grad_out)
    ref = _forward_backward(ms_deform_attn_core, value, shapes, loc, weights, grad_out)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5)


def test_gather_gradients_equal_grid_sample() -> None:
    value, shapes, loc, weights = _gather_case(seed=1)
    grad_out = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3])
    ours = _forward_backward(ms_deform_attn_core_gather, value, shapes, loc, weights, grad_out)
    ref = _forward_backward(ms_deform_attn_core, value, shapes, loc, weights, grad_out)
    for name, a, b in zip(("out", "value", "locations", "weights"), ours, ref):
        # location gradients scale with the map size (d pixel / d location = w or h)
        tol = {"rtol": 1e-5, "atol": 2e-5} if name == "locations" else FP32_TOL
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"{name}: {m}")


def test_gather_gradients_when_only_some_inputs_require_grad() -> None:
    value, shapes, loc, weights = _gather_case(seed=2)
    grad_out = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3])
    ref = _forward_backward(ms_deform_attn_core, value, shapes, loc, weights, grad_out)
    for i in range(3):
        inputs = [value, loc, weights]
        inputs[i] = inputs[i].clone().requires_grad_(True)
        out = ms_deform_attn_core_gather(inputs[0], shapes, inputs[1], inputs[2])
        out.backward(grad_out)
        torch.testing.assert_close(inputs[i].grad, ref[1 + i], rtol=1e-5, atol=2e-5)


def test_gather_passes_gradcheck_float64() -> None:
    value, shapes, loc, weights = _gather_case(dtype=torch.float64, n=1, lq=3, m=2, d=2, p=2)
    inputs = tuple(t.requires_grad_(True) for t in (value, loc, weights))
    assert torch.autograd.gradcheck(
        lambda v, lo, wt: ms_deform_attn_core_gather(v, shapes, lo, wt), inputs, eps=1e-6
    )


def test_gather_bfloat16_close_to_float32() -> None:
    value, shapes, loc, weights = _gather_case(seed=3)
    grad_out = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3])
    half = [t.bfloat16() for t in (value, loc, weights)]
    out16, gv16, gl16, ga16 = _forward_backward(
        ms_deform_attn_core_gather, half[0], shapes, half[1], half[2], grad_out.bfloat16()
    )
    assert out16.dtype == gv16.dtype == gl16.dtype == ga16.dtype == torch.bfloat16
    # reference: fp32 on the same (bf16-rounded) inputs; bf16 keeps ~3 significant digits
    out32, gv32, _, ga32 = _forward_backward(
        ms_deform_attn_core_gather,
        half[0].float(),
        shapes,
        half[1].float(),
        half[2].float(),
        grad_out.bfloat16().float(),
    )
    torch.testing.assert_close(out16.float(), out32, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gv16.float(), gv32, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(ga16.float(), ga32, rtol=2e-2, atol=2e-2)


def test_gather_no_grad_path_matches_autograd_path() -> None:
    value, shapes, loc, weights = _gather_case(seed=4)
    with torch.no_grad():
        fast = ms_deform_attn_core_gather(value.requires_grad_(True), shapes, loc, weights)
    assert fast.grad_fn is None
    out = ms_deform_attn_core_gather(value, shapes, loc, weights)
    assert out.grad_fn is not None
    torch.testing.assert_close(fast, out.detach(), rtol=0, atol=0)


def test_gather_rejects_inconsistent_shapes() -> None:
    value, shapes, loc, weights = _gather_case()
    with pytest.raises(ValueError, match="tokens"):
        ms_deform_attn_core_gather(value, [(5, 7), (3, 1), (1, 3)], loc, weights)
    with pytest.raises(ValueError, match="levels"):
        ms_deform_attn_core_gather(value, [(5, 7)], loc, weights)


def test_module_rejects_unknown_impl() -> None:
    with pytest.raises(ValueError, match="impl='cuda'.*gather.*grid_sample"):
        MSDeformAttn(dim=16, num_levels=2, num_heads=4, num_points=3, impl="cuda")


def test_module_impls_agree_with_same_weights() -> None:
    torch.manual_seed(0)
    ref = MSDeformAttn(dim=16, num_levels=2, num_heads=4, num_points=3, impl="grid_sample")
    ours = MSDeformAttn(dim=16, num_levels=2, num_heads=4, num_points=3, impl="gather")
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():  # non-trivial offsets and attention
        for lin in (ref.sampling_offsets, ref.attention_weights):
            lin.weight.normal_(0, 0.5)
        ours.load_state_dict(ref.state_dict())
    shapes = [(6, 5), (3, 3)]
    s = sum(h * w for h, w in shapes)
    query = torch.randn(2, 11, 16)
    value_in = torch.randn(2, s, 16)
    refs = torch.rand(2, 11, 2, 2)
    mask = torch.zeros(2, s, dtype=torch.bool)
    mask[1, -4:] = True
    outs, grads = [], []
    for mod in (ref, ours):
        mod.zero_grad()
        out = mod(query, refs, value_in, shapes, mask)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(torch.cat([q.grad.flatten() for q in mod.parameters()]))
    torch.testing.assert_close(outs[1], outs[0], **FP32_TOL)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


def test_gather_non_finite_points_give_nan_like_grid_sample() -> None:
    """A diverging run (NaN/inf offsets) must produce NaN outputs for the NaN policy, not an
    out-of-range index error, and leave the other queries exact."""
    g = torch.Generator().manual_seed(3)
    shapes = [(4, 5), (2, 3)]
    value = torch.randn(1, 26, 2, 4, generator=g)
    loc = torch.rand(1, 7, 2, 2, 3, 2, generator=g)
    weights = torch.rand(1, 7, 2, 2, 3, generator=g)
    loc[0, 0, 0, 0, 0, 0] = float("nan")
    loc[0, 1, 0, 0, 0, 1] = float("inf")
    loc[0, 2, 1, 1, 2, 0] = -float("inf")
    weights[0, 3, 0, 0, 0] = float("nan")
    ref = ms_deform_attn_core(value, shapes, loc, weights)
    out = ms_deform_attn_core_gather(value, shapes, loc, weights)
    assert torch.equal(torch.isnan(out).any(-1), torch.isnan(ref).any(-1))
    assert torch.isnan(out[0, :4]).any(-1).all()
    torch.testing.assert_close(out[0, 4:], ref[0, 4:], rtol=1e-5, atol=1e-6)
    value.requires_grad_(True)
    ms_deform_attn_core_gather(value, shapes, loc, weights).sum().backward()
    assert value.grad is not None and torch.isnan(value.grad).any()


def test_gather_backward_gpu_dot_path_equals_cpu_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gather + bmm corner dot products (the non-CPU path, small chunks) give the same
    gradients as the sparse CPU path."""
    import functools

    import cropformer.model.ms_deform_attn as msda

    value, shapes, loc, weights = _gather_case(seed=6)
    grad_out = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3])
    ref = _forward_backward(ms_deform_attn_core_gather, value, shapes, loc, weights, grad_out)
    monkeypatch.setattr(msda, "_corner_dots", functools.partial(msda._corner_dots, sparse=False))
    monkeypatch.setattr(msda, "_CHUNK_BYTES", 2048)  # several chunks in every loop
    ours = _forward_backward(ms_deform_attn_core_gather, value, shapes, loc, weights, grad_out)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6)
