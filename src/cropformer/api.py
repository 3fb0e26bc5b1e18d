"""Python API: from a checkpoint (ours or an official detectron2 file) to entities.

    from cropformer import load_segmenter
    seg = load_segmenter("logs/train/runs/<run>/checkpoints/last.ckpt", device="cpu")
    entities = seg("photo.jpg")                 # or an (H, W, 3) array, a PIL image, or a list
    entities.id_map()                           # (H, W) int32: 0 = no entity, k + 1 = entity k

``load_segmenter`` takes the test sizes, crops and fusion stored with the checkpoint (ours store
the data config they were trained with; an official file gets the official 800 / 1333, 4 corner
crops of 0.7, fusion B-OC), so it gives exactly what ``predict.py`` gives; keywords override them.
``predict.py`` and ``eval.py`` load checkpoints through ``load_module`` here, and ``predict.py``
runs ``Segmenter.predict_files``, the one library path over many files.

This module sits on the top floor (it composes Hydra configs and builds the LightningModule).
It is longer than our ~450-line guide (~550) because checkpoint loading (ours, converted and
official files), the test settings they carry and the ``Segmenter`` that uses them are one path
that ``predict.py``, ``eval.py`` and Python callers must share; the loading half
(``load_module``, ``_load_foreign``) is the part to move out when it grows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cropformer.inference.files import (
    FilesSummary,
    Output,
    PredictedFile,
    list_images,
    output_stems,
    run_on_files,
)
from cropformer.inference.predictor import EntityPredictor, as_rgb_uint8
from cropformer.schema import EntityPrediction
from cropformer.utils.errors import UserError

__all__ = [
    "OFFICIAL_TEST_SETTINGS",
    "CheckpointInfo",
    "Entities",
    "Segmenter",
    "load_module",
    "load_segmenter",
    "test_settings",
]

# Official test-time views (reference doc §6): ResizeShortestEdge 800 / 1333, 4 corner crops of
# 0.7 per side placed with stride 0.6, crop views capped by MAX_SIZE_TRAIN (1333).
OFFICIAL_TEST_SETTINGS: dict[str, Any] = {
    "short_side": 800,
    "max_size": 1333,
    "num_crops": 4,
    "crop_ratio": 0.7,
    "stride_ratio": 0.6,
    "crop_mode": "fixed",
    "crop_max_size": 1333,
}
PRECISION_NAMES = {
    "fp32": "32",
    "32": "32",
    "32-true": "32",
    "bf16": "bf16",
    "bf16-mixed": "bf16",
    "fp16": "16",
    "16": "16",
    "16-mixed": "16",
}


@dataclass(frozen=True)
class CheckpointInfo:
    """Where the weights came from: file, kind (``lightning``/``converted``/``official``), the
    model config they were built with, the training step, and the stored test-time views."""

    path: Path
    kind: str
    model: str
    step: int | None
    stored_views: Mapping[str, Any]

    def describe(self) -> str:
        step = "?" if self.step is None else str(self.step)
        return f"{self.path} ({self.kind}, {self.model}, step {step})"


# ------------------------------------------------------------------------------------ loading
def load_module(
    checkpoint: str | Path,
    *,
    fusion: Mapping[str, Any] | None = None,
    model: str | Mapping[str, Any] | None = None,
    model_overrides: Sequence[str] = (),
    official_config: str | Path | None = None,
) -> tuple[Any, CheckpointInfo]:
    """Rebuild a ``CropFormerModule`` from any checkpoint file, fusion settings overridden.

    Args:
        checkpoint: ours (``.ckpt``), a converted file (``scripts/convert_official_checkpoint``),
            or an official detectron2 ``.pth``/``.pkl`` (converted in memory).
        fusion: fusion keys to override (None values keep the stored/official ones).
        model, model_overrides: our model config for an official/converted file: a ``model=``
            name (e.g. ``cropformer_swinl``) with overrides, or an already composed ``model`` node
            (``predict.py model=...``); default: guessed from the keys.
        official_config: the official (resolved) yaml config of an official file: builds the
            network with its exact sizes and takes its test sizes.

    Returns:
        (module in eval mode on the CPU, ``CheckpointInfo``).

    Raises:
        UserError: unreadable file, unknown format, or weights that do not fit (one line each).
    """
    from cropformer.model.checkpoint_io import checkpoint_kind, read_weights_file

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt={checkpoint}: file not found")
    try:
        stored = read_weights_file(path)
    except Exception as err:  # any unpickling failure: not a weights file
        raise UserError(f"ckpt={path}: cannot read it as a checkpoint ({err})") from err
    kind = checkpoint_kind(stored)
    overrides = {k: v for k, v in (fusion or {}).items() if v is not None}
    if kind == "lightning":
        from cropformer.training.module import CropFormerModule

        if model is not None or official_config is not None:
            raise UserError(
                f"ckpt={path} is a checkpoint of this platform: it rebuilds its own network; "
                "drop model=/official_config= (they are for official detectron2 files)"
            )

        merged = {**(stored["hyper_parameters"].get("fusion") or {}), **overrides}
        module = CropFormerModule.load_from_checkpoint(path, map_location="cpu", fusion=merged)
        data_cfg = stored.get("data_config") or {}
        info = CheckpointInfo(
            path=path,
            kind=kind,
            model=_model_name(stored["hyper_parameters"].get("net") or {}),
            step=_int_or_none(stored.get("global_step")),
            stored_views=views_from_data_config(data_cfg),
        )
        return module.eval(), info
    if kind in ("official", "converted"):
        return _load_foreign(path, stored, kind, overrides, model, model_overrides, official_config)
    raise UserError(
        f"ckpt={path}: neither a checkpoint of this platform (state_dict + hyper_parameters) nor "
        "an official detectron2 CropFormer/Mask2Former file (backbone.* and sem_seg_head.* keys)"
    )


def _load_foreign(
    path: Path,
    stored: Any,
    kind: str,
    fusion: Mapping[str, Any],
    model: str | Mapping[str, Any] | None,
    model_overrides: Sequence[str],
    official_config: str | Path | None,
) -> tuple[Any, CheckpointInfo]:
    """An official (or converted) file: build the network from a config, load strictly."""
    from cropformer.model.checkpoint_io import guess_official_model, official_weights
    from cropformer.model.convert import convert_official_state_dict
    from cropformer.training.module import CropFormerModule
    from cropformer.utils.config import compose_config

    if kind == "official":
        weights, unmapped = convert_official_state_dict(official_weights(stored) or {})
        if unmapped:
            raise UserError(
                f"ckpt={path}: {len(unmapped)} official keys map to nothing in this package "
                f"(first: {unmapped[0]}); is it a CropFormer/Mask2Former checkpoint?"
            )
        step = _int_or_none(stored.get("iteration")) if isinstance(stored, Mapping) else None
    else:
        weights = {k.removeprefix("net."): v for k, v in stored["state_dict"].items()}
        step = None
        model = model if model is not None else str(stored["model"])
    views = dict(OFFICIAL_TEST_SETTINGS)
    if official_config is not None:
        import yaml

        cfg_path = Path(official_config).expanduser()
        if not cfg_path.is_file():
            raise UserError(f"official_config={official_config}: file not found")
        official_cfg = yaml.safe_load(cfg_path.read_text())
        net_cfg: dict[str, Any] = {
            "_target_": "cropformer.model.convert.build_from_official_config",
            "_convert_": "all",
            "_recursive_": False,
            "cfg": official_cfg,
        }
        views.update(_views_from_official_config(official_cfg))
        name = f"official config {cfg_path.name}"
        base = compose_config(["model=cropformer_tiny"]).model  # criterion/fusion defaults only
    elif isinstance(model, Mapping):  # composed by Hydra (predict.py / eval.py model=...)
        base = model
        net_cfg = base["net"]
        name = _model_name(_plain(net_cfg))
    else:
        if model is None:
            try:
                model, guessed = guess_official_model(official_weights(stored) or {})
            except (ValueError, UserError) as err:
                raise UserError(
                    f"ckpt={path}: cannot tell the architecture from the keys ({err}); pass "
                    "model=<our config, e.g. cropformer_swinl> or official_config=<its yaml>"
                ) from err
            model_overrides = [*guessed, *model_overrides]
        try:
            base = compose_config([f"model={model}", *model_overrides]).model
        except Exception as err:  # unknown model name or override
            raise UserError(f"model={model} {' '.join(model_overrides)}: {err}") from err
        net_cfg = base.net
        name = model
    fusion_cfg = {**_plain(base["fusion"]), **fusion}
    module = CropFormerModule(net=net_cfg, criterion=base["criterion"], fusion=fusion_cfg)
    result = module.net.load_state_dict(weights, strict=False)
    problems = list(result.missing_keys) + list(result.unexpected_keys)
    if problems:
        raise UserError(
            f"ckpt={path}: the weights do not fit {name}: {len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected (first: {problems[0]}); pass the right "
            "model=... or official_config=<the official yaml>"
        )
    info = CheckpointInfo(path=path, kind=kind, model=name, step=step, stored_views=views)
    return module.eval(), info


def _plain(node: Any) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return dict(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    return dict(node)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _model_name(net_cfg: Mapping[str, Any]) -> str:
    kind = "cropformer" if net_cfg.get("association") else "mask2former"
    backbone = (net_cfg.get("backbone") or {}).get("model_name") or "?"
    return f"{kind} ({backbone})"


def views_from_data_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """Test-time views stored with one of our checkpoints (what eval.py's data module uses)."""
    crop = dict(data.get("crop") or {})
    out = dict(OFFICIAL_TEST_SETTINGS)
    pairs = {
        "short_side": data.get("test_short_side"),
        "max_size": data.get("test_max_size"),
        "num_crops": crop.get("num_test"),
        "crop_ratio": crop.get("ratio"),
        "stride_ratio": crop.get("stride_ratio"),
        "crop_mode": crop.get("mode"),
        # the data module caps crop views by crop_max_size, else train_max_size
        "crop_max_size": data.get("crop_max_size") or data.get("train_max_size"),
    }
    out.update({k: v for k, v in pairs.items() if v is not None})
    return out


def _views_from_official_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    inp = cfg.get("INPUT") or {}
    entity = cfg.get("ENTITY") or {}
    pairs = {
        "short_side": inp.get("MIN_SIZE_TEST"),
        "max_size": inp.get("MAX_SIZE_TEST"),
        "crop_max_size": inp.get("MAX_SIZE_TRAIN"),
        "num_crops": entity.get("CROP_SAMPLE_NUM_TEST"),
        "crop_ratio": entity.get("CROP_AREA_RATIO"),
        "stride_ratio": entity.get("CROP_STRIDE_RATIO"),
    }
    if cfg.get("MODEL", {}).get("META_ARCHITECTURE") != "CropFormer":
        pairs["num_crops"] = 0  # Mask2Former: the full view only
    return {k: v for k, v in pairs.items() if v is not None}


def test_settings(stored: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """Test-time view settings: explicit overrides (non-None) > stored with the checkpoint.

    Returns the keyword arguments of ``EntityPredictor`` for the views (``short_side``,
    ``max_size``, ``num_crops``, ``crop_ratio``, ``stride_ratio``, ``crop_mode``,
    ``crop_max_size``).
    """
    unknown = set(overrides) - set(OFFICIAL_TEST_SETTINGS)
    if unknown:
        raise UserError(
            f"unknown test setting(s) {sorted(unknown)}; known: {sorted(OFFICIAL_TEST_SETTINGS)}"
        )
    out = {**OFFICIAL_TEST_SETTINGS, **stored}
    out.update({k: v for k, v in overrides.items() if v is not None})
    out["short_side"], out["max_size"] = int(out["short_side"]), int(out["max_size"])
    out["num_crops"] = int(out["num_crops"])
    out["crop_ratio"], out["stride_ratio"] = float(out["crop_ratio"]), float(out["stride_ratio"])
    if out["num_crops"] == 0 or out["crop_mode"] == "none":
        out["crop_mode"], out["num_crops"] = "none", 0
    if out["crop_max_size"] is not None:
        out["crop_max_size"] = int(out["crop_max_size"])
    return out


def describe_settings(
    info: CheckpointInfo, views: Mapping[str, Any], fusion: Any, precision: str
) -> str:
    """One short line: views, crops, fusion, precision, checkpoint and step."""
    decoder = getattr(fusion, "decoder", None) or (fusion or {}).get("decoder", "?")
    quirks = "official" if getattr(fusion, "double_sigmoid", True) else "fixed"
    crops = (
        f"{views['num_crops']} crops x {views['crop_ratio']:g}"
        if views["num_crops"]
        else "no crops"
    )
    return (
        f"test views {views['short_side']}/{views['max_size']}, {crops}, fusion {decoder} "
        f"({quirks} scores), precision {precision}; checkpoint {info.describe()}"
    )


# ------------------------------------------------------------------------------------ results
class Entities:
    """The entities of one image (non-overlapping, at the image's resolution).

    ``prediction`` is the raw ``EntityPrediction`` (id map with -1 = none, scores, query
    indices); the helpers give the encodings ``predict.py`` writes.
    """

    def __init__(self, prediction: EntityPrediction, file_name: str | None = None) -> None:
        self.prediction = prediction
        self.file_name = file_name

    def __len__(self) -> int:
        return int(self.prediction["scores"].numel())

    def __repr__(self) -> str:
        h, w = self.prediction["id_map"].shape
        return f"Entities({len(self)} outputs, {h}x{w}, file={self.file_name!r})"

    @property
    def scores(self) -> np.ndarray:
        """(M,) float32, one per output (entity k has id k + 1 in ``id_map()``)."""
        return self.prediction["scores"].detach().cpu().float().numpy()

    def id_map(self) -> np.ndarray:
        """(H, W) int32: 0 = no entity, k + 1 = entity k (the values of ``<stem>_ids.png``)."""
        ids = self.prediction["id_map"]
        arr = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        return arr.astype(np.int32) + 1

    def masks(self) -> np.ndarray:
        """(M, H, W) bool, mask of entity k at index k (empty outputs included)."""
        ids = self.id_map()
        return ids[None] == np.arange(1, len(self) + 1, dtype=np.int32)[:, None, None]

    def rles(self) -> list[dict[str, Any]]:
        """COCO compressed RLE per non-empty entity: ``{"id", "category_id", "score",
        "query_index", "area", "segmentation": {"size", "counts"}}`` (the json's annotations)."""
        return list(self.to_json()["annotations"])

    def to_json(self, image_id: int | None = None) -> dict[str, Any]:
        """The document ``predict.py`` writes as ``<stem>.json``."""
        from cropformer.evaluation.writers import rle_document

        return rle_document(self.prediction, file_name=self.file_name or "", image_id=image_id)

    def overlay(self, image: Any, alpha: float = 0.6) -> np.ndarray:
        """The image and its coloured entities side by side. Shape: (H, W, 3) -> (H, 2W, 3)."""
        from cropformer.evaluation.writers import overlay

        return overlay(_to_rgb(image), self.prediction, alpha=alpha)


def _to_rgb(image: Any) -> np.ndarray:
    """A path, PIL image, array or tensor -> (H, W, 3) uint8 RGB."""
    if isinstance(image, (str, Path)):
        from cropformer.data.decode import load_image

        return load_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    return as_rgb_uint8(image)


# ------------------------------------------------------------------------------------ segmenter
class Segmenter:
    """A loaded network with its test-time views and fusion: call it on images.

    Made by ``load_segmenter``. ``seg(image)`` -> ``Entities``; ``seg([a, b])`` -> a list (one
    forward per ``images_per_batch`` images); ``seg.predict_files(...)`` runs over many files.
    """

    def __init__(self, predictor: EntityPredictor, info: CheckpointInfo, settings: dict[str, Any]):
        self.predictor = predictor
        self.info = info
        self.settings = settings

    def describe(self) -> str:
        """One line: views, crops, fusion, precision, checkpoint and step."""
        return describe_settings(
            self.info, self.settings, self.predictor.fusion, self.predictor.precision
        )

    def __call__(self, images: Any, images_per_batch: int = 1) -> Any:
        if isinstance(images, (list, tuple)):
            out: list[Entities] = []
            for start in range(0, len(images), max(1, images_per_batch)):
                group = images[start : start + max(1, images_per_batch)]
                preds = self.predictor.predict_batch([_to_rgb(im) for im in group])
                out += [Entities(p, _name(im)) for p, im in zip(preds, group)]
            return out
        return Entities(self.predictor.predict(_to_rgb(images)), _name(images))

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

    Returns:
        A ``Segmenter``; ``Segmenter(image)`` gives ``Entities``.
    """
    if str(precision) not in PRECISION_NAMES:
        raise UserError(f"precision={precision}: use one of fp32, bf16, fp16")
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device} but no CUDA device is visible; use device=cpu")
    module, info = load_module(
        checkpoint, fusion=fusion, model=model, official_config=official_config
    )
    settings = test_settings(
        info.stored_views,
        short_side=short_side,
        max_size=max_size,
        num_crops=num_crops,
        crop_ratio=crop_ratio,
    )
    try:
        predictor = EntityPredictor(
            module.net,
            module.fusion,
            device=device,
            precision=PRECISION_NAMES[str(precision)],
            view_chunk=view_chunk,
            pixel_decoder=pixel_decoder,
            **settings,
        )
    except ValueError as err:
        raise UserError(str(err)) from err
    return Segmenter(predictor, info, settings)
