"""The association module (official ``Make3dQueries``): builds each image's batch-level queries
from the image-level query states of all its views (reference doc section 2.5)."""

from __future__ import annotations

from torch import Tensor, nn

from cropformer.model.layers import CrossAttentionLayer, FFNLayer, SelfAttentionLayer


class QueryAssociation(nn.Module):
    """Cross-attention from the full view's query states to those of all T views, then
    self-attention and an FFN (``num_layers`` times; official 1).

    The memory is ordered query-major, view-minor and carries the query positional embedding of
    its query index (no view-index code); the self-attention uses no positional term.

    Args:
        dim: width (the decoder's hidden_dim).
        num_heads: attention heads.
        ffn_dim: FFN width (official 2048).
        num_layers: layers (official 1).
        pre_norm: pre-norm layers instead of the official post-norm.
        dropout: dropout (official 0).
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        num_layers: int = 1,
        pre_norm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.cross_attn_layers = nn.ModuleList(
            CrossAttentionLayer(dim, num_heads, dropout, pre_norm) for _ in range(num_layers)
        )
        self.self_attn_layers = nn.ModuleList(
            SelfAttentionLayer(dim, num_heads, dropout, pre_norm) for _ in range(num_layers)
        )
        self.ffn_layers = nn.ModuleList(
            FFNLayer(dim, ffn_dim, dropout, pre_norm) for _ in range(num_layers)
        )

    def forward(self, query_states: Tensor, query_pos: Tensor, num_views: int) -> Tensor:
        """Associate the views' queries into one query set per image.

        Shape:
            query_states: (N, Q, C), N = B*T views image-major (full view first in each image).
            query_pos: (Q, C) the decoder's query positional embedding.
            returns (B, Q, C).
        """
        n, q, c = query_states.shape
        if n % num_views != 0:
            raise ValueError(f"{n} views is not a multiple of num_views={num_views}")
        b = n // num_views
        per_image = query_states.view(b, num_views, q, c)
        x = per_image[:, 0]
        memory = per_image.transpose(1, 2).reshape(b, q * num_views, c)
        memory_pos = (
            query_pos[None, :, None, :].expand(1, q, num_views, c).reshape(1, q * num_views, c)
        )
        pos = query_pos[None]
        for cross, self_attn, ffn in zip(
            self.cross_attn_layers, self.self_attn_layers, self.ffn_layers
        ):
            x = cross(x, memory, pos=memory_pos, query_pos=pos)
            x = self_attn(x)
            x = ffn(x)
        return x
