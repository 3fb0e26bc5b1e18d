"""Association module: output per image, invariant to the order of the crop views."""

from __future__ import annotations

import pytest
import torch

from cropformer.model.association import QueryAssociation


def test_shape_and_crop_permutation_invariance() -> None:
    torch.manual_seed(0)
    assoc = QueryAssociation(dim=16, num_heads=4, ffn_dim=32).eval()
    b, t, q = 2, 5, 7
    states = torch.randn(b * t, q, 16)
    pos = torch.randn(q, 16)
    out = assoc(states, pos, num_views=t)
    assert out.shape == (b, q, 16)
    perm = torch.tensor([0, 3, 1, 4, 2])  # full view stays first, crops shuffled
    shuffled = states.view(b, t, q, 16)[:, perm].reshape(b * t, q, 16)
    torch.testing.assert_close(assoc(shuffled, pos, num_views=t), out, atol=1e-6, rtol=0)
    # the full view is special: it is the initial query set
    swapped = states.view(b, t, q, 16)[:, torch.tensor([1, 0, 2, 3, 4])].reshape(b * t, q, 16)
    assert not torch.allclose(assoc(swapped, pos, num_views=t), out)


def test_rejects_bad_view_count() -> None:
    assoc = QueryAssociation(dim=16, num_heads=4, ffn_dim=32)
    with pytest.raises(ValueError, match="num_views"):
        assoc(torch.randn(5, 3, 16), torch.randn(3, 16), num_views=2)
