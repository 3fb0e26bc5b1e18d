"""``Segmenter``: a loaded network with its test-time views and fusion; ``load_segmenter``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cropformer.api.entities import Entities, to_rgb
from cropformer.api.loading import CheckpointInfo, describe_settings, read_checkpoint
from cropformer.api.runtimes import is_exported, runtime_label, runtime_parts
from cropformer.api.settings import test_settings
from cropformer.inference.files import (
    FilesSummary,
    Output,
    PredictedFile,
    list_images,
    output_stems,
    run_on_files,
)
from cropformer.inference.predictor import EntityPredictor
from cropformer.utils.errors import UserError
from cropformer.utils.precision import INFERENCE_PRECISIONS, USER_PRECISIONS, precision_of


class Segmenter:
    """A loaded network with its test-time views and fusion: call it on images.

    Made by ``load_segmenter``. ``seg(image)`` -> ``Entities``; ``seg([a, b])`` -> a list (one
    forward per ``images_per_batch`` images); ``seg.predict_files(...)`` runs over many files.
    """

    def __init__(
        self,
        predictor: EntityPredictor,
        info: CheckpointInfo,
        settings: dict[str, Any],
        fusion_config: Mapping[str, Any] | None = None,
    ):
        self.predictor = predictor
        self.info = info
        self.settings = settings
        self.fusion_config = dict(fusion_config or {})

    def producer(self, suffixes: list[str]) -> dict[str, Any]:
        """What makes this segmenter's outputs, recorded in each output folder: the checkpoint's
        identity (no path) and every setting that changes pixels (views, fusion, precision and
        the parts it covers, runtime, the files written). ``view_chunk`` is left out: it
        changes the memory, not the result."""
        return {
            "checkpoint": self.info.identity(),
            "inference": {
                **self.settings,
                "fusion": {k: v for k, v in self.fusion_config.items() if k != "_target_"},
            },
            "precision": f"{self.predictor.precision} ({self.predictor.precision_parts()})",
            "runtime": runtime_label(self.predictor.net),
            "outputs": sorted(suffixes),
        }

    def describe(self) -> str:
        """One line: views, crops, fusion, precision, checkpoint and step."""
        line = describe_settings(
            self.info, self.settings, self.predictor.fusion, self.predictor.precision
        )
        net: Any = self.predictor.net
        if hasattr(net, "runtime"):  # an exported file (export.session.ExportedNetwork)
            kind = net.metadata.get("precision", "fp32")
            line += f"; runtime {net.runtime} ({kind} file {net.path.name}, {net.precision})"
        return line

    def __call__(self, images: Any, images_per_batch: int = 1) -> Any:
        if isinstance(images, (list, tuple)):
            out: list[Entities] = []
            for start in range(0, len(images), max(1, images_per_batch)):
                group = images[start : start + max(1, images_per_batch)]
                preds = self.predictor.predict_batch([to_rgb(im) for im in group])
                out += [Entities(p, _name(im)) for p, im in zip(preds, group)]
            return out
        return Entities(self.predictor.predict(to_rgb(images)), _name(images))

    def predict_files(
        self,
        inputs: Any,
        output_dir: str | Path,
        *,
        id_map: bool = True,
        rle_json: bool = True,
        overlay: bool = False,
        shard: tuple[int, int] = (0, 1),
        resume: bool = True,
        num_workers: int | None = None,
        images_per_batch: int | None = None,
        progress: bool | None = None,
    ) -> FilesSummary:
        """Segment a folder / glob / list of files; write per image ``<stem>_ids.png`` (16-bit,
        0 = none, k + 1 = entity k), ``<stem>.json`` (RLE) and optionally ``<stem>_overlay.png``.

        Resumes (complete images are skipped), shards (``shard=(i, n)``: every n-th file of the
        sorted list from i), decodes in ``num_workers`` processes and runs ``images_per_batch``
        images per forward (default 1 on CPU, 4 on GPU). See ``inference.files.run_on_files``.
        """
        from cropformer.evaluation import writers

        files = list_images(inputs)
        outputs = []
        if id_map:
            outputs.append(
                Output("_ids.png", lambda p, r: writers.write_id_map_png(p, r.prediction))
            )
        if rle_json:
            outputs.append(Output(".json", _write_json))
        if overlay:
            outputs.append(
                Output(
                    "_overlay.png",
                    lambda p, r: writers.write_overlay(p, _image_of(r), r.prediction),
                    needs_image=True,
                )
            )
        if not outputs:
            raise UserError("nothing to write: enable at least one of id_map, rle_json, overlay")
        if images_per_batch is None:
            images_per_batch = 1 if self.predictor.device.type == "cpu" else 4
        return run_on_files(
            self.predictor,
            files,
            output_dir,
            outputs,
            stems=output_stems(files),
            shard=shard,
            resume=resume,
            num_workers=num_workers,
            images_per_batch=images_per_batch,
            progress=progress,
            producer=self.producer([o.suffix for o in outputs]),
        )


def _write_json(path: Path, result: PredictedFile) -> None:
    import json

    from cropformer.evaluation.writers import rle_document

    doc = rle_document(result.prediction, file_name=str(result.path), image_id=result.index)
    path.write_text(json.dumps(doc))


def _image_of(result: PredictedFile) -> np.ndarray:
    assert result.image is not None  # Output(needs_image=True) keeps it
    return result.image


def _name(image: Any) -> str | None:
    return str(image) if isinstance(image, (str, Path)) else None


def load_segmenter(
    checkpoint: str | Path,
    *,
    device: str = "auto",
    precision: str = "fp32",
    short_side: int | None = None,
    max_size: int | None = None,
    num_crops: int | None = None,
    crop_ratio: float | None = None,
    fusion: Mapping[str, Any] | None = None,
    model: str | None = None,
    official_config: str | Path | None = None,
    view_chunk: int | str | None = "auto",
    pixel_decoder: str | None = "auto",
    runtime: str = "torch",
    exported: str | Path | None = None,
    calibration: str | Path | None = None,
    compile: bool = False,
) -> Segmenter:
    """Load a checkpoint for inference.

    Args:
        checkpoint: ours (``.ckpt``) or an official detectron2 ``.pth``/``.pkl`` (as published).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:i]``.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast for the network; fusion in fp32).
        short_side, max_size, num_crops, crop_ratio: test views; None = stored with the checkpoint
            (official file: 800, 1333, 4, 0.7).
        fusion: fusion overrides, e.g. ``{"decoder": "B-O"}`` (None values keep the stored ones).
        model, official_config: the architecture of an official file (default: from its keys).
        view_chunk: views per backbone pass (``auto``: 1 on CPU, all on GPU).
        pixel_decoder: under bf16/fp16: ``auto`` (= ``encoder``: its deformable encoder in
            bf16, FPN and mask features fp32), ``fp32`` (official autocast behaviour) or ``all``.
        runtime: ``torch`` (eager), ``onnxruntime`` or ``openvino``: the network runs from an
            exported file, exported on first use into a cache next to the checkpoint
            (``cropformer.export``); ``checkpoint`` may itself be an exported ``.onnx``/``.xml``
            file (its stored settings apply). ``precision`` then is ``fp32``, ``int8`` (a
            quantized file) or, with OpenVINO, ``bf16``.
        exported: an exported file of this checkpoint to use instead of the cache.
        calibration: ``precision="int8"``: a folder / glob of training images to calibrate on.
        compile: ``runtime="torch"`` only: ``torch.compile`` the network (dynamic shapes; the
            first images of each new size pay the compilation). Off by default: not measured
            faster on the 2-core CPU yet (benchmark row 8 measures it).

    Returns:
        A ``Segmenter``; ``Segmenter(image)`` gives ``Entities``.
    """
    if compile and (runtime != "torch" or is_exported(checkpoint)):
        raise UserError(f"compile=true is for runtime=torch, not runtime={runtime}")
    if runtime != "torch" or is_exported(checkpoint):
        net, fusion_module, settings, info, fusion_config = runtime_parts(
            checkpoint,
            runtime=runtime,
            exported=exported,
            calibration=calibration,
            device=device,
            precision=str(precision),
            fusion=fusion,
            model=model,
            official_config=official_config,
            views={
                "short_side": short_side,
                "max_size": max_size,
                "num_crops": num_crops,
                "crop_ratio": crop_ratio,
            },
        )
        runner = EntityPredictor(
            net, fusion_module, device="cpu", precision="32", pixel_decoder=None, **settings
        )
        return Segmenter(runner, info, settings, fusion_config)
    entry = precision_of(precision)
    if entry is None or str(precision) not in INFERENCE_PRECISIONS:
        raise UserError(f"precision={precision}: use one of {', '.join(USER_PRECISIONS)}")
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device} but no CUDA device is visible; use device=cpu")
    loaded = read_checkpoint(
        checkpoint, fusion=fusion, model=model, official_config=official_config
    )
    net, fusion_module = loaded.build()
    info = loaded.info
    settings = test_settings(
        info.stored_views,
        short_side=short_side,
        max_size=max_size,
        num_crops=num_crops,
        crop_ratio=crop_ratio,
    )
    try:
        predictor = EntityPredictor(
            net,
            fusion_module,
            device=device,
            precision=entry.family,
            view_chunk=view_chunk,
            pixel_decoder=pixel_decoder,
            **settings,
        )
    except ValueError as err:
        raise UserError(str(err)) from err
    if compile:
        predictor.net = torch.compile(predictor.net, dynamic=True)  # type: ignore[assignment]
    return Segmenter(predictor, info, settings, loaded.fusion_config)
