"""Transformer building blocks shared by the decoder and the association module.

Batch-first tensors ``(N, L, C)``; ``nn.MultiheadAttention`` keeps the official parameter names
(``in_proj_weight``, ``out_proj``) so official checkpoints map one to one.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def c2_xavier_fill(conv: nn.Conv2d) -> None:
    """detectron2's ``c2_xavier_fill``: kaiming-uniform with a=1, zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _xavier_matrices(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def _add(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class _ResidualLayer(nn.Module):
    """Residual + LayerNorm wrapper logic shared by the three sub-layers (post-norm by default,
    as the official decoder; pre-norm optional). Subclasses create their own layers first and
    then call :meth:`_init_residual`, so the parameters keep the official names and order
    (attention / linears before ``norm``: same state-dict and optimizer-state order)."""

    norm: nn.LayerNorm
    dropout: nn.Dropout
    pre_norm: bool

    def _init_residual(self, dim: int, dropout: float, pre_norm: bool) -> None:
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def _input(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.pre_norm else x

    def _output(self, x: Tensor, update: Tensor) -> Tensor:
        y = x + self.dropout(update)
        return y if self.pre_norm else self.norm(y)


class SelfAttentionLayer(_ResidualLayer):
    """Self-attention with residual and LayerNorm."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self._init_residual(dim, dropout, pre_norm)
        _xavier_matrices(self)

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        """Shape: x, pos (N, Q, C) -> (N, Q, C). ``pos`` is added to queries and keys only."""
        y = self._input(x)
        q = _add(y, pos)
        return self._output(x, self.attn(q, q, y, need_weights=False)[0])


class CrossAttentionLayer(_ResidualLayer):
    """Cross-attention from queries to a memory, with residual and LayerNorm."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self._init_residual(dim, dropout, pre_norm)
        _xavier_matrices(self)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        attn_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        """Attend from ``x`` to ``memory``.

        Shape:
            x, query_pos: (N, Q, C); memory, pos: (N, K, C);
            attn_mask: (N * heads, Q, K) bool, True = not allowed; returns (N, Q, C).
        """
        out = self.attn(
            _add(self._input(x), query_pos),
            _add(memory, pos),
            memory,
            attn_mask=attn_mask,
            need_weights=False,
        )[0]
        return self._output(x, out)


class FFNLayer(_ResidualLayer):
    """Two-layer ReLU feed-forward network with residual and LayerNorm."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self._init_residual(dim, dropout, pre_norm)
        _xavier_matrices(self)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (N, Q, C) -> (N, Q, C)."""
        y = self.linear2(self.dropout(F.relu(self.linear1(self._input(x)))))
        return self._output(x, y)


class MLP(nn.Module):
    """Plain MLP with ReLU between layers (the mask-embedding head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: Tensor) -> Tensor:
        """Shape: (..., in_dim) -> (..., out_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
