"""CropFormer: backbone -> pixel decoder -> image-level pass -> association -> batch-level pass.

Without an association module it is Mask2Former (entity mode): the image-level pass only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cropformer.model.association import QueryAssociation
from cropformer.model.backbone import TimmBackbone
from cropformer.model.decoder import MaskedAttentionDecoder
from cropformer.model.pixel_decoder import MSDeformAttnPixelDecoder
from cropformer.schema import Outputs, PassOutputs

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class CropFormer(nn.Module):
    """The CropFormer network; Mask2Former when ``association`` is None.

    Args:
        backbone: feature extractor returning 4 NCHW maps (strides 4/8/16/32), with ``channels``
            and ``strides`` attributes (e.g. :class:`TimmBackbone`).
        pixel_decoder: :class:`MSDeformAttnPixelDecoder` (its in_channels must match).
        decoder: :class:`MaskedAttentionDecoder`, used by both passes.
        association: :class:`QueryAssociation`, or None for Mask2Former (no batch-level pass).
        pixel_mean, pixel_std: RGB normalisation in 0..255 units (official values).
        size_divisibility: inputs are zero-padded (after normalisation) to a multiple of this.
    """

    def __init__(
        self,
        *,
        backbone: TimmBackbone | nn.Module,
        pixel_decoder: MSDeformAttnPixelDecoder,
        decoder: MaskedAttentionDecoder,
        association: QueryAssociation | None = None,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
        size_divisibility: int = 32,
    ):
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.decoder = decoder
        self.association = association
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError(f"pixel_mean/pixel_std need 3 values, got {pixel_mean} / {pixel_std}")
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False
        )
        self.size_divisibility = size_divisibility

    @property
    def num_queries(self) -> int:
        """Q."""
        return self.decoder.num_queries

    def normalize(self, images: Tensor, view_sizes: Tensor | None = None) -> Tensor:
        """Normalise 0..255 RGB views, zero the padding, pad to ``size_divisibility``.

        Shape: images (N, 3, H, W) uint8/float; view_sizes (N, 2) unpadded (h, w); returns float32
        (N, 3, H', W') with H', W' multiples of ``size_divisibility``.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) RGB, got shape {tuple(images.shape)}")
        mean, std = cast(Tensor, self.pixel_mean), cast(Tensor, self.pixel_std)
        x = (images.float() - mean) / std
        if view_sizes is not None:
            # official: normalise each view, then zero-pad -> padding is 0 in normalised space
            if view_sizes.shape != (images.shape[0], 2):
                raise ValueError(
                    f"view_sizes must be (N, 2) = ({images.shape[0]}, 2), got "
                    f"{tuple(view_sizes.shape)}"
                )
            h, w = x.shape[-2:]
            rows = torch.arange(h, device=x.device)[None, :, None]
            cols = torch.arange(w, device=x.device)[None, None, :]
            vs = view_sizes.to(x.device)
            valid = (rows < vs[:, 0, None, None]) & (cols < vs[:, 1, None, None])
            x = x.masked_fill(~valid[:, None], 0.0)  # +0.0 exactly, as padding gives
        return self._pad(x)

    def _pad(self, x: Tensor) -> Tensor:
        div = self.size_divisibility
        h, w = x.shape[-2:]
        pad_h, pad_w = (div - h % div) % div, (div - w % div) % div
        return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x

    def forward(
        self,
        images: Tensor,
        num_views: int = 1,
        view_sizes: Tensor | None = None,
        normalized: bool = False,
        aux: bool = True,
        view_chunk: int | None = None,
        factored: bool | None = None,
    ) -> Outputs:
        """Run both passes (or the image-level pass only in Mask2Former mode).

        Args:
            images: views image-major ``[img0-full, img0-crop1, ..., img1-full, ...]``, 0..255
                RGB (uint8 or float), or already normalised when ``normalized=True``.
            num_views: T, views per image (N must be a multiple of it).
            view_sizes: unpadded (h, w) of each view; the padding is re-zeroed after
                normalisation (official order: normalise, then pad).
            normalized: the images are already normalised and padded (e.g. the official tensor).
            aux: return the intermediate predictions (``aux_outputs``, needed by the losses).
                Inference passes False: each intermediate mask prediction is freed once used.
            view_chunk: run the backbone, the pixel decoder and the image-level pass on this many
                views at a time (they treat views independently; the outputs are the same up to
                float rounding).
                ``None``: all views at once. 1 bounds the activation memory of multi-view
                inference on CPU.
            factored: return the mask logits factored (``mask_embed`` + ``mask_features``, see
                ``schema.PassOutputs``) instead of ``pred_masks``. ``None`` (default): as the
                decoder's ``training_mask_logits`` says for training forwards (training mode,
                ``aux=True``); full ``pred_masks`` otherwise.

        Shape:
            images: (N, 3, H, W); view_sizes: (N, 2).
            returns Outputs: image_level pred_logits (N, Q, 2), pred_masks (N, Q, H'/4, W'/4);
            batch_level (if association) pred_logits (B, Q, 2), pred_masks (B, Q, T, H'/4, W'/4).
            Factored: mask_embed (N or B, Q, C) per prediction and mask_features per pass.
        """
        if num_views < 1 or images.shape[0] % num_views != 0:
            raise ValueError(
                f"images has {images.shape[0]} views, not a positive multiple of "
                f"num_views={num_views}"
            )
        if view_chunk is not None and view_chunk < 1:
            raise ValueError(f"view_chunk={view_chunk} must be >= 1 or None")
        x = self._pad(images.float()) if normalized else self.normalize(images, view_sizes)
        mask_features, multi_scale = self.encode(x, view_chunk)
        factor = self.decoder.factored(aux, factored)
        image_level, states = self.image_level_pass(
            multi_scale, mask_features, aux, view_chunk, factor
        )
        out: Outputs = {"image_level": image_level}
        if self.association is not None:
            queries = self.association(states, self.decoder.query_pos.weight, num_views)
            out["batch_level"] = self.decoder.forward_batch_level(
                queries, multi_scale, mask_features, num_views, aux, factor
            )
        return out

    def image_level_pass(
        self,
        multi_scale: list[Tensor],
        mask_features: Tensor,
        aux: bool = True,
        view_chunk: int | None = None,
        factored: bool | None = None,
    ) -> tuple[PassOutputs, Tensor]:
        """The decoder's image-level pass, optionally ``view_chunk`` views at a time (each view is
        decoded on its own, so chunks only bound the transient attention memory).

        Shape: as :meth:`MaskedAttentionDecoder.forward_image_level`.
        """
        n = mask_features.shape[0]
        if view_chunk is None or view_chunk >= n:
            return self.decoder.forward_image_level(multi_scale, mask_features, aux, factored)
        parts = [
            self.decoder.forward_image_level(
                [f[i : i + view_chunk] for f in multi_scale],
                mask_features[i : i + view_chunk],
                aux,
                factored,
            )
            for i in range(0, n, view_chunk)
        ]
        outs = [p[0] for p in parts]
        # every tensor entry (pred_logits, pred_masks or mask_embed + mask_features) is per view
        merged: dict[str, Any] = {
            key: torch.cat([cast(Tensor, o[key]) for o in outs])  # type: ignore[literal-required]
            for key in outs[0]
            if key != "aux_outputs"
        }
        merged["aux_outputs"] = [
            {key: torch.cat([layer[key] for layer in layers]) for key in layers[0]}
            for layers in zip(*(o["aux_outputs"] for o in outs))
        ]
        return cast(PassOutputs, merged), torch.cat([p[1] for p in parts])

    def encode(self, x: Tensor, view_chunk: int | None = None) -> tuple[Tensor, list[Tensor]]:
        """Backbone and pixel decoder, optionally ``view_chunk`` views at a time.

        Shape: x (N, 3, H, W) normalised and padded; returns mask_features (N, C, H/4, W/4) and
        the multi-scale features (N, C, h_l, w_l), lowest resolution first.
        """
        if view_chunk is None or view_chunk >= x.shape[0]:
            return self.pixel_decoder(self.backbone(x))
        parts = [self.pixel_decoder(self.backbone(c)) for c in x.split(view_chunk)]
        mask_features = torch.cat([p[0] for p in parts])
        multi_scale = [torch.cat(level) for level in zip(*(p[1] for p in parts))]
        return mask_features, multi_scale
