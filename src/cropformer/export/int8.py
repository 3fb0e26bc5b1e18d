"""int8 post-training quantization of an exported file, calibrated on a few training images.

ONNX: ONNX Runtime's static quantizer (QDQ format, int8 weights per channel, uint8 activations,
min-max calibration) on the convolutions and matrix products. OpenVINO: NNCF's post-training
quantization (mixed preset, transformer model type) of the IR. Both keep the fusion in fp32 (it
stays in the library). int8 is never a default: ``precision=int8`` asks for it.

The calibration inputs are the test views (the same ``EvalViews`` as at prediction time) of the
first ``count`` images of the calibration folder, sorted by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cropformer.export.files import METADATA_KEY, read_metadata
from cropformer.utils.errors import UserError

_INSTALL = "pip install 'cropformer[deploy]'"


def calibration_feeds(
    source: str | Path, settings: Mapping[str, Any], count: int = 8
) -> list[dict[str, np.ndarray]]:
    """The network inputs (``images``, ``view_sizes``) of ``count`` calibration images.

    Raises:
        UserError: no readable image at ``source``.
    """
    from cropformer.data.collate import collate
    from cropformer.data.decode import load_image
    from cropformer.data.views import InferenceViews
    from cropformer.inference.files import list_images
    from cropformer.inference.predictor import EvalViews

    files = sorted(list_images(str(source)))[: max(1, count)]
    if not files:
        raise UserError(f"calibration={source}: no images found")
    views = EvalViews(InferenceViews(**dict(settings)))
    feeds = []
    for i, path in enumerate(files):
        batch = collate([views(load_image(path), i)])
        feeds.append(
            {
                "images": batch["images"].float().numpy(),
                "view_sizes": batch["view_sizes"].long().numpy(),
            }
        )
    return feeds


def quantizer(
    fmt: str,
    calibration: Any,
    *,
    settings: Mapping[str, Any],
    count: int = 8,
) -> Callable[[Path, Path], None]:
    """``quantize(fp32_file, int8_file)`` for ``fmt``, calibrated on ``calibration`` (a folder or
    glob of training images, or a list of prepared feeds)."""
    if calibration is None:
        raise UserError("precision=int8 needs calibration=<folder or glob of training images>")

    def feeds() -> list[dict[str, np.ndarray]]:
        if isinstance(calibration, list):
            return calibration
        return calibration_feeds(calibration, settings, count)

    def quantize(source: Path, target: Path) -> None:
        if fmt == "onnx":
            quantize_onnx(source, target, feeds())
        else:
            quantize_openvino(source, target, feeds())

    return quantize


def _int8_metadata(source: Path, calibration_images: int) -> str:
    meta = read_metadata(source)
    meta["precision"] = "int8"
    meta["calibration_images"] = calibration_images
    return json.dumps(meta, sort_keys=True)


def quantize_onnx(source: Path, target: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """ONNX Runtime static quantization (QDQ, per-channel int8 weights) of ``source``."""
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as err:
        raise UserError(f"int8 for ONNX needs onnxruntime: {_INSTALL}") from err

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    tmp = target.with_name(f".{target.stem}.tmp.onnx")
    try:
        quantize_static(
            str(source),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
        )
        model = onnx.load(str(tmp))
        onnx.helper.set_model_props(model, {METADATA_KEY: _int8_metadata(source, len(feeds))})
        onnx.save_model(model, str(tmp))
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def quantize_openvino(source: Path, target: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """NNCF post-training quantization of the OpenVINO IR ``source``."""
    try:
        import nncf
        import openvino as ov
    except ImportError as err:
        raise UserError(f"int8 for OpenVINO needs nncf and openvino: {_INSTALL}") from err
    model = ov.Core().read_model(str(source))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(feeds),
        preset=nncf.QuantizationPreset.MIXED,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(feeds),
    )
    quantized.set_rt_info(_int8_metadata(source, len(feeds)), [METADATA_KEY])
    tmp = target.with_name(f".{target.stem}.tmp.xml")
    ov.save_model(quantized, str(tmp), compress_to_fp16=False)
    tmp.with_suffix(".bin").replace(target.with_suffix(".bin"))
    tmp.replace(target)
