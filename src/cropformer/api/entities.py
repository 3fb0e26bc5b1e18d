"""The entities of one image, as ``load_segmenter(...)(image)`` returns them.

A class-aware checkpoint (``train.py task=instance|panoptic|semantic``) gives every output its
class as well: ``category_ids`` / ``category_names`` / ``labels`` next to ``scores``, and the
task's own outputs: ``panoptic()`` (id map + segments), ``semantic()`` (class per pixel) and
``instances()`` (the overlapping top-k instances that instance AP scores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cropformer.data.categories import CategorySet
from cropformer.inference.predictor import as_rgb_uint8
from cropformer.schema import EntityPrediction
from cropformer.utils.errors import UserError

#: which of the task outputs each class-aware task gives (``ClassAwareFusion``)
TASK_OUTPUTS = {
    "entity": (),
    "instance": ("instances",),
    "panoptic": ("panoptic", "semantic", "instances"),
    "semantic": ("semantic",),
}


class Entities:
    """The entities of one image (non-overlapping, at the image's resolution).

    ``prediction`` is the raw ``EntityPrediction`` (id map with -1 = none, scores, query
    indices; a class-aware one also ``labels``, ``category_ids`` ... from ``ClassAwareFusion``);
    the helpers give the encodings ``predict.py`` writes.

    Args:
        prediction: one image's fusion output.
        file_name: the image's path, when it came from a file.
        task: ``entity`` or the class-aware task of the checkpoint.
        classes: the checkpoint's class set (class-aware tasks).

    The outputs (entity k = id k + 1 in ``id_map()``) are: entities (entity task), panoptic
    segments (panoptic), instances above the fusion's ``instance_score_threshold``, most
    confident first (instance), one output per class present (semantic).
    """

    def __init__(
        self,
        prediction: EntityPrediction,
        file_name: str | None = None,
        *,
        task: str = "entity",
        classes: CategorySet | None = None,
    ) -> None:
        if task not in TASK_OUTPUTS:
            raise ValueError(f"task={task!r} is not one of {', '.join(TASK_OUTPUTS)}")
        if task != "entity" and classes is None:
            raise ValueError(f"task={task} needs the class set (classes=)")
        self.prediction = prediction
        self.file_name = file_name
        self.task = task
        self.classes = classes if task != "entity" else None

    def __len__(self) -> int:
        return int(self.prediction["scores"].numel())

    def __repr__(self) -> str:
        h, w = self.prediction["id_map"].shape
        kind = "" if self.task == "entity" else f", task={self.task}"
        return f"Entities({len(self)} outputs, {h}x{w}{kind}, file={self.file_name!r})"

    # ------------------------------------------------------------------ classes
    @property
    def has_classes(self) -> bool:
        """Whether the outputs carry classes (a class-aware checkpoint)."""
        return self.classes is not None

    def _class_set(self, what: str) -> CategorySet:
        if self.classes is None:
            raise UserError(
                f"{what}: this is an entity checkpoint (task=entity), its outputs have no "
                "classes; use a class-aware checkpoint (train.py task=instance|panoptic|semantic)"
            )
        return self.classes

    @property
    def labels(self) -> np.ndarray:
        """(M,) int64 contiguous class index of each output (index into ``classes``)."""
        self._class_set("labels")
        return _numpy(self.prediction["labels"]).astype(np.int64)  # type: ignore[typeddict-item]

    @property
    def category_ids(self) -> np.ndarray:
        """(M,) int64 category id of each output, as in the training annotation file."""
        ids = self._class_set("category_ids").ids
        return np.asarray([ids[k] for k in self.labels.tolist()], dtype=np.int64)

    @property
    def category_names(self) -> list[str]:
        """The class name of each output."""
        names = self._class_set("category_names").names
        return [names[k] for k in self.labels.tolist()]

    @property
    def isthing(self) -> np.ndarray:
        """(M,) bool: whether each output's class is a thing (countable) or stuff."""
        flags = self._class_set("isthing").isthing
        return np.asarray([flags[k] for k in self.labels.tolist()], dtype=bool)

    def _task_output(self, key: str) -> Any:
        self._class_set(f"{key}()")
        if key not in TASK_OUTPUTS[self.task]:
            gives = ", ".join(f"{k}()" for k in TASK_OUTPUTS[self.task])
            raise UserError(
                f"{key}(): a task={self.task} checkpoint has no {key} output (it gives {gives})"
            )
        return self.prediction[key]  # type: ignore[literal-required]

    def panoptic(self) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The panoptic output: (H, W) int32 segment ids (0 = void; equal to ``id_map()``) and
        one ``{"id", "category_id", "category_name", "isthing", "score"}`` per segment, the
        per-image entry of a COCO panoptic json (``segments_info``) with the score added."""
        ids = _numpy(self._task_output("panoptic")).astype(np.int32)
        cs = self._class_set("panoptic()")
        segments = [
            {
                "id": int(seg["id"]),
                "category_id": cs.ids[int(seg["category"])],
                "category_name": cs.names[int(seg["category"])],
                "isthing": bool(seg["isthing"]),
                "score": float(seg["score"]),
            }
            for seg in self.prediction["segments"]  # type: ignore[typeddict-item]
        ]
        return ids, segments

    def semantic(self, *, category_ids: bool = True) -> np.ndarray:
        """(H, W) int64 class of every pixel: its category id (``category_ids=False``: its
        contiguous index into ``classes``). Panoptic and semantic checkpoints."""
        sem = _numpy(self._task_output("semantic")).astype(np.int64)
        if not category_ids:
            return sem
        lut = np.asarray(self._class_set("semantic()").ids, dtype=np.int64)
        return lut[sem]

    def instances(self) -> dict[str, Any]:
        """The overlapping instance output that instance AP scores (the top-k (query, class)
        pairs; panoptic checkpoints: of thing classes): ``masks`` (k, H, W) bool, ``scores``
        (k,), ``labels`` (k,) contiguous, ``category_ids`` (k,), ``category_names`` and
        ``query_indices`` (k,), most confident first. Instance and panoptic checkpoints."""
        inst = self._task_output("instances")
        cs = self._class_set("instances()")
        scores = _numpy(inst["scores"]).astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        labels = _numpy(inst["labels"]).astype(np.int64)[order]
        return {
            "masks": _numpy(inst["masks"]).astype(bool)[order],
            "scores": scores[order],
            "labels": labels,
            "category_ids": np.asarray([cs.ids[k] for k in labels.tolist()], dtype=np.int64),
            "category_names": [cs.names[k] for k in labels.tolist()],
            "query_indices": _numpy(inst["query_indices"]).astype(np.int64)[order],
        }

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

        return overlay(to_rgb(image), self.prediction, alpha=alpha)


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def to_rgb(image: Any) -> np.ndarray:
    """A path, PIL image, array or tensor -> (H, W, 3) uint8 RGB."""
    if isinstance(image, (str, Path)):
        from cropformer.data.decode import load_image

        return load_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    return as_rgb_uint8(image)
