"""Runtimes in the API: a checkpoint (exported on first use) or an exported file -> a runtime
network, and the ``Segmenter`` around it. The thin hooks of ``load_segmenter``, ``predict.py``
and ``eval.py`` call these functions."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch import nn

from cropformer.data.categories import CategorySet
from cropformer.export.cache import exported_file
from cropformer.export.session import (
    RUNTIMES,
    ExportedNetwork,
    default_runtime_for,
)
from cropformer.utils.errors import UserError

log = logging.getLogger(__name__)

#: suffixes of exported files (a ``ckpt=`` with one of these is run without PyTorch weights)
EXPORTED_SUFFIXES = (".onnx", ".xml")


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` names an exported file rather than a checkpoint."""
    return Path(path).suffix in EXPORTED_SUFFIXES


def runtime_label(net: Any) -> str:
    """``torch``, or the runtime, precision and file of an exported network (what an output
    folder records as its producer: two runtimes never mix in one folder)."""
    if not hasattr(net, "runtime"):
        return "torch"
    kind = net.metadata.get("precision", "fp32")
    return f"{net.runtime} {net.precision} ({kind} file {net.path.name})"


def num_views_of(settings: Mapping[str, Any]) -> int:
    """T, the views per image that the test settings give (1 + crops)."""
    from cropformer.data.views import InferenceViews
    from cropformer.inference.predictor import EvalViews

    views = EvalViews(InferenceViews(**dict(settings)))(np.zeros((64, 96, 3), dtype=np.uint8))
    return len(views["views"])


def check_runtime(runtime: str, precision: str = "fp32") -> None:
    """One-line errors for ``runtime=`` / ``precision=`` before any work starts."""
    if runtime not in RUNTIMES:
        raise UserError(f"runtime={runtime}: use one of {', '.join(RUNTIMES)}")
    if runtime != "torch" and precision not in ("fp32", "32", "int8", "bf16"):
        raise UserError(f"precision={precision} with runtime={runtime}: use fp32, bf16 or int8")


def runtime_network(
    checkpoint: str | Path,
    net: nn.Module,
    *,
    model_name: str,
    step: int | None,
    settings: Mapping[str, Any],
    fusion: Mapping[str, Any],
    runtime: str,
    precision: str = "fp32",
    exported: str | Path | None = None,
    threads: int | None = None,
    device: str = "cpu",
    calibration: Any = None,
    task: str = "entity",
    classes: Sequence[Mapping[str, Any]] | None = None,
) -> ExportedNetwork:
    """The runtime network for a loaded checkpoint: ``exported`` if given (its settings must be
    these), else the cached export of ``checkpoint`` (exported now on first use).

    ``precision``: ``fp32``; ``bf16`` (OpenVINO's bf16 inference on an fp32 file); ``int8`` (a
    quantized file, made on first use from ``calibration`` images: see ``cropformer.export.int8``).
    ``task`` / ``classes``: a class-aware checkpoint's task and class set (carried by the file).
    """
    check_runtime(runtime, precision)
    fmt = "openvino" if runtime == "openvino" else "onnx"
    metadata = export_metadata(
        checkpoint,
        model_name=model_name,
        step=step,
        settings=settings,
        fusion=fusion,
        num_views=num_views_of(settings),
        task=task,
        classes=classes,
    )
    if exported is not None:
        path = Path(exported)
        session = ExportedNetwork(path, runtime, threads=threads, precision=_session(precision))
        check_same_settings(session.metadata, metadata, path)
        return session
    file_precision = "int8" if precision == "int8" else "fp32"
    quantize = None
    if file_precision == "int8":
        from cropformer.export.int8 import quantizer

        quantize = quantizer(fmt, calibration, settings=settings)
    path = exported_file(
        checkpoint, net, metadata, fmt=fmt, precision=file_precision, quantize=quantize
    )
    return ExportedNetwork(
        path, runtime, threads=threads, precision=_session(precision), device=device
    )


def _session(precision: str) -> str:
    return "bf16" if precision == "bf16" else "fp32"


def export_metadata(
    checkpoint: str | Path,
    *,
    model_name: str,
    step: int | None,
    settings: Mapping[str, Any],
    fusion: Mapping[str, Any],
    num_views: int,
    task: str = "entity",
    classes: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """What an exported file carries besides its graph contract (no machine paths); a
    class-aware checkpoint's file also carries its ``task`` and ``classes`` (categories json
    list), so it segments with class names on its own (entity files are unchanged)."""
    out: dict[str, Any] = {
        "model": model_name,
        "checkpoint": Path(checkpoint).name,
        "step": step,
        "test_settings": dict(settings),
        "fusion": dict(fusion),
        "num_views": num_views,
    }
    if classes:
        out["task"] = task
        out["classes"] = [dict(c) for c in classes]
    return out


def check_same_settings(stored: Mapping[str, Any], wanted: Mapping[str, Any], path: Path) -> None:
    """UserError when an exported file was made with other test settings or fusion options."""
    for key in ("num_views", "test_settings", "fusion"):
        if stored.get(key) != wanted.get(key):
            raise UserError(
                f"exported={path}: its {key} {stored.get(key)} differ from this run's "
                f"{wanted.get(key)}; drop exported= to export again, or pass the file as ckpt= "
                "to use its own settings"
            )


def load_exported(
    path: str | Path,
    *,
    runtime: str | None = None,
    precision: str = "fp32",
    threads: int | None = None,
    device: str = "cpu",
) -> tuple[ExportedNetwork, Any, dict[str, Any]]:
    """An exported file on its own: (runtime network, fusion, test settings) from its metadata
    (a class-aware file's fusion gets the class set it carries)."""
    from hydra.utils import instantiate

    runtime = runtime if runtime not in (None, "torch", "auto") else default_runtime_for(path)
    assert runtime is not None
    check_runtime(runtime, precision)
    session = ExportedNetwork(
        path, runtime, threads=threads, precision=_session(precision), device=device
    )
    fusion_cfg = dict(session.metadata["fusion"])
    target = str(fusion_cfg.get("_target_", ""))
    if not target.startswith("cropformer."):
        raise UserError(f"exported file {path}: fusion target {target!r} is not this package's")
    fusion = instantiate(fusion_cfg)
    classes = session.metadata.get("classes")
    if hasattr(fusion, "set_classes"):
        if not classes:
            raise UserError(
                f"exported file {path}: a class-aware fusion but no classes in the file; "
                "export the checkpoint again with this version"
            )
        cs = CategorySet.from_json(classes)
        fusion.set_classes(cs.isthing, ids=cs.ids, names=cs.names)
    return session, fusion, dict(session.metadata["test_settings"])


class RuntimeParts(NamedTuple):
    """What ``load_segmenter`` builds a runtime ``Segmenter`` from."""

    net: ExportedNetwork
    fusion: Any
    settings: dict[str, Any]
    info: Any  # CheckpointInfo
    fusion_config: dict[str, Any]
    task: str
    classes: CategorySet | None


def runtime_parts(
    checkpoint: str | Path,
    *,
    runtime: str,
    exported: str | Path | None,
    calibration: str | Path | None,
    device: str,
    precision: str,
    fusion: Mapping[str, Any] | None,
    model: str | None,
    official_config: str | Path | None,
    views: dict[str, Any],
    official_task: str | None = None,
    official_classes: Any = None,
) -> RuntimeParts:
    """``load_segmenter``'s parts for an exported file, or for a checkpoint run by ONNX Runtime /
    OpenVINO: runtime network, fusion, test settings, ``CheckpointInfo``, fusion config, task
    and class set."""
    from cropformer.api.loading import CheckpointInfo, read_checkpoint
    from cropformer.api.settings import test_settings

    device = "cpu" if device == "auto" else device
    if is_exported(checkpoint):
        if (
            any(v is not None for v in views.values())
            or (fusion and any(v is not None for v in fusion.values()))
            or official_task is not None
            or official_classes is not None
        ):
            raise UserError(
                f"ckpt={checkpoint} is an exported file: it carries its test views, fusion, task "
                "and classes; export the checkpoint again to change them"
            )
        net, fusion_module, settings = load_exported(
            checkpoint, runtime=runtime, precision=precision, device=device
        )
        meta = net.metadata
        info = CheckpointInfo(
            path=Path(checkpoint),
            kind=f"exported {meta['checkpoint']}",
            model=str(meta["model"]),
            step=meta.get("step"),
            stored_views=settings,
        )
        fusion_config = dict(meta["fusion"])
        task = str(meta.get("task", "entity"))
        classes = meta.get("classes")
    else:
        loaded = read_checkpoint(
            checkpoint,
            fusion=fusion,
            model=model,
            official_config=official_config,
            official_task=official_task,
            official_classes=official_classes,
        )
        eager, fusion_module = loaded.build()
        info = loaded.info
        settings = test_settings(info.stored_views, **views)
        fusion_config = dict(loaded.fusion_config)
        task, classes = loaded.task, loaded.classes
        net = runtime_network(
            checkpoint,
            eager,
            model_name=info.model,
            step=info.step,
            settings=settings,
            fusion=fusion_config,
            runtime=runtime,
            precision=precision,
            exported=exported,
            device=device,
            calibration=calibration,
            task=task,
            classes=classes,
        )
    class_set = CategorySet.from_json(classes) if classes else None
    return RuntimeParts(net, fusion_module, settings, info, fusion_config, task, class_set)
