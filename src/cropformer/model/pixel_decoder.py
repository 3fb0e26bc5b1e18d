"""Mask2Former's pixel decoder: a deformable-attention encoder over strides 8/16/32 plus one
FPN step to stride 4 and the 1x1 ``mask_features`` projection.

By default the whole forward runs in fp32 even under autocast (official: deformable attention has
no half-precision path there; it also keeps the mask features precise); ``force_fp32=False`` lets
autocast run it in bf16/fp16 like the rest of the network, and ``fpn_fp32=True`` with it keeps the
FPN step to stride 4 and the ``mask_features`` projection in fp32 (the per-pixel mask
embeddings: bf16 there moves fused entity boundaries). ``grad_checkpointing=True`` recomputes
each encoder layer in the backward pass instead of keeping its activations (training memory).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from cropformer.model.layers import c2_xavier_fill
from cropformer.model.ms_deform_attn import MSDeformAttn
from cropformer.model.position_encoding import sine_position_2d
from cropformer.model.precision import fp32_region


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention, then a ReLU FFN."""

    def __init__(
        self,
        *,
        dim: int,
        ffn_dim: int,
        num_levels: int,
        num_heads: int,
        num_points: int,
        dropout: float,
        msda_impl: str = "gather",
    ):
        super().__init__()
        self.attn = MSDeformAttn(
            dim=dim,
            num_levels=num_levels,
            num_heads=num_heads,
            num_points=num_points,
            impl=msda_impl,
        )
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> Tensor:
        """Shape: src, pos (N, S, C); reference_points (N, S, L, 2); returns (N, S, C)."""
        src = self.norm1(
            src + self.dropout1(self.attn(src + pos, reference_points, src, spatial_shapes))
        )
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


def _reference_points(spatial_shapes: list[tuple[int, int]], device: torch.device) -> Tensor:
    """Pixel centres of every level, normalised to [0, 1] (no padding mask: valid ratio 1).

    Shape: returns (1, S, L, 2) as (x, y).
    """
    points = []
    for h, w in spatial_shapes:
        # arange + 0.5 is exactly linspace(0.5, h - 0.5, h) (step 1) and, unlike linspace,
        # keeps h symbolic under torch.export (dynamic height and width in exported files)
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
    ref = torch.cat(points, 0)[None, :, None, :]
    return ref.expand(1, ref.shape[1], len(spatial_shapes), 2)


class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable-attention pixel decoder.

    Args:
        in_channels: channels of the backbone features, stride 4 first (e.g. res2..res5).
        in_strides: strides of those features (e.g. 4, 8, 16, 32).
        conv_dim: width of the encoder and FPN (must be a multiple of 32: GroupNorm(32)).
        mask_dim: channels of ``mask_features``.
        num_encoder_layers: deformable encoder layers (official 6).
        num_heads: deformable attention heads (official: ``MASK_FORMER.NHEADS`` = 8).
        num_points: sampling points per head and level (official: always 4).
        ffn_dim: encoder FFN width (official: always 1024).
        dropout: encoder dropout (official 0.0).
        num_encoder_levels: how many of the lowest-resolution features the encoder uses (3).
        common_stride: stride of ``mask_features`` (4).
        num_output_levels: multi-scale features handed to the decoder (3, lowest resolution first).
        num_groups: GroupNorm groups (32).
        force_fp32: run in fp32 under autocast (official). False: autocast applies here too
            (bf16 training/inference ~2x faster on hardware with fast bf16; less precise).
        fpn_fp32: with ``force_fp32=False``: the FPN step to stride 4 and the ``mask_features``
            projection still run in fp32 (only the deformable encoder follows autocast). With
            the trained embedded CropFormer on real photos, bf16 inference agreed with fp32 on
            99.5 % of the pixels this way (as with the whole pixel decoder in fp32) and on
            98.3-99.3 % with all of it in bf16.
        grad_checkpointing: recompute the encoder layers in backward (same values and
            gradients, less activation memory, one more encoder forward per step).
        msda_impl: deformable-attention core, ``"gather"`` (default: same values as the official
            kernel, ~3x faster than the grid-sample formulation, keeps only its inputs for
            backward) or ``"grid_sample"`` (the official CPU fallback's formulation).
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        in_strides: Sequence[int] = (4, 8, 16, 32),
        conv_dim: int = 256,
        mask_dim: int = 256,
        num_encoder_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.0,
        num_encoder_levels: int = 3,
        common_stride: int = 4,
        num_output_levels: int = 3,
        num_groups: int = 32,
        force_fp32: bool = True,  # parity: the official pixel decoder disables autocast
        fpn_fp32: bool = False,
        grad_checkpointing: bool = False,
        msda_impl: str = "gather",
    ):
        super().__init__()
        self.force_fp32 = force_fp32
        self.fpn_fp32 = fpn_fp32
        self.grad_checkpointing = grad_checkpointing
        in_channels = list(in_channels)
        in_strides = list(in_strides)
        if len(in_channels) != len(in_strides):
            raise ValueError(
                f"in_channels {in_channels} and in_strides {in_strides} differ in length"
            )
        if sorted(in_strides) != in_strides:
            raise ValueError(f"in_strides must be increasing (stride 4 first), got {in_strides}")
        if conv_dim % num_groups != 0:
            raise ValueError(f"conv_dim={conv_dim} must be a multiple of num_groups={num_groups}")
        if num_encoder_levels > len(in_channels):
            raise ValueError(f"num_encoder_levels={num_encoder_levels} > {len(in_channels)} inputs")
        self.in_strides = in_strides
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim
        self.num_output_levels = num_output_levels
        self.num_encoder_levels = num_encoder_levels
        enc_channels = in_channels[-num_encoder_levels:]
        # lowest resolution first (res5, res4, res3), as the official input_proj
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(num_groups, conv_dim))
            for c in enc_channels[::-1]
        )
        self.level_embed = nn.Parameter(torch.empty(num_encoder_levels, conv_dim))
        self.encoder_layers = nn.ModuleList(
            DeformableEncoderLayer(
                dim=conv_dim,
                ffn_dim=ffn_dim,
                num_levels=num_encoder_levels,
                num_heads=num_heads,
                num_points=num_points,
                dropout=dropout,
                msda_impl=msda_impl,
            )
            for _ in range(num_encoder_layers)
        )
        min_enc_stride = in_strides[-num_encoder_levels]
        self.num_fpn_levels = int(math.log2(min_enc_stride) - math.log2(common_stride))
        if self.num_fpn_levels < 0 or self.num_fpn_levels > len(in_channels) - num_encoder_levels:
            raise ValueError(
                f"common_stride={common_stride} is not reachable from strides {in_strides} with "
                f"{num_encoder_levels} encoder levels"
            )
        # highest-resolution input first in these lists; used from low to high resolution
        fpn_channels = in_channels[: self.num_fpn_levels]
        self.lateral_convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, conv_dim, kernel_size=1, bias=False),
                nn.GroupNorm(num_groups, conv_dim),
            )
            for c in fpn_channels
        )
        self.output_convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1, bias=False),
                nn.GroupNorm(num_groups, conv_dim),
                nn.ReLU(),
            )
            for _ in fpn_channels
        )
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation."""
        for proj in self.input_proj:
            conv = cast(nn.Conv2d, cast(nn.Sequential, proj)[0])
            nn.init.xavier_uniform_(conv.weight, gain=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        for layer in self.encoder_layers:
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            cast(DeformableEncoderLayer, layer).attn.reset_parameters()
        nn.init.normal_(self.level_embed)
        for seq in [*self.lateral_convs, *self.output_convs]:
            c2_xavier_fill(cast(nn.Conv2d, cast(nn.Sequential, seq)[0]))
        c2_xavier_fill(self.mask_features)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Encode the backbone features.

        Shape:
            features: (N, C_i, H/s_i, W/s_i) for each input stride s_i (stride 4 first).
            returns mask_features (N, mask_dim, H/4, W/4) and the multi-scale features for the
            decoder, each (N, conv_dim, h, w), lowest resolution first (1/32, 1/16, 1/8).
        """
        if len(features) != len(self.in_strides):
            raise ValueError(f"expected {len(self.in_strides)} feature maps, got {len(features)}")
        if not self.force_fp32:
            return self._forward(list(features))
        with fp32_region(features[0].device.type):
            return self._forward([f.float() for f in features])

    def _forward(self, features: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        enc_inputs = features[-self.num_encoder_levels :][::-1]  # lowest resolution first
        srcs, pos, shapes = [], [], []
        for level, (x, proj) in enumerate(zip(enc_inputs, self.input_proj)):
            n, _, h, w = x.shape
            shapes.append((h, w))
            srcs.append(proj(x).flatten(2).transpose(1, 2))
            code = sine_position_2d(h, w, self.conv_dim // 2, device=x.device)
            pos.append(code.flatten(1).transpose(0, 1)[None] + self.level_embed[level][None, None])
        src = torch.cat(srcs, 1)
        pos_all = torch.cat(pos, 1)
        ref = _reference_points(shapes, src.device).expand(src.shape[0], -1, -1, -1)
        checkpoint = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.encoder_layers:
            if checkpoint:
                src = cast(
                    Tensor,
                    torch.utils.checkpoint.checkpoint(
                        layer, src, pos_all, ref, shapes, use_reentrant=False
                    ),
                )
            else:
                src = layer(src, pos_all, ref, shapes)
        n = src.shape[0]
        out = [
            y.transpose(1, 2).reshape(n, self.conv_dim, h, w)
            for y, (h, w) in zip(src.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        device_type = src.device.type
        fpn_fp32 = self.fpn_fp32 and torch.is_autocast_enabled(device_type)
        fpn_context = (
            torch.autocast(device_type=device_type, enabled=False)
            if fpn_fp32
            else contextlib.nullcontext()
        )
        with fpn_context:
            # extra FPN levels, from low to high resolution
            for idx in range(self.num_fpn_levels - 1, -1, -1):
                x = features[idx].float() if fpn_fp32 else features[idx]
                lateral = self.lateral_convs[idx](x)
                top = out[-1].float() if fpn_fp32 else out[-1]
                y = lateral + F.interpolate(
                    top, size=lateral.shape[-2:], mode="bilinear", align_corners=False
                )
                out.append(self.output_convs[idx](y))
            last = out[-1].float() if fpn_fp32 else out[-1]
            return self.mask_features(last), out[: self.num_output_levels]
