"""Masked-attention decoder: shapes of both passes, shared path, view code, masking rule."""

from __future__ import annotations

import math

import pytest
import torch

from cropformer.model.decoder import MaskedAttentionDecoder
from cropformer.model.position_encoding import sine_position_2d, view_position_code

C = 32


def _decoder(view_code: str = "official") -> MaskedAttentionDecoder:
    torch.manual_seed(0)
    return MaskedAttentionDecoder(
        in_channels=C,
        hidden_dim=C,
        num_queries=5,
        num_heads=4,
        ffn_dim=48,
        num_layers=4,
        mask_dim=C,
        view_code=view_code,  # type: ignore[arg-type]
    ).eval()


def _features(n: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(n, C, h, w, generator=g) for h, w in ((2, 3), (4, 6), (8, 12))]
    return feats, torch.randn(n, C, 16, 24, generator=g)


@pytest.mark.parametrize("num_views", [1, 2, 5])
def test_shapes_of_both_passes(num_views: int) -> None:
    dec = _decoder()
    b = 2
    feats, mask_features = _features(b * num_views)
    image, states = dec.forward_image_level(feats, mask_features)
    assert image["pred_logits"].shape == (b * num_views, 5, 2)
    assert image["pred_masks"].shape == (b * num_views, 5, 16, 24)
    assert len(image["aux_outputs"]) == 4
    assert states.shape == (b * num_views, 5, C)
    batch = dec.forward_batch_level(states[::num_views], feats, mask_features, num_views)
    assert batch["pred_logits"].shape == (b, 5, 2)
    assert batch["pred_masks"].shape == (b, 5, num_views, 16, 24)
    assert [a["pred_masks"].shape for a in batch["aux_outputs"]] == [(b, 5, num_views, 16, 24)] * 4


def test_batch_level_with_one_view_and_no_view_code_equals_image_level() -> None:
    dec = _decoder(view_code="none")
    feats, mask_features = _features(3)
    with torch.no_grad():
        image, _ = dec.forward_image_level(feats, mask_features)
        queries = dec.query_feat.weight[None].expand(3, -1, -1)
        batch = dec.forward_batch_level(queries, feats, mask_features, num_views=1)
    torch.testing.assert_close(batch["pred_logits"], image["pred_logits"], atol=1e-6, rtol=0)
    torch.testing.assert_close(batch["pred_masks"][:, :, 0], image["pred_masks"], atol=1e-5, rtol=0)
    for a, b in zip(batch["aux_outputs"], image["aux_outputs"]):
        torch.testing.assert_close(a["pred_masks"][:, :, 0], b["pred_masks"], atol=1e-5, rtol=0)


def test_view_code_modes() -> None:
    official = view_position_code(2, 8)
    # official: view k has phase k / T * 2 pi -> full view (k=1) at pi for T=2, 0.4 pi for T=5
    assert official[0, 0].item() == pytest.approx(math.sin(math.pi), abs=1e-5)
    assert official[0, 1].item() == pytest.approx(-1.0, abs=1e-5)
    five = view_position_code(5, 8)
    assert five[0, :2].tolist() == pytest.approx([0.951057, 0.309017], abs=1e-5)
    fixed = view_position_code(2, 8, normalize_by=5)
    torch.testing.assert_close(fixed, five[:2])  # same code for a view index at any T
    feats, mask_features = _features(4)
    q = torch.randn(2, 5, C)
    outs = {}
    for mode in ("official", "fixed", "none"):
        dec = _decoder(view_code=mode)
        with torch.no_grad():
            outs[mode] = dec.forward_batch_level(q, feats, mask_features, 2)["pred_masks"]
    assert not torch.allclose(outs["official"], outs["fixed"])
    assert not torch.allclose(outs["official"], outs["none"])
    with pytest.raises(ValueError, match="view_code"):
        _decoder(view_code="sometimes")


def test_sine_position_2d_layout() -> None:
    pos = sine_position_2d(3, 4, 8)
    assert pos.shape == (16, 3, 4)
    # channel 0: sin of the y phase (row + 1) / h * 2 pi, constant along x
    expected = torch.sin(torch.arange(1, 4) / (3 + 1e-6) * 2 * math.pi)
    torch.testing.assert_close(pos[0, :, 0], expected.float())
    torch.testing.assert_close(pos[0], pos[0, :, :1].expand(3, 4))
    torch.testing.assert_close(
        pos[9], torch.cos(torch.arange(1, 5) / (4 + 1e-6) * 2 * math.pi).float()[None].expand(3, 4)
    )


def _run_with_attention_mask(dec, feats, mask_features, make_mask):
    """Image-level pass with the heads' attention masks replaced by ``make_mask(shape)``."""
    heads = dec._heads

    def patched(x, mf, size):
        cls, mask, attn = heads(x, mf, size)
        return cls, mask, make_mask(attn.shape)

    dec._heads = patched
    try:
        with torch.no_grad():
            return dec.forward_image_level(feats, mask_features)[0]
    finally:
        del dec._heads


def test_fully_masked_rows_attend_everywhere() -> None:
    # official rule: a query whose every position is blocked attends as if it had no mask
    dec = _decoder()
    feats, mask_features = _features(2)
    heads = dec.num_heads
    g = torch.Generator().manual_seed(3)
    base = None

    def pattern(shape, blocked_rows):
        nonlocal base
        if base is None or base.shape != shape:
            base = torch.rand(shape, generator=g) < 0.6  # a live partial mask on every row
        m = base.clone().view(-1, heads, *shape[1:])
        for q, value in blocked_rows.items():
            m[:, :, q] = value
        return m.view(shape)

    # queries 0 and 3: every position blocked vs no mask at all; others keep the same mask
    blocked = _run_with_attention_mask(
        dec, feats, mask_features, lambda s: pattern(s, {0: True, 3: True})
    )
    base = None
    g.manual_seed(3)
    unmasked = _run_with_attention_mask(
        dec, feats, mask_features, lambda s: pattern(s, {0: False, 3: False})
    )
    torch.testing.assert_close(blocked["pred_logits"], unmasked["pred_logits"], atol=1e-6, rtol=0)
    torch.testing.assert_close(blocked["pred_masks"], unmasked["pred_masks"], atol=1e-5, rtol=0)
    # the partial masks of the other rows are live: dropping them changes the output
    none = _run_with_attention_mask(
        dec, feats, mask_features, lambda s: torch.zeros(s, dtype=torch.bool)
    )
    assert not torch.allclose(blocked["pred_masks"], none["pred_masks"], atol=1e-3)

    # and the heads' own masks: mask logits so negative that every row is blocked -> same
    # result as running without any attention mask
    mask_features = torch.full((2, C, 16, 24), -50.0)
    with torch.no_grad():
        dec.mask_head.layers[-1].bias.fill_(10.0)
        dec.mask_head.layers[-1].weight.zero_()
        out, _ = dec.forward_image_level(feats, mask_features)
    free = _run_with_attention_mask(
        dec, feats, mask_features, lambda s: torch.zeros(s, dtype=torch.bool)
    )
    assert torch.isfinite(out["pred_masks"]).all()
    torch.testing.assert_close(out["pred_logits"], free["pred_logits"], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["pred_masks"], free["pred_masks"], atol=1e-5, rtol=0)


def test_batch_level_rejects_bad_view_count() -> None:
    dec = _decoder()
    feats, mask_features = _features(3)
    with pytest.raises(ValueError, match="num_views"):
        dec.forward_batch_level(torch.randn(1, 5, C), feats, mask_features, 2)
    with pytest.raises(ValueError, match="feature levels"):
        dec.forward_image_level(feats[:2], mask_features)


def test_pre_norm_variant_runs_and_differs() -> None:
    torch.manual_seed(0)
    pre = MaskedAttentionDecoder(
        in_channels=C,
        hidden_dim=C,
        num_queries=5,
        num_heads=4,
        ffn_dim=48,
        num_layers=3,
        mask_dim=C,
        pre_norm=True,
    ).eval()
    post = _decoder()
    post_state = {k: v for k, v in post.state_dict().items() if ".3." not in k}
    pre.load_state_dict(post_state)
    feats, mask_features = _features(2)
    with torch.no_grad():
        a = pre(feats, mask_features)["pred_masks"]
        b = post(feats, mask_features)["pred_masks"]
    assert a.shape == b.shape == (2, 5, 16, 24)
    assert not torch.allclose(a, b)


def test_input_projection_when_widths_differ() -> None:
    dec = MaskedAttentionDecoder(
        in_channels=16,
        hidden_dim=C,
        num_queries=5,
        num_heads=4,
        ffn_dim=48,
        num_layers=3,
        mask_dim=C,
    ).eval()
    assert all(isinstance(p, torch.nn.Conv2d) for p in dec.input_proj)
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 16, h, w, generator=g) for h, w in ((2, 3), (4, 6), (8, 12))]
    out = dec(feats, torch.randn(1, C, 16, 24, generator=g))
    assert out["pred_masks"].shape == (1, 5, 16, 24)
