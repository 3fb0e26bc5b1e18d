"""Pixel-decoder options: autocast allowed (force_fp32=False) and gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from cropformer.model.pixel_decoder import MSDeformAttnPixelDecoder

CHANNELS = [8, 16, 32, 64]


def _decoder(**kwargs: object) -> MSDeformAttnPixelDecoder:
    torch.manual_seed(0)
    return MSDeformAttnPixelDecoder(
        in_channels=CHANNELS, conv_dim=32, mask_dim=32, num_encoder_layers=2, num_heads=4, **kwargs
    )


def _features(requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [
        torch.randn(2, c, 32 // s, 48 // s, generator=g).requires_grad_(requires_grad)
        for c, s in zip(CHANNELS, [1, 2, 4, 8])
    ]


def test_force_fp32_false_runs_under_bf16_autocast() -> None:
    dec = _decoder(force_fp32=False).eval()
    feats = _features()
    with torch.no_grad():
        ref, _ = dec(feats)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, multi_scale = dec(feats)
    assert low.dtype == torch.bfloat16
    assert all(f.dtype == torch.bfloat16 for f in multi_scale)
    # bf16 keeps ~3 significant digits; the features are O(1)
    err = (low.float() - ref).abs().max().item()
    assert 0 < err < 0.15 * ref.abs().max().item()


def test_grad_checkpointing_gives_the_same_values_and_gradients() -> None:
    grads = []
    outs = []
    for checkpointing in (False, True):
        dec = _decoder(grad_checkpointing=checkpointing).train()
        feats = _features(requires_grad=True)
        mask_features, multi_scale = dec(feats)
        loss = mask_features.square().mean() + sum(f.mean() for f in multi_scale)
        loss.backward()
        outs.append(mask_features.detach())
        grads.append(
            [p.grad.clone() for p in dec.parameters() if p.grad is not None]
            + [f.grad.clone() for f in feats if f.grad is not None]
        )
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    assert len(grads[0]) == len(grads[1]) > 10
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_msda_impl_choices_agree_and_bad_values_are_rejected() -> None:
    feats = _features()
    outs = []
    for impl in ("gather", "grid_sample"):
        dec = _decoder(msda_impl=impl).eval()
        assert all(layer.attn.impl == impl for layer in dec.encoder_layers)
        with torch.no_grad():
            outs.append(dec(feats)[0])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="impl='cuda_kernel'"):
        _decoder(msda_impl="cuda_kernel")
