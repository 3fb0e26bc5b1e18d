"""Decoder sub-layers: official parameter names and order, seeded init unchanged."""

from __future__ import annotations

import pytest
import torch

from cropformer.model.layers import CrossAttentionLayer, FFNLayer, SelfAttentionLayer

ATTN = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias"]


@pytest.mark.parametrize(
    ("cls", "args", "first"),
    [
        (SelfAttentionLayer, (16, 4), ATTN),
        (CrossAttentionLayer, (16, 4), ATTN),
        (FFNLayer, (16, 32), ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]),
    ],
)
def test_parameter_order_is_the_official_one(cls, args, first) -> None:
    """Attention / linears before ``norm`` (official registration order): the state-dict and
    optimizer-state order of checkpoints saved by earlier versions stay valid."""
    torch.manual_seed(0)
    layer = cls(*args)
    assert [n for n, _ in layer.named_parameters()] == [*first, "norm.weight", "norm.bias"]
    assert list(layer.state_dict()) == [*first, "norm.weight", "norm.bias"]
    # the LayerNorm starts as identity and the matrices are xavier-initialised from the seed
    torch.testing.assert_close(layer.norm.weight, torch.ones(16), rtol=0, atol=0)
    torch.manual_seed(0)
    again = cls(*args)
    for a, b in zip(layer.parameters(), again.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
