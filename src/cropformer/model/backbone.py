"""Backbones: any timm model that supports ``features_only``, as a list of NCHW feature maps.

Swin needs ``feature_cls="getter"`` and ``strict_img_size=False`` (set automatically). By default
Swin runs with the official detection-style windows (``swin_official_windows``): every block keeps
its window size (7) and shift even on small maps, the feature map is zero-padded to a multiple of
the window size *before* the cyclic shift, and the shifted-window mask is computed on the padded
map. timm's own forward shrinks windows on small maps and shifts before padding, which gives
different features whenever a map is not a multiple of the window size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer as _TimmSwin
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW map (the official Swin's per-stage norms)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _swin_window_mask(hp: int, wp: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Official shifted-window mask on the padded map: (num_windows, window^2, window^2), 0/-100."""
    region = torch.zeros(hp, wp, device=device)
    cuts = ((0, hp - window), (hp - window, hp - shift), (hp - shift, hp))
    cuts_w = ((0, wp - window), (wp - window, wp - shift), (wp - shift, wp))
    label = 0
    for y0, y1 in cuts:
        for x0, x1 in cuts_w:
            region[y0:y1, x0:x1] = label
            label += 1
    windows = region.view(hp // window, window, wp // window, window).permute(0, 2, 1, 3)
    windows = windows.reshape(-1, window * window)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.where(
        diff != 0, torch.tensor(-100.0, device=device), torch.tensor(0.0, device=device)
    )


def _swin_block_official(block: Any, x: Tensor, shift_mask: Tensor | None = None) -> Tensor:
    """One timm ``SwinTransformerBlock`` with the official detection-Swin padding order.

    ``shift_mask`` is the stage's shifted-window mask (:func:`_swin_window_mask` on the padded
    map); it is computed here when not given.

    Shape: x (B, H, W, C) -> (B, H, W, C).
    """
    b, h, w, c = x.shape
    window = int(block.window_size[0])
    shift = int(block.target_shift_size[0])
    y = block.norm1(x)
    pad_b = (window - h % window) % window
    pad_r = (window - w % window) % window
    y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = h + pad_b, w + pad_r
    mask = None
    if shift > 0:
        y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        if shift_mask is None:
            shift_mask = _swin_window_mask(hp, wp, window, shift, x.device)
        mask = shift_mask.to(y.dtype)
    win = y.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    win = win.reshape(-1, window * window, c)
    win = block.attn(win, mask=mask)
    y = win.view(b, hp // window, wp // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    y = y.reshape(b, hp, wp, c)
    if shift > 0:
        y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
    y = y[:, :h, :w, :]
    x = x + block.drop_path1(y)
    return x + block.drop_path2(block.mlp(block.norm2(x)))


def check_declared_channels(name: str, declared: Sequence[int] | None, actual: list[int]) -> None:
    """A backbone config's ``channels`` must be the widths the built backbone gives.

    Raises:
        ValueError: naming the backbone, both lists and the key to fix.
    """
    if declared is not None and [int(c) for c in declared] != list(actual):
        raise ValueError(
            f"backbone {name}: its stages give {list(actual)} channels but its config declares "
            f"channels={list(declared)}; set model.net.backbone.channels={list(actual)}"
        )


class TimmBackbone(nn.Module):
    """A timm feature extractor returning ``len(out_indices)`` NCHW maps (strides 4/8/16/32).

    Args:
        model_name: timm model name (e.g. ``resnet50``, ``swin_tiny_patch4_window7_224``).
        out_indices: feature stages to return (timm indices).
        pretrained: load weights from ``checkpoint_path`` (never from the hub at run time).
        checkpoint_path: local timm-format weights file (``.pth``/``.safetensors``/``.bin``).
        out_norm: a LayerNorm on each output map (the official Swin backbone has them).
        frozen_stages: -1 trains everything; k >= 0 freezes the stem and the first k stages.
        frozen_bn: replace BatchNorm by frozen BatchNorm (buffers, not parameters; detectron2's
            R50 default).
        grad_checkpointing: recompute activations in the backward pass to save memory.
        swin_official_windows: official detection-Swin windowing (see module docstring).
        drop_path_rate: stochastic depth (official Swin 0.3).
        model_kwargs: further keyword arguments for ``timm.create_model`` (e.g. embed_dim).
        channels: the stage widths this backbone gives, as its config declares them (the pixel
            decoder's ``in_channels`` interpolate them); checked against the built model.
            None: not declared.
    """

    def __init__(
        self,
        *,
        model_name: str,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        out_norm: bool = False,
        frozen_stages: int = -1,
        frozen_bn: bool = False,
        grad_checkpointing: bool = False,
        swin_official_windows: bool = True,  # parity: detection-Swin padding/shift order
        drop_path_rate: float = 0.0,
        model_kwargs: dict[str, Any] | None = None,
        channels: Sequence[int] | None = None,
    ):
        super().__init__()
        kwargs: dict[str, Any] = dict(model_kwargs or {})
        is_swin = model_name.startswith("swin")
        if is_swin:
            kwargs.setdefault("feature_cls", "getter")
            kwargs.setdefault("strict_img_size", False)
            if swin_official_windows:
                kwargs.setdefault("always_partition", True)
        # always passed: timm's own defaults differ per model (Swin: 0.1)
        kwargs.setdefault("drop_path_rate", drop_path_rate)
        if pretrained:
            if checkpoint_path is None:
                raise ValueError(
                    f"pretrained=True for backbone {model_name!r} needs checkpoint_path=<local"
                    " file>: weights are never downloaded at run time. Download them once (e.g."
                    f" `timm.create_model('{model_name}', pretrained=True)` on a machine with"
                    " network access, then save `model.state_dict()`), and pass the file path."
                )
            path = Path(checkpoint_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"backbone checkpoint_path={checkpoint_path!r} does not exist; pass the path of"
                    " a timm-format weights file for this backbone"
                )
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        elif checkpoint_path is not None:
            raise ValueError(
                f"checkpoint_path={checkpoint_path!r} is given but pretrained=False; set "
                "pretrained=True to load it"
            )
        try:
            self.body: Any = timm.create_model(
                model_name,
                pretrained=pretrained,
                features_only=True,
                out_indices=tuple(out_indices),
                **kwargs,
            )
        except RuntimeError as err:  # unknown model names are RuntimeError in timm
            raise ValueError(f"cannot build timm backbone {model_name!r}: {err}") from err
        info: Any = self.body.feature_info
        self.channels: list[int] = list(info.channels())
        self.strides: list[int] = list(info.reduction())
        self.model_name = model_name
        check_declared_channels(model_name, channels, self.channels)
        self._official_swin = bool(
            is_swin
            and swin_official_windows
            and isinstance(getattr(self.body, "model", None), _TimmSwin)
        )
        self.out_norms = (
            nn.ModuleList(_ChannelLayerNorm(c) for c in self.channels) if out_norm else None
        )
        if frozen_bn:
            from timm.layers import freeze_batch_norm_2d

            self.body = freeze_batch_norm_2d(self.body)
        self.grad_checkpointing = grad_checkpointing
        if (
            grad_checkpointing
            and not self._official_swin
            and hasattr(self.body, "set_grad_checkpointing")
        ):
            self.body.set_grad_checkpointing(True)
        self.frozen_stages = frozen_stages
        self._freeze(frozen_stages)

    @property
    def size_divisibility(self) -> int:
        """Inputs are zero-padded to a multiple of this (the largest stride)."""
        return max(self.strides)

    def _freeze(self, frozen_stages: int) -> None:
        if frozen_stages < 0:
            return
        names = [n.removeprefix("model.") for n in self.body.feature_info.module_name()]
        for pname, p in self.body.named_parameters():
            pname = pname.removeprefix("model.")
            stage = next((i for i, n in enumerate(names) if pname.startswith(n + ".")), None)
            if stage is None or stage < frozen_stages:
                p.requires_grad_(False)

    def forward(self, images: Tensor) -> list[Tensor]:
        """Feature maps of (normalised) images.

        Shape:
            images: (N, 3, H, W); H, W need not be multiples of the largest stride (they are
            zero-padded here, bottom/right, to H', W').
            returns one (N, C_i, H'/s_i, W'/s_i) map per output index, stride 4 first.
        """
        div = self.size_divisibility
        h, w = images.shape[-2:]
        pad_h, pad_w = (div - h % div) % div, (div - w % div) % div
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        feats = self._swin_forward(images) if self._official_swin else list(self.body(images))
        if self.out_norms is not None:
            feats = [norm(f) for norm, f in zip(self.out_norms, feats)]
        return feats

    def _swin_forward(self, images: Tensor) -> list[Tensor]:
        model = self.body.model
        wanted = set(self.body.out_indices)
        x = model.patch_embed(images)  # (N, H/4, W/4, C)
        feats = []
        for i, stage in enumerate(model.layers):
            x = stage.downsample(x)
            mask = None
            for block in stage.blocks:
                shift = int(block.target_shift_size[0])
                if shift > 0 and mask is None:  # one mask per stage, as the official code
                    window = int(block.window_size[0])
                    # ceil as (s + window - 1) // window, never -(-s // window): the ONNX
                    # exporter writes a floor division of sizes as ONNX's truncating Div,
                    # which rounds a negative quotient the other way (wrong window count)
                    hp, wp = ((s + window - 1) // window * window for s in x.shape[1:3])
                    mask = _swin_window_mask(hp, wp, window, shift, x.device)
                if self.grad_checkpointing and self.training and x.requires_grad:
                    x = checkpoint(_swin_block_official, block, x, mask, use_reentrant=False)
                else:
                    x = _swin_block_official(block, x, mask)
            if i in wanted:
                feats.append(x.permute(0, 3, 1, 2).contiguous())
        return feats
