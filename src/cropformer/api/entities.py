"""The entities of one image, as ``load_segmenter(...)(image)`` returns them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cropformer.inference.predictor import as_rgb_uint8
from cropformer.schema import EntityPrediction


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

        return overlay(to_rgb(image), self.prediction, alpha=alpha)


def to_rgb(image: Any) -> np.ndarray:
    """A path, PIL image, array or tensor -> (H, W, 3) uint8 RGB."""
    if isinstance(image, (str, Path)):
        from cropformer.data.decode import load_image

        return load_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    return as_rgb_uint8(image)
