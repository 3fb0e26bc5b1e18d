"""Peer reference: our deformable-attention core equals transformers' Mask2Former one."""

from __future__ import annotations

import pytest
import torch

from cropformer.model.ms_deform_attn import ms_deform_attn_core

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_core_equals_transformers(seed: int) -> None:
    mask2former = pytest.importorskip("transformers.models.mask2former.modeling_mask2former")
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 10), (4, 5), (2, 3)]
    n, lq, m, d, p = 2, 17, 8, 4, 4
    value = torch.randn(n, sum(h * w for h, w in shapes), m, d, generator=g)
    loc = torch.rand(n, lq, m, len(shapes), p, 2, generator=g) * 1.2 - 0.1
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g).softmax(-1)
    ours = ms_deform_attn_core(value, shapes, loc, weights)
    theirs = mask2former.multi_scale_deformable_attention(value, shapes, loc, weights)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
