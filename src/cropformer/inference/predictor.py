"""Predict entities on any image (any size or aspect ratio) with a trained network.

The image is turned into the official evaluation views (full view resized to ``short_side`` /
``max_size`` plus fixed corner crops), run through the network in one batch and fused back at the
image's original resolution by the fusion (``MultiViewFusion``), whose query chunking bounds the
memory for very large images (e.g. 15000 px panoramas).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cropformer.data.views import OFFICIAL_TEST_VIEWS, InferenceViews, build_eval_views
from cropformer.schema import Batch, EntityPrediction, Outputs
from cropformer.utils.hardware import cpu_precision_warning
from cropformer.utils.precision import INFERENCE_PRECISIONS, autocast_dtype, precision_of

log = logging.getLogger(__name__)


def as_rgb_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Bring an image to (H, W, 3) uint8 RGB: grayscale is repeated, an alpha channel dropped.

    Shape: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (H, W, 3).
    """
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"expected an (H, W), (H, W, 3) or (H, W, 4) image array, got shape {arr.shape}; "
            "channel-first tensors must be permuted to (H, W, C)"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image has no pixels: shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0  # 0..1 floats
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def predict_entities(
    net: Callable[..., Outputs],
    fusion: Callable[[Outputs, Batch], list[EntityPrediction]],
    batch: Batch,
    *,
    device: torch.device | str | None = None,
    network_context: contextlib.AbstractContextManager[Any] | None = None,
    **net_kwargs: Any,
) -> list[EntityPrediction]:
    """The one inference path: the network on a collated batch's views, then the fusion.

    Used by validation and ``eval.py`` (``CropFormerModule.predict_entities``) and by
    ``predict.py`` / the Python API (``EntityPredictor.predict_samples``), so both compute the
    same predictions from the same batch. ``device`` moves the images there;
    ``network_context`` wraps the network alone (autocast: the fusion stays fp32).

    Shape: batch images (N, 3, H, W) with N = B * T -> B predictions at original resolution.
    """
    num_views = int(batch["boxes"].shape[1])
    images, view_sizes = batch["images"], batch["view_sizes"]
    if device is not None:
        images, view_sizes = images.to(device), view_sizes.to(device)
    with network_context or contextlib.nullcontext():
        outputs = net(images, num_views=num_views, view_sizes=view_sizes, **net_kwargs)
    return fusion(outputs, batch)


@dataclass(frozen=True)
class EvalViews:
    """The evaluation views of one image: a small picklable callable for DataLoader workers.

    ``EvalViews(views)(image)`` -> a sample dict (``views``, ``boxes``, ``orig_size``,
    ``image_id``, ``file_name``) ready for ``cropformer.data.collate.collate``; the views are
    planned by ``views`` (a ``InferenceViews``, the same planner validation and eval.py use).
    """

    views: InferenceViews = OFFICIAL_TEST_VIEWS

    def __call__(
        self, image: np.ndarray | torch.Tensor, image_id: int = 0, file_name: str = ""
    ) -> dict[str, Any]:
        """Shape: image (H, W, 3) uint8 (grayscale/RGBA accepted) -> T views (3, h_t, w_t)."""
        rgb = as_rgb_uint8(image)
        v = build_eval_views(rgb, self.views)
        return {
            "views": v["images"],
            "boxes": v["boxes"],
            "orig_size": rgb.shape[:2],
            "image_id": image_id,
            "file_name": file_name or f"<image {image_id}>",
        }


class EntityPredictor:
    """Image(s) in, ``EntityPrediction`` out, at each image's original resolution.

    Args:
        net: the network, called as ``net(images, num_views=T, view_sizes=...) -> Outputs``
            (``CropFormer``; Mask2Former mode when it has no batch-level pass).
        fusion: ``fusion(outputs, batch) -> list[EntityPrediction]`` (``MultiViewFusion``).
        short_side, max_size: full-view (and crop-view) test size (official 800 / 1333).
        num_crops: crops per image (official 4); 0 = full view only.
        crop_ratio, stride_ratio: crop geometry (official 0.7 / 0.6).
        crop_mode: ``fixed`` (4 corners), ``fixed8`` or ``none``.
        crop_max_size: long-side cap of crop views (official MAX_SIZE_TRAIN; None = ``max_size``).
        cover_gap: widen ratio-0.5 crops of odd sides (``data.crop.cover_gap``; not official).
            The view settings default to ``OFFICIAL_TEST_VIEWS`` and are kept in ``test_views``
            (a ``InferenceViews``): validation, eval.py and this predictor plan views with it.
        device: where the network runs (``"cpu"``, ``"cuda"``, ``"auto"``).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (or the Lightning names of the same
            autocast, ``utils.precision``): autocast for the network only (what runs in
            which precision: ``precision_parts``); the fusion always works in float32. On a CPU
            without bf16/fp16 units (no AVX512_BF16/AMX) a reduced precision is emulated and
            slower than fp32: one warning line says so (``precision_warning``).
        The views of an image are built by ``view_settings`` (an ``EvalViews`` over
        ``test_views``), with ``cropformer.data.views.build_eval_views``.
        view_chunk: views run through the backbone, pixel decoder and image-level pass at a time
            (``CropFormer`` networks only; the views are independent there, the result is the same
            up to float rounding). ``"auto"``: 1 on CPU (bounds the activation memory of the
            5-view forward), all at once on GPU; an int or None (all) forces it.
        pixel_decoder: the pixel decoder's share of a reduced precision (``PIXEL_DECODER``):
            ``"fp32"`` all of it in fp32 (official autocast behaviour, ``force_fp32``),
            ``"encoder"`` its deformable encoder in bf16/fp16 but the FPN step to stride 4 and
            the mask-feature projection in fp32 (measured as safe as ``fp32``), ``"all"`` all of
            it in bf16/fp16; ``"auto"``: ``"encoder"`` under bf16/fp16, the network's own
            setting under fp32; None keeps the network's setting. Sets the network's flags.

    A ``CropFormer`` network is also called with ``aux=False``: the intermediate predictions of
    the decoder are not kept (the losses need them, inference does not).
    """

    def __init__(
        self,
        net: nn.Module,
        fusion: Callable[[Outputs, Batch], list[EntityPrediction]],
        *,
        short_side: int = OFFICIAL_TEST_VIEWS.short_side,
        max_size: int = OFFICIAL_TEST_VIEWS.max_size,
        num_crops: int = OFFICIAL_TEST_VIEWS.num_crops,
        crop_ratio: float = OFFICIAL_TEST_VIEWS.crop_ratio,
        stride_ratio: float = OFFICIAL_TEST_VIEWS.stride_ratio,
        crop_mode: str = OFFICIAL_TEST_VIEWS.crop_mode,
        crop_max_size: int | None = None,
        cover_gap: bool = OFFICIAL_TEST_VIEWS.cover_gap,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        view_chunk: int | str | None = "auto",
        pixel_decoder: str | None = "auto",
    ) -> None:
        if short_side < 1 or max_size < short_side:
            raise ValueError(
                f"need 1 <= short_side <= max_size, got short_side={short_side}, "
                f"max_size={max_size}"
            )
        if str(precision) not in INFERENCE_PRECISIONS:
            raise ValueError(
                f"precision={precision!r} is not one of {sorted(INFERENCE_PRECISIONS)}"
            )
        test_views = InferenceViews(  # checks the view settings
            short_side=int(short_side),
            max_size=int(max_size),
            num_crops=int(num_crops) if crop_mode != "none" else 0,
            crop_ratio=float(crop_ratio),
            stride_ratio=float(stride_ratio),
            crop_mode=crop_mode if num_crops > 0 else "none",
            crop_max_size=crop_max_size,
            cover_gap=bool(cover_gap),
        )
        if str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if pixel_decoder is not None and pixel_decoder not in PIXEL_DECODER:
            raise ValueError(
                f"pixel_decoder={pixel_decoder!r} is not one of {PIXEL_DECODER} (or None)"
            )
        self.net = net.to(device).eval()
        set_pixel_decoder_precision(net, pixel_decoder, autocast_dtype(precision) is not None)
        self.fusion = fusion
        self.test_views = test_views
        self.short_side, self.max_size = test_views.short_side, test_views.max_size
        self.num_crops, self.crop_mode = test_views.num_crops, test_views.crop_mode
        self.crop_ratio, self.stride_ratio = test_views.crop_ratio, test_views.stride_ratio
        self.crop_max_size = test_views.crop_max_size
        self.device = torch.device(device)
        self.precision = str(precision)
        #: the warning line when the reduced precision is emulated on this CPU (else None)
        self.precision_warning = (
            cpu_precision_warning(self.precision) if self.device.type == "cpu" else None
        )
        if self.precision_warning:
            log.warning(self.precision_warning)
        self.view_settings = EvalViews(test_views)
        if view_chunk == "auto":
            view_chunk = 1 if self.device.type == "cpu" else None
        if view_chunk is not None and (not isinstance(view_chunk, int) or view_chunk < 1):
            raise ValueError(f"view_chunk={view_chunk!r} must be 'auto', None or an int >= 1")
        self.net_kwargs: dict[str, Any] = {}
        from cropformer.model.cropformer import CropFormer

        if isinstance(net, CropFormer):
            self.net_kwargs = {"aux": False, "view_chunk": view_chunk}

    def precision_parts(self) -> str:
        """Which parts of the network run in the reduced precision and which stay fp32."""
        return precision_parts(self.net, self.precision)

    def views(self, image: np.ndarray) -> dict[str, Any]:
        """The evaluation views of one (H, W, 3) uint8 image (views, boxes, orig_size, ...)."""
        return self.view_settings(image)

    def make_batch(self, images: Sequence[np.ndarray]) -> Batch:
        """Collate the views of several images into one Batch (image ids 0..B-1).

        All images must yield the same number of views (tiny images may get fewer crops).
        """
        from cropformer.data.collate import collate

        return collate([self.view_settings(image, i) for i, image in enumerate(images)])

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray | torch.Tensor]) -> list[EntityPrediction]:
        """Predict the entities of several images, one forward pass per group of images whose
        views have the same sizes (the frames of one camera: normally one group).

        Shape: each image (H_i, W_i, 3) uint8 (grayscale and RGBA accepted); returns id maps of
        shape (H_i, W_i).
        """
        return self.predict_samples([self.view_settings(im, i) for i, im in enumerate(images)])

    @torch.no_grad()
    def predict_samples(self, samples: Sequence[dict[str, Any]]) -> list[EntityPrediction]:
        """Network + fusion for samples made by ``EvalViews`` (e.g. in DataLoader workers).

        Samples whose views have the same sizes (the frames of one camera) share one forward
        pass; others run apart, because a shared padded size would change their predictions.
        So a batch gives what one image at a time gives. Results keep the order.
        """
        from cropformer.data.collate import collate

        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for i, sample in enumerate(samples):
            sizes = tuple(tuple(int(d) for d in v.shape[-2:]) for v in sample["views"])
            groups.setdefault(sizes, []).append(i)
        results: list[EntityPrediction | None] = [None] * len(samples)
        for members in groups.values():
            batch = collate([samples[i] for i in members])
            preds = predict_entities(
                self.net,
                self.fusion,
                batch,
                device=self.device,
                network_context=self._autocast(),
                **self.net_kwargs,
            )
            for i, pred in zip(members, preds):
                results[i] = pred
        return [r for r in results if r is not None]

    def predict(self, image: np.ndarray | torch.Tensor) -> EntityPrediction:
        """Predict the entities of one image (any size or aspect ratio)."""
        return self.predict_batch([image])[0]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = autocast_dtype(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)


#: ``pixel_decoder`` settings of ``EntityPredictor`` / predict.py / eval.py
PIXEL_DECODER = ("auto", "fp32", "encoder", "all")


def set_pixel_decoder_precision(net: nn.Module, mode: str | None, reduced: bool) -> None:
    """Set the pixel decoder's ``force_fp32`` / ``fpn_fp32`` for ``mode`` (``PIXEL_DECODER``).

    ``auto`` means ``encoder`` when ``reduced`` (bf16/fp16 autocast) and no change otherwise;
    None changes nothing. Networks without such a pixel decoder are left alone.
    """
    pixel_decoder = getattr(net, "pixel_decoder", None)
    if mode is None or not hasattr(pixel_decoder, "force_fp32"):
        return
    if mode == "auto":
        if not reduced:
            return
        mode = "encoder"
    pixel_decoder.force_fp32 = mode == "fp32"  # type: ignore[union-attr]
    pixel_decoder.fpn_fp32 = mode == "encoder"  # type: ignore[union-attr]


def precision_parts(net: nn.Module, precision: str) -> str:
    """One line: the parts of ``net`` that autocast runs in ``precision`` and those kept fp32.

    The fusion (and, in training, the losses and the matcher) always compute in fp32; inside the
    network the HorNet global filter's FFT and the deformable-attention sampling core stay fp32,
    and the pixel decoder as a whole stays fp32 when its ``force_fp32`` is set (official) or
    only its FPN step and mask-feature projection when ``fpn_fp32`` is.
    """
    dtype = autocast_dtype(precision)
    if dtype is None:  # no autocast: fp32, or Lightning's "-true" precisions that cast the weights
        entry = precision_of(precision)
        plain = entry is not None and entry.family == "fp32"
        return "fp32: all" if plain else f"{precision}: all (no autocast)"
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    reduced, fp32 = ["backbone"], []
    if any(type(m).__name__ == "GlobalLocalFilter" for m in net.modules()):
        fp32.append("HorNet FFT filter")
    pixel_decoder = getattr(net, "pixel_decoder", None)
    if pixel_decoder is not None:
        if getattr(pixel_decoder, "force_fp32", False):
            fp32.append("pixel decoder (force_fp32)")
        elif getattr(pixel_decoder, "fpn_fp32", False):
            reduced.append("pixel-decoder encoder")
            fp32.append("deformable sampling core, FPN + mask features")
        else:
            reduced.append("pixel decoder")
            fp32.append("deformable sampling core")
    reduced.append("decoder")
    if getattr(net, "association", None) is not None:
        reduced.append("association")
    fp32.append("fusion")
    return f"{name}: {', '.join(reduced)}; fp32: {', '.join(fp32)}"
