"""HorNet backbone (recursive gated convolutions; Rao et al. 2022) with the global-local filter.

The official CropFormer HorNet-L (GF) row uses it: base width 192 (stage widths 192/384/768/1536),
depths 2-3-18-2, gated convolutions of order 2/3/4/5 with scale s = 1/3, and in stages 3-4 a
global-local filter (half of the channels through a 3x3 depthwise conv, half through a learned
filter in the 2D real-FFT domain, stored at 24x13 / 12x7 and resized bilinearly to the map's
rfft size) instead of the 7x7 depthwise conv. timm has no HorNet, so it lives here, with the
feature contract of :class:`~cropformer.model.backbone.TimmBackbone`: a list of res2..res5 NCHW
maps (strides 4/8/16/32), ``channels``, ``strides`` and ``size_divisibility`` attributes.

Module and parameter names follow the official ``D2HorNet`` (``downsample_layers``, ``stages``,
``gnconv``, ``gamma1``...), so an official checkpoint maps 1:1 except the output norms
(``norm{i}`` -> ``out_norms.{i}``, as for Swin). Facts: ``../shared/reference/parity_hornet``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cropformer.model.backbone import check_declared_channels
from cropformer.model.precision import fp32_region

# official HorNet-L GF (CropFormer config.py MODEL.HORNET defaults)
HORNET_L_DEPTHS = (2, 3, 18, 2)
HORNET_L_ORDERS = (2, 3, 4, 5)
HORNET_L_FILTER_SIZES: tuple[tuple[int, int] | None, ...] = (None, None, (24, 13), (12, 7))


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW map, with the official formula and eps 1e-6.

    Official: mean, biased variance, ``(x - u) / sqrt(s + eps)`` written out (not
    ``F.layer_norm``), which keeps the rounding of the official outputs.

    Shape: (B, C, H, W) -> (B, C, H, W).
    """

    # HorNet's own LayerNorm class is not a torch norm class, so the official optimizer does
    # not see it as a norm layer: its parameters get weight decay (training.optim reads this).
    official_optimizer_norm = False

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ChannelsLastLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (eps 1e-6) of the block MLP; officially HorNet's own LayerNorm class.

    Same numerics as ``nn.LayerNorm``; a class of its own so that the optimizer can treat it as
    the official one does (weight decay applies, see ``ChannelsFirstLayerNorm``).

    Shape: (..., C) -> (..., C).
    """

    official_optimizer_norm = False

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(channels, eps=eps)


class GlobalLocalFilter(nn.Module):
    """Half of the channels: 3x3 depthwise conv; the other half: a learned global filter.

    The global half is multiplied in the 2D real-FFT domain (``norm='ortho'``) by a complex
    filter stored as (C/2, h, w, 2) real/imaginary parts; when the map's rfft size differs from
    (h, w) the filter is resized bilinearly (``align_corners=True``). The FFT path always runs in
    (at least) float32 with autocast off, as the official code casts it to float32; the two
    halves are then interleaved channel by channel (official order: local 0, global 0, local 1,
    ...), so the output is float32 under autocast.

    Shape: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, *, h: int, w: int):
        super().__init__()
        if channels % 2:
            raise ValueError(f"GlobalLocalFilter needs an even channel count, got {channels}")
        half = channels // 2
        self.dw = nn.Conv2d(half, half, kernel_size=3, padding=1, bias=False, groups=half)
        self.complex_weight = nn.Parameter(torch.empty(half, h, w, 2))
        nn.init.trunc_normal_(self.complex_weight, std=0.02)
        self.pre_norm = ChannelsFirstLayerNorm(channels)
        self.post_norm = ChannelsFirstLayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pre_norm(x)
        local, glob = x.chunk(2, dim=1)
        local = self.dw(local)
        b, c, h, w = glob.shape
        with fp32_region(x.device.type):  # entered only under autocast (torch.export)
            # the FFT and the filter product in fp32 even under bf16/fp16 autocast
            glob = glob.to(torch.promote_types(glob.dtype, torch.float32))
            spec = torch.fft.rfft2(glob, dim=(2, 3), norm="ortho")  # (B, C, H, W // 2 + 1)
            weight = self.complex_weight.to(glob.dtype)
            if tuple(weight.shape[1:3]) != tuple(spec.shape[2:4]):
                weight = F.interpolate(
                    weight.permute(3, 0, 1, 2),
                    size=spec.shape[2:4],
                    mode="bilinear",
                    align_corners=True,
                ).permute(1, 2, 3, 0)
            spec = spec * torch.view_as_complex(weight.contiguous())
            glob = torch.fft.irfft2(spec, s=(h, w), dim=(2, 3), norm="ortho")
        # interleave: channel 2i is local i, channel 2i + 1 is global i (official layout)
        dtype = torch.promote_types(local.dtype, glob.dtype)
        x = torch.stack((local.to(dtype), glob.to(dtype)), dim=2).reshape(b, 2 * c, h, w)
        return self.post_norm(x)


class GatedConv(nn.Module):
    """Recursive gated convolution g^n Conv of order n (official ``gnconv``).

    Channel widths d_k = C / 2^(n-1-k), k = 0..n-1: a 1x1 projection gives the first gate input
    (d_0) and n gates (sum d_k) that go through one depthwise conv (7x7, or the global-local
    filter), scaled by ``scale``; each order multiplies by its gate, widening by a 1x1 conv.

    Shape: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(
        self,
        dim: int,
        *,
        order: int,
        scale: float,
        filter_size: Sequence[int] | None = None,
    ):
        super().__init__()
        if order < 1 or dim % (2 ** (order - 1)):
            raise ValueError(
                f"gated conv of order {order} needs a width divisible by 2^(order-1); got {dim}"
            )
        self.order = order
        self.dims = [dim // 2**k for k in range(order)][::-1]
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        gates = sum(self.dims)
        self.dwconv: nn.Module
        if filter_size is None:
            self.dwconv = nn.Conv2d(gates, gates, kernel_size=7, padding=3, groups=gates)
        else:
            fh, fw = (int(v) for v in filter_size)
            self.dwconv = GlobalLocalFilter(gates, h=fh, w=fw)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList(
            nn.Conv2d(self.dims[k], self.dims[k + 1], 1) for k in range(order - 1)
        )
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        fused = self.proj_in(x)
        pwa, abc = torch.split(fused, [self.dims[0], sum(self.dims)], dim=1)
        gates = torch.split(self.dwconv(abc) * self.scale, self.dims, dim=1)
        x = pwa * gates[0]
        for pw, gate in zip(self.pws, gates[1:]):
            x = pw(x) * gate
        return self.proj_out(x)


class HorNetBlock(nn.Module):
    """Pre-norm residual block: x + gamma1 * gnconv(norm1(x)); x + gamma2 * MLP(norm2(x)).

    The MLP (ratio 4, GELU) runs channels-last with a plain LayerNorm (eps 1e-6). Layer scales
    are omitted when ``layer_scale_init <= 0`` (official).

    Shape: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(
        self,
        dim: int,
        *,
        order: int,
        scale: float,
        filter_size: Sequence[int] | None,
        drop_path: float,
        layer_scale_init: float,
    ):
        super().__init__()
        self.norm1 = ChannelsFirstLayerNorm(dim)
        self.gnconv = GatedConv(dim, order=order, scale=scale, filter_size=filter_size)
        self.norm2 = ChannelsLastLayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma1: nn.Parameter | None = None
        self.gamma2: nn.Parameter | None = None
        if layer_scale_init > 0:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.gnconv(self.norm1(x))
        if self.gamma1 is not None:
            y = self.gamma1.view(-1, 1, 1) * y
        x = x + self.drop_path(y)
        y = self.pwconv2(self.act(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        if self.gamma2 is not None:
            y = self.gamma2 * y
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class HorNet(nn.Module):
    """HorNet feature extractor: res2..res5 NCHW maps (strides 4/8/16/32), each layer-normed.

    Defaults are the official CropFormer HorNet-L (GF): 200,272,512 parameters.

    Args:
        base_dim: width of stage 1; stage i has ``base_dim * 2**i`` channels.
        depths: blocks per stage.
        orders: gated-convolution order per stage.
        scale: s, the factor on the depthwise-conv output inside every gated convolution.
        global_filter_sizes: per stage (h, w) of the stored global filter (the global-local
            filter replaces the 7x7 depthwise conv), or None for the 7x7 depthwise conv.
        drop_path_rate: stochastic depth, increasing linearly from 0 to this over all blocks.
        layer_scale_init: initial value of the per-channel layer scales (<= 0: none).
        grad_checkpointing: recompute each block in the backward pass (less training memory;
            same outputs and gradients).
        in_channels: input channels.
        channels: the stage widths as the config declares them (the pixel decoder's
            ``in_channels`` interpolate them); must be ``base_dim`` x 1/2/4/8. None: not declared.
    """

    def __init__(
        self,
        *,
        base_dim: int = 192,
        depths: Sequence[int] = HORNET_L_DEPTHS,
        orders: Sequence[int] = HORNET_L_ORDERS,
        scale: float = 1 / 3,
        global_filter_sizes: Sequence[Sequence[int] | None] = HORNET_L_FILTER_SIZES,
        drop_path_rate: float = 0.6,
        layer_scale_init: float = 1e-6,
        grad_checkpointing: bool = False,
        in_channels: int = 3,
        channels: Sequence[int] | None = None,
    ):
        super().__init__()
        depths, orders = list(depths), list(orders)
        filters = [None if f is None else tuple(int(v) for v in f) for f in global_filter_sizes]
        if not len(depths) == len(orders) == len(filters) == 4:
            raise ValueError(
                "HorNet needs 4 stages: depths, orders and global_filter_sizes must have 4 entries"
                f" each, got {depths}, {orders}, {global_filter_sizes}"
            )
        if any(f is not None and len(f) != 2 for f in filters):
            raise ValueError(
                f"global_filter_sizes entries are [h, w] or null, got {global_filter_sizes}"
            )
        dims = [base_dim * 2**i for i in range(4)]
        check_declared_channels(f"HorNet base_dim={base_dim}", channels, dims)
        self.channels: list[int] = dims
        self.strides: list[int] = [4, 8, 16, 32]
        self.grad_checkpointing = grad_checkpointing
        stem = nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4),
            ChannelsFirstLayerNorm(dims[0]),
        )
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    ChannelsFirstLayerNorm(dims[i]),
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
                )
            )
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        start = 0
        for i in range(4):
            blocks = [
                HorNetBlock(
                    dims[i],
                    order=orders[i],
                    scale=scale,
                    filter_size=filters[i],
                    drop_path=rates[start + j],
                    layer_scale_init=layer_scale_init,
                )
                for j in range(depths[i])
            ]
            self.stages.append(nn.Sequential(*blocks))
            start += depths[i]
        self.out_norms = nn.ModuleList(ChannelsFirstLayerNorm(d) for d in dims)

    @property
    def size_divisibility(self) -> int:
        """Inputs are zero-padded to a multiple of this (the largest stride)."""
        return max(self.strides)

    def forward(self, images: Tensor) -> list[Tensor]:
        """Feature maps of (normalised) images.

        Shape:
            images: (N, C_in, H, W); H, W need not be multiples of 32 (they are zero-padded
            here, bottom/right, to H', W', as detectron2 pads the official model's input).
            returns [(N, C_i, H'/s_i, W'/s_i)] for s_i = 4, 8, 16, 32.
        """
        div = self.size_divisibility
        h, w = images.shape[-2:]
        pad_h, pad_w = (div - h % div) % div, (div - w % div) % div
        x = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        feats = []
        for down, stage, norm in zip(self.downsample_layers, self.stages, self.out_norms):
            x = down(x)
            for block in stage.children():
                if recompute:
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            feats.append(norm(x))
        return feats
