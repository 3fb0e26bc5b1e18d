"""Mask2Former's masked-attention transformer decoder, used by both CropFormer passes.

The image-level pass runs it on each view's own memory; the batch-level pass runs the SAME layers
and heads on the memory of all T views of an image concatenated along the token axis (view-major,
then spatial), with the 2D sine code plus a view-axis code as key positions, and predicts one
mask per view for every query. Both passes share one implementation (``_run``): the image-level
pass is the batch-level pass with T = 1 and no view code.

Training outputs can keep the mask logits factored (``training_mask_logits="factored"``): each
prediction carries its mask embeddings (B, Q, C) and the pass its mask features, the losses compute
logits only where they read them (``cropformer.losses.mask_logits``), and the attention masks are
made from the features downsampled to each level. Both are exact by linearity (bilinear sampling
and resizing commute with the channel dot product); only float rounding differs.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from cropformer.model.layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
    c2_xavier_fill,
)
from cropformer.model.position_encoding import sine_position_2d, view_position_code
from cropformer.schema import PassOutputs

ViewCode = Literal["official", "fixed", "none"]
MaskLogits = Literal["factored", "full"]


class MaskedAttentionDecoder(nn.Module):
    """Masked-attention decoder with learnable queries and deep supervision.

    Args:
        in_channels: channels of the multi-scale features (the pixel decoder's ``conv_dim``).
        hidden_dim: decoder width C.
        num_queries: Q.
        num_heads: attention heads.
        ffn_dim: FFN width.
        num_layers: masked-attention layers (official ``DEC_LAYERS - 1`` = 9); predictions are
            made from the raw queries and after every layer (``num_layers + 1`` in all).
        mask_dim: channels of ``mask_features``.
        num_classes: entity classes (1; the class head has ``num_classes + 1`` logits, the last
            one is no-object).
        num_feature_levels: feature levels attended round-robin (3, lowest resolution first).
        pre_norm: pre-norm layers instead of the official post-norm.
        dropout: dropout in all layers (official 0).
        enforce_input_proj: 1x1 input projection even if ``in_channels == hidden_dim``.
        view_code: view-axis positional code of the batch-level pass. ``"official"``: phase
            k/T * 2*pi for view k = 1..T, so the full view's code depends on T (train T=2 vs test
            T=5, reference doc section 11 item 2); ``"fixed"``: phase k/view_code_max_views *
            2*pi, the same code for a view index at any T; ``"none"``: no view code.
        view_code_max_views: the normaliser of ``view_code="fixed"``.
        grad_checkpointing: recompute each layer's attention and FFN in backward instead of
            keeping their activations (training memory; same values and gradients).
        training_mask_logits: what a training forward (``self.training`` and ``aux=True``)
            returns. ``"factored"``: ``mask_embed`` per prediction and the pass's
            ``mask_features`` instead of ``pred_masks``; the losses evaluate the logits at their
            points only, and the attention masks come from the mask features downsampled to each
            level (same values up to float rounding, fewer FLOPs and less memory). ``"full"``: the
            official computation, full-resolution ``pred_masks`` for every prediction. Inference
            (``aux=False`` or eval mode) always returns full-resolution ``pred_masks``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 256,
        hidden_dim: int = 256,
        num_queries: int = 100,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        num_layers: int = 9,
        mask_dim: int = 256,
        num_classes: int = 1,
        num_feature_levels: int = 3,
        pre_norm: bool = False,
        dropout: float = 0.0,
        enforce_input_proj: bool = False,
        view_code: ViewCode = "official",  # parity: official normalises the view code by T
        view_code_max_views: int = 5,
        grad_checkpointing: bool = False,
        training_mask_logits: MaskLogits = "full",
    ):
        super().__init__()
        self.grad_checkpointing = grad_checkpointing
        if training_mask_logits not in ("factored", "full"):
            raise ValueError(
                f"training_mask_logits={training_mask_logits!r}: use 'factored' (logits at the "
                "losses' points only) or 'full' (official full-resolution logits)"
            )
        self.training_mask_logits = training_mask_logits
        if hidden_dim % 2 != 0:
            raise ValueError(f"hidden_dim={hidden_dim} must be even (sine code: half y, half x)")
        if view_code not in ("official", "fixed", "none"):
            raise ValueError(f"view_code={view_code!r}: use 'official', 'fixed' or 'none'")
        self.hidden_dim = hidden_dim
        self.num_queries = num_queries
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.num_feature_levels = num_feature_levels
        self.view_code = view_code
        self.view_code_max_views = view_code_max_views
        self.cross_attn_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, num_heads, dropout, pre_norm) for _ in range(num_layers)
        )
        self.self_attn_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, num_heads, dropout, pre_norm) for _ in range(num_layers)
        )
        self.ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, ffn_dim, dropout, pre_norm) for _ in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_pos = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_proj:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                c2_xavier_fill(conv)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Identity())
        self.class_head = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_head = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    # ------------------------------------------------------------------ passes
    def factored(self, aux: bool, factored: bool | None = None) -> bool:
        """Whether a forward with these arguments returns factored mask logits.

        ``factored=None`` follows ``training_mask_logits`` for training forwards (module in
        training mode, ``aux=True``); True/False forces it (True needs ``aux=True``).
        """
        if factored is None:
            return self.training_mask_logits == "factored" and self.training and aux
        if factored and not aux:
            raise ValueError("factored mask logits are for the losses: they need aux=True")
        return factored

    def forward_image_level(
        self,
        features: list[Tensor],
        mask_features: Tensor,
        aux: bool = True,
        factored: bool | None = None,
    ) -> tuple[PassOutputs, Tensor]:
        """Decode every view on its own (official "2D" pass).

        ``aux=False`` returns no ``aux_outputs`` and frees each intermediate prediction's masks as
        soon as the next layer's attention mask is made (inference: ~Q*N*h*w*4 B per layer less).
        ``factored``: see :meth:`factored` (``mask_embed``/``mask_features`` instead of
        ``pred_masks``).

        Shape:
            features: L tensors (N, C, h_l, w_l), lowest resolution first.
            mask_features: (N, C_mask, h, w).
            returns the pass outputs (pred_logits (N, Q, 2), pred_masks (N, Q, h, w); factored:
            mask_embed (N, Q, C_mask) and mask_features (N, C_mask, h, w)) and the final query
            states before ``decoder_norm`` (N, Q, C), the association's input.
        """
        n = mask_features.shape[0]
        memory, pos, sizes = self._memory(features, num_views=1, view_code=False)
        queries = self.query_feat.weight[None].expand(n, -1, -1)
        factor = self.factored(aux, factored)
        logits, masks, state = self._run(
            queries, memory, pos, sizes, mask_features[:, None], aux=aux, factored=factor
        )
        if factor:
            return _pack(logits, masks, mask_features), state
        out = _pack(logits, [m.squeeze(2) for m in masks])
        return out, state

    def forward_batch_level(
        self,
        queries: Tensor,
        features: list[Tensor],
        mask_features: Tensor,
        num_views: int,
        aux: bool = True,
        factored: bool | None = None,
    ) -> PassOutputs:
        """Decode the T views of each image jointly (official "3D" pass), same weights.

        ``aux=False``: no ``aux_outputs`` (see :meth:`forward_image_level`); ``factored``: see
        :meth:`factored`.

        Shape:
            queries: (B, Q, C) initial query states (the association's output).
            features: L tensors (N, C, h_l, w_l) with N = B*T, views image-major.
            mask_features: (N, C_mask, h, w).
            returns pred_logits (B, Q, 2) and pred_masks (B, Q, T, h, w); factored: mask_embed
            (B, Q, C_mask) and mask_features (B, T, C_mask, h, w) instead of pred_masks.
        """
        n, c, h, w = mask_features.shape
        if n % num_views != 0:
            raise ValueError(f"{n} views is not a multiple of num_views={num_views}")
        memory, pos, sizes = self._memory(features, num_views=num_views, view_code=True)
        mf = mask_features.view(n // num_views, num_views, c, h, w)
        factor = self.factored(aux, factored)
        logits, masks, _ = self._run(queries, memory, pos, sizes, mf, aux=aux, factored=factor)
        return _pack(logits, masks, mf if factor else None)

    def forward(self, features: list[Tensor], mask_features: Tensor) -> PassOutputs:
        """Image-level pass only (Mask2Former)."""
        return self.forward_image_level(features, mask_features)[0]

    # ------------------------------------------------------------------ internals
    def _memory(
        self, features: list[Tensor], num_views: int, view_code: bool
    ) -> tuple[list[Tensor], list[Tensor], list[tuple[int, int]]]:
        """Per level: memory (B, T*h*w, C) view-major, key positions (1 or B, T*h*w, C), size."""
        if len(features) != self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} feature levels, got {len(features)}"
            )
        memory, pos, sizes = [], [], []
        for level, x in enumerate(features):
            n, _, h, w = x.shape
            sizes.append((h, w))
            src = (
                self.input_proj[level](x).flatten(2) + self.level_embed.weight[level][None, :, None]
            )
            src = src.view(n // num_views, num_views, self.hidden_dim, h * w)
            memory.append(src.permute(0, 1, 3, 2).reshape(n // num_views, num_views * h * w, -1))
            code = sine_position_2d(h, w, self.hidden_dim // 2, device=x.device)
            code = code.flatten(1).transpose(0, 1)  # (h*w, C)
            if view_code and self.view_code != "none":
                code = code[None] + self._view_code(num_views, x.device)[:, None, :]
            else:
                code = code[None].expand(num_views, h * w, self.hidden_dim)
            pos.append(code.reshape(1, num_views * h * w, self.hidden_dim))
        return memory, pos, sizes

    def _view_code(self, num_views: int, device: torch.device) -> Tensor:
        norm = self.view_code_max_views if self.view_code == "fixed" else None
        return view_position_code(num_views, self.hidden_dim, normalize_by=norm, device=device)

    def _run(
        self,
        queries: Tensor,
        memory: list[Tensor],
        pos: list[Tensor],
        sizes: list[tuple[int, int]],
        mask_features: Tensor,
        aux: bool = True,
        factored: bool = False,
    ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Predict from the raw queries, then after each masked-attention layer (only the last
        prediction is kept when ``aux`` is False).

        Shape:
            queries: (B, Q, C); memory[l]: (B, T*h_l*w_l, C); pos[l]: (1, T*h_l*w_l, C);
            mask_features: (B, T, C_mask, h, w).
            returns class logits [(B, Q, K+1)], mask logits [(B, Q, T, h, w)] per prediction
            (factored: mask embeddings [(B, Q, C_mask)]), and the final query states (B, Q, C).
        """
        query_pos = self.query_pos.weight[None].expand(queries.shape[0], -1, -1)
        x = queries
        logits, masks = [], []
        if factored:
            level_features = _level_features(mask_features, sizes)
            heads = self._factored_heads
            cls, mask, attn_mask = heads(x, level_features[sizes[0]], True)
        else:
            cls, mask, attn_mask = self._heads(x, mask_features, sizes[0])
        logits.append(cls)
        masks.append(mask)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            # a query whose every position is blocked attends everywhere (official rule)
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = cast(
                    Tensor,
                    torch.utils.checkpoint.checkpoint(
                        self._layer,
                        i,
                        x,
                        memory[level],
                        attn_mask,
                        pos[level],
                        query_pos,
                        use_reentrant=False,
                    ),
                )
            else:
                x = self._layer(i, x, memory[level], attn_mask, pos[level], query_pos)
            next_size = sizes[(i + 1) % self.num_feature_levels]
            if factored:
                # the last prediction's attention mask would go unused
                last = i == self.num_layers - 1
                cls, mask, attn_mask = heads(x, level_features[next_size], not last)
            else:
                cls, mask, attn_mask = self._heads(x, mask_features, next_size)
            if not aux:
                logits.clear()
                masks.clear()
            logits.append(cls)
            masks.append(mask)
        return logits, masks, x

    def _layer(
        self, i: int, x: Tensor, memory: Tensor, attn_mask: Tensor, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        """Masked cross-attention, self-attention and FFN of layer ``i``."""
        x = self.cross_attn_layers[i](x, memory, attn_mask=attn_mask, pos=pos, query_pos=query_pos)
        x = self.self_attn_layers[i](x, pos=query_pos)
        return cast(Tensor, self.ffn_layers[i](x))

    def _heads(
        self, x: Tensor, mask_features: Tensor, target_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Class logits, mask logits and the next layer's attention mask (True = blocked)."""
        y = self.decoder_norm(x)
        cls = self.class_head(y)
        embed = self.mask_head(y)
        mask = torch.einsum("bqc,btchw->bqthw", embed, mask_features)
        b, q, t, h, w = mask.shape
        small = F.interpolate(
            mask.flatten(0, 1), size=target_size, mode="bilinear", align_corners=False
        ).view(b, q, -1)
        attn_mask = self._blocked(small).detach()
        attn_mask = (
            attn_mask[:, None].expand(b, self.num_heads, q, attn_mask.shape[-1]).flatten(0, 1)
        )
        return cls, mask, attn_mask

    def _blocked(self, logits: Tensor) -> Tensor:
        """The attention-mask decisions of mask logits at the attention level: True = blocked
        (``sigmoid < 0.5``, official). One method so that the export's verification can record
        the logits and take another run's decisions (``cropformer.export.decisions``).

        Shape: (B, Q, T*h_l*w_l) float -> bool, same shape.
        """
        return logits.sigmoid() < 0.5

    def _factored_heads(
        self, x: Tensor, level_features: Tensor, need_attn_mask: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Class logits, mask embeddings and the next layer's attention mask (True = blocked).

        The attention mask is ``bilinear(embed . mask_features)`` computed as
        ``embed . bilinear(mask_features)`` (resizing is linear per channel): Q*C*h_l*w_l
        multiply-adds instead of Q*C*h*w plus the resize of Q maps.

        Shape: x (B, Q, C); level_features (B, T, C_mask, h_l, w_l); returns (B, Q, K+1),
        (B, Q, C_mask) and (B*heads, Q, T*h_l*w_l) (an empty tensor when not needed).
        """
        y = self.decoder_norm(x)
        cls = self.class_head(y)
        embed = self.mask_head(y)
        b, q = embed.shape[:2]
        if not need_attn_mask:
            return cls, embed, embed.new_zeros((0,), dtype=torch.bool)
        with torch.no_grad():  # the attention mask is a detached threshold
            small = torch.einsum("bqc,btchw->bqthw", embed, level_features).reshape(b, q, -1)
            attn_mask = self._blocked(small)
        attn_mask = (
            attn_mask[:, None].expand(b, self.num_heads, q, attn_mask.shape[-1]).flatten(0, 1)
        )
        return cls, embed, attn_mask


def _level_features(
    mask_features: Tensor, sizes: list[tuple[int, int]]
) -> dict[tuple[int, int], Tensor]:
    """The mask features bilinearly resized to every attention level's size (no gradient).

    Shape: mask_features (B, T, C, h, w); returns {(h_l, w_l): (B, T, C, h_l, w_l)}.
    """
    b, t, c, h, w = mask_features.shape
    flat = mask_features.detach().reshape(b * t, c, h, w)
    out = {}
    with torch.no_grad():
        for size in dict.fromkeys(sizes):
            small = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
            out[size] = small.view(b, t, c, *size)
    return out


def _pack(
    logits: list[Tensor], masks: list[Tensor], mask_features: Tensor | None = None
) -> PassOutputs:
    """Pass outputs; with ``mask_features`` the ``masks`` are mask embeddings (factored)."""
    key = "pred_masks" if mask_features is None else "mask_embed"
    out: dict[str, Any] = {
        "pred_logits": logits[-1],
        key: masks[-1],
        "aux_outputs": [{"pred_logits": a, key: b} for a, b in zip(logits[:-1], masks[:-1])],
    }
    if mask_features is not None:
        out["mask_features"] = mask_features
    return cast(PassOutputs, out)
