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
from cropformer.data.categories import CategorySet
from cropformer.inference.files import (
    LAYOUTS,
    FilesSummary,
    Output,
    PredictedFile,
    every_nth,
    input_root,
    list_images,
    mirror_names,
    output_stems,
    run_on_files,
)
from cropformer.inference.output_modes import OutputMode
from cropformer.inference.predictor import EntityPredictor
from cropformer.utils.errors import UserError
from cropformer.utils.precision import INFERENCE_PRECISIONS, USER_PRECISIONS, precision_of


class Segmenter:
    """A loaded network with its test-time views and fusion: call it on images.

    Made by ``load_segmenter``. ``seg(image)`` -> ``Entities``; ``seg([a, b])`` -> a list (one
    forward per ``images_per_batch`` images); ``seg.id_map(image)`` -> the ``[H, W]`` integer
    map of ``output_mode`` (e.g. the official demo's); ``seg.predict_files(...)`` runs over many
    files.

    ``task`` is the checkpoint's task: ``entity``, or ``instance`` / ``panoptic`` / ``semantic``
    for a class-aware one, whose ``classes`` is its class set (``classes.ids``, ``.names``,
    ``.isthing`` in the class head's order; None for an entity checkpoint).
    """

    def __init__(
        self,
        predictor: EntityPredictor,
        info: CheckpointInfo,
        settings: dict[str, Any],
        fusion_config: Mapping[str, Any] | None = None,
        *,
        output_mode: OutputMode | str | Mapping[str, Any] | None = None,
        task: str = "entity",
        classes: CategorySet | None = None,
    ):
        self.predictor = predictor
        self.info = info
        self.settings = settings
        self.fusion_config = dict(fusion_config or {})
        self.output_mode = OutputMode.of(output_mode)
        self.task = task
        self.classes = classes

    def producer(self, suffixes: list[str], mode: OutputMode | None = None) -> dict[str, Any]:
        """What makes this segmenter's outputs, recorded in each output folder: the checkpoint's
        identity (no path) and every setting that changes pixels (views, fusion, precision and
        the parts it covers, runtime, the files written, the output mode). ``view_chunk`` is
        left out: it changes the memory, not the result."""
        return {
            "checkpoint": self.info.identity(),
            "inference": {
                **self.settings,
                "fusion": {k: v for k, v in self.fusion_config.items() if k != "_target_"},
            },
            "precision": f"{self.predictor.precision} ({self.predictor.precision_parts()})",
            "runtime": runtime_label(self.predictor.net),
            "outputs": sorted(suffixes),
            "output_mode": (mode or self.output_mode).settings(),
        }

    def _default_batch(self) -> int:
        return 1 if self.predictor.device.type == "cpu" else 4

    def id_map(
        self,
        images: Any,
        *,
        images_per_batch: int | None = None,
        output: OutputMode | str | Mapping[str, Any] | None = None,
    ) -> Any:
        """The ``[H, W]`` id map(s) of an image or a list of images, in the output mode.

        0 = no entity, ``j + 1`` = kept entity ``j`` (``OutputMode``; dtype uint16 or uint8). A
        path is read as the mode's reader reads it (``official_demo``: detectron2's
        ``read_image``). A list runs ``images_per_batch`` images per forward (default 1 on CPU, 4
        on GPU); images of one size share a forward, and the maps equal those of one image at a
        time.

        Shape: an image (H, W, 3) -> (H, W); a list -> a list of (H_i, W_i).
        """
        mode = OutputMode.of(output) if output is not None else self.output_mode
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        size = max(1, images_per_batch or self._default_batch())
        maps: list[np.ndarray] = []
        for start in range(0, len(items), size):
            group = items[start : start + size]
            preds = self.predictor.predict_batch([_read(im, mode) for im in group])
            maps += [
                mode.id_map(p, where=_name(im) or f"image {start + k}")
                for k, (p, im) in enumerate(zip(preds, group))
            ]
        return maps[0] if single else maps

    def describe(self) -> str:
        """One line: views, crops, fusion, precision, checkpoint and step."""
        line = describe_settings(
            self.info, self.settings, self.predictor.fusion, self.predictor.precision
        )
        if self.classes is not None:
            line += (
                f"; task {self.task} ({len(self.classes)} classes: {self.classes.num_things} "
                f"things, {self.classes.num_stuff} stuff)"
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
                out += [self._entities(p, _name(im)) for p, im in zip(preds, group)]
            return out
        return self._entities(self.predictor.predict(to_rgb(images)), _name(images))

    def _entities(self, prediction: Any, file_name: str | None) -> Entities:
        return Entities(prediction, file_name, task=self.task, classes=self.classes)

    def predict_files(
        self,
        inputs: Any,
        output_dir: str | Path,
        *,
        id_map: bool = True,
        rle_json: bool | None = None,
        overlay: bool = False,
        output: OutputMode | str | Mapping[str, Any] | None = None,
        layout: str = "flat",
        id_map_suffix: str | None = None,
        every: int = 1,
        shard: tuple[int, int] = (0, 1),
        shard_by: str = "frame",
        resume: bool = True,
        num_workers: int | None = None,
        images_per_batch: int | None = None,
        progress: bool | None = None,
    ) -> FilesSummary:
        """Segment a folder / glob / list of files and write per image:

        - the id map (``id_map``): ``<name>_ids.png`` (``fused``) or ``<name>.png``
          (``official_demo``), or ``<name><id_map_suffix>``; 0 = none, ``j + 1`` = entity ``j``
          of the output mode, uint16 (or uint8 on request);
        - ``<name>.json`` (``rle_json``; default on for ``fused``, off for ``official_demo``):
          the same entities as COCO RLE with scores;
        - ``<name>_overlay.png`` (``overlay``).

        ``output`` is the output mode (default ``self.output_mode``; ``OutputMode`` or a format
        name). ``layout="flat"`` names outputs by file stem (``a__b`` when stems repeat);
        ``"mirror"`` writes ``<output_dir>/<input path relative to the input folder>``. Frames
        come in natural order (``2.jpg`` before ``10.jpg``); ``every=n`` keeps every n-th frame of
        each folder. Resumes (complete images are skipped), shards (``shard=(i, n)`` over frames
        or, with ``shard_by="scene"``, over the folders holding them), decodes in ``num_workers``
        processes and runs ``images_per_batch`` images per forward (default 1 on CPU, 4 on GPU).
        See ``inference.files.run_on_files``.
        """
        from cropformer.evaluation import writers

        mode = OutputMode.of(output) if output is not None else self.output_mode
        if layout not in LAYOUTS:
            raise UserError(f"output_layout={layout!r}: use flat (by file stem) or mirror")
        files = every_nth(list_images(inputs), every)
        demo = mode.format == "official_demo"
        suffix = id_map_suffix or (".png" if demo else "_ids.png")
        if not suffix.lower().endswith(".png"):
            raise UserError(f"id_map_suffix={suffix!r}: the id map is a PNG; end it in .png")
        outputs = []
        if id_map:
            outputs.append(Output(suffix, lambda p, r: _write_ids(p, r, mode)))
        if rle_json if rle_json is not None else not demo:
            outputs.append(Output(".json", lambda p, r: _write_json(p, r, mode)))
        if overlay:
            outputs.append(
                Output(
                    "_overlay.png",
                    lambda p, r: writers.write_overlay(p, _image_of(r), mode.select(r.prediction)),
                    needs_image=True,
                )
            )
        if not outputs:
            raise UserError("nothing to write: enable at least one of id_map, rle_json, overlay")
        if len({o.suffix for o in outputs}) < len(outputs):
            raise UserError(f"id_map_suffix={suffix!r} collides with another output's suffix")
        names = mirror_names(files, input_root(inputs)) if layout == "mirror" else None
        return run_on_files(
            self.predictor,
            files,
            output_dir,
            outputs,
            stems=names if names is not None else output_stems(files),
            shard=shard,
            shard_by=shard_by,
            resume=resume,
            num_workers=num_workers,
            images_per_batch=images_per_batch or self._default_batch(),
            loader=_reader(mode),
            progress=progress,
            producer=self.producer([o.suffix for o in outputs], mode),
        )


def _reader(mode: OutputMode) -> Any:
    """The image reader of an output mode (the official demo reads as detectron2 does)."""
    from cropformer.data.decode import load_image, load_image_detectron2

    return load_image_detectron2 if mode.format == "official_demo" else load_image


def _read(image: Any, mode: OutputMode) -> np.ndarray:
    if isinstance(image, (str, Path)):
        return np.asarray(_reader(mode)(image))
    return to_rgb(image)


def _write_ids(path: Path, result: PredictedFile, mode: OutputMode) -> None:
    from PIL import Image

    ids = mode.id_map(result.prediction, where=str(result.path))
    Image.fromarray(ids).save(path, compress_level=3)  # uint16 -> 16-bit PNG, uint8 -> 8-bit


def _write_json(path: Path, result: PredictedFile, mode: OutputMode) -> None:
    import json

    from cropformer.evaluation.writers import rle_document

    chosen = mode.select(result.prediction)
    doc = rle_document(chosen, file_name=str(result.path), image_id=result.index)
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
    official_task: str | None = None,
    official_classes: Any = None,
    view_chunk: int | str | None = "auto",
    pixel_decoder: str | None = "auto",
    runtime: str = "torch",
    exported: str | Path | None = None,
    calibration: str | Path | None = None,
    compile: bool = False,
    output: OutputMode | str | Mapping[str, Any] | None = None,
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
        official_task, official_classes: an official class-aware file's task (``instance``,
            ``panoptic``, ``semantic``) and class set (a categories json file or list); see
            ``read_checkpoint``.
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
        output: the output mode of ``Segmenter.id_map`` and ``predict_files``: ``"fused"``
            (default), ``"official_demo"``, or an ``OutputMode`` / dict with ``score_threshold``,
            ``min_area``, ``id_dtype``.

    Returns:
        A ``Segmenter``; ``Segmenter(image)`` gives ``Entities``.
    """
    if compile and (runtime != "torch" or is_exported(checkpoint)):
        raise UserError(f"compile=true is for runtime=torch, not runtime={runtime}")
    if runtime != "torch" or is_exported(checkpoint):
        parts = runtime_parts(
            checkpoint,
            runtime=runtime,
            exported=exported,
            calibration=calibration,
            device=device,
            precision=str(precision),
            fusion=fusion,
            model=model,
            official_config=official_config,
            official_task=official_task,
            official_classes=official_classes,
            views={
                "short_side": short_side,
                "max_size": max_size,
                "num_crops": num_crops,
                "crop_ratio": crop_ratio,
            },
        )
        runner = EntityPredictor(
            parts.net,
            parts.fusion,
            device="cpu",
            precision="32",
            pixel_decoder=None,
            **parts.settings,
        )
        return Segmenter(
            runner,
            parts.info,
            parts.settings,
            parts.fusion_config,
            output_mode=OutputMode.of(output),
            task=parts.task,
            classes=parts.classes,
        )
    entry = precision_of(precision)
    if entry is None or str(precision) not in INFERENCE_PRECISIONS:
        raise UserError(f"precision={precision}: use one of {', '.join(USER_PRECISIONS)}")
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device} but no CUDA device is visible; use device=cpu")
    output_mode = OutputMode.of(output)
    loaded = read_checkpoint(
        checkpoint,
        fusion=fusion,
        model=model,
        official_config=official_config,
        official_task=official_task,
        official_classes=official_classes,
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
    classes = CategorySet.from_json(loaded.classes) if loaded.classes else None
    return Segmenter(
        predictor,
        info,
        settings,
        loaded.fusion_config,
        output_mode=output_mode,
        task=loaded.task,
        classes=classes,
    )
