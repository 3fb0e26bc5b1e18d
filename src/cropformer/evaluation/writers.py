"""Writers for ``predict.py``: overlay PNG, 16-bit id-map PNG, COCO-RLE json with scores.

Colours come from a golden-ratio walk around the hue circle, so any number of entities gets a
colour (the official demo indexes a 133-colour palette and fails beyond it).
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cropformer.evaluation.rle import id_map_to_rles, rle_area
from cropformer.schema import EntityPrediction
from cropformer.utils.id_maps import remap_ids

_GOLDEN = 0.618033988749895
MAX_PNG_IDS = 65535  # 16-bit PNG: 0 = none, k + 1 = output k


def entity_colors(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct-looking RGB colours (deterministic, unlimited).

    Shape: returns (n, 3) uint8.
    """
    out = np.zeros((n, 3), dtype=np.uint8)
    hue = (seed * _GOLDEN) % 1.0
    for k in range(n):
        hue = (hue + _GOLDEN) % 1.0
        sat = 0.55 + 0.35 * ((k * 7) % 4) / 3  # vary saturation/value a little as well
        val = 0.75 + 0.25 * ((k * 5) % 3) / 2
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        out[k] = (round(r * 255), round(g * 255), round(b * 255))
    return out


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def filter_prediction(
    pred: EntityPrediction, *, score_threshold: float = 0.0, drop_empty: bool = True
) -> EntityPrediction:
    """Keep outputs with ``score >= score_threshold`` (and non-empty), renumbered in order."""
    id_map = torch.as_tensor(_np(pred["id_map"]))
    scores = torch.as_tensor(_np(pred["scores"])).float()
    queries = torch.as_tensor(_np(pred["query_indices"])).long()
    M = int(scores.numel())
    keep = scores >= score_threshold
    if drop_empty:
        area = torch.bincount(id_map[id_map >= 0].long(), minlength=M)[:M]
        keep &= area > 0
    lut = torch.full((M + 1,), -1, dtype=torch.int32)  # last entry: id -1 stays -1
    kept = torch.nonzero(keep).flatten()
    lut[kept] = torch.arange(kept.numel(), dtype=torch.int32)
    return EntityPrediction(
        id_map=remap_ids(id_map, lut), scores=scores[kept], query_indices=queries[kept]
    )


def colorize(id_map: torch.Tensor | np.ndarray, seed: int = 0) -> np.ndarray:
    """Colour image of an id map (-1 = black).

    Shape: id_map (H, W) -> (H, W, 3) uint8.
    """
    ids = _np(id_map).astype(np.int32, copy=False)
    n = int(ids.max()) + 1 if ids.size else 0
    palette = np.concatenate([np.zeros((1, 3), np.uint8), entity_colors(max(n, 0), seed)])
    return np.take(palette, ids + 1, axis=0)


def overlay(image: np.ndarray, pred: EntityPrediction, *, alpha: float = 0.6) -> np.ndarray:
    """The image and its coloured entities side by side (entities blended over the image,
    background darkened).

    Integer arithmetic in 16 bits keeps the memory of very large images (panoramas) low.

    Shape: image (H, W, 3) uint8 -> (H, 2W, 3) uint8.
    """
    img = np.asarray(image)
    ids = _np(pred["id_map"])
    if img.shape[:2] != ids.shape:
        raise ValueError(f"image {img.shape[:2]} and id map {ids.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must lie in [0, 1]")
    a = round(alpha * 256)
    n = int(ids.max()) + 1 if ids.size else 0
    palette = np.concatenate([np.zeros((1, 3), np.uint8), entity_colors(max(n, 0))])
    H, W = ids.shape
    out = np.empty((H, 2 * W, 3), dtype=np.uint8)
    out[:, :W] = img
    # integer blending in bands of rows keeps the memory of panoramas low
    for y0 in range(0, H, 512):
        band_ids = ids[y0 : y0 + 512].astype(np.int32, copy=False)
        band = img[y0 : y0 + 512].astype(np.uint16)
        blend = band * (256 - a) + np.take(palette, band_ids + 1, axis=0).astype(np.uint16) * a
        dark = band * 90  # background at about 35 % brightness
        out[y0 : y0 + 512, W:] = np.where((band_ids >= 0)[:, :, None], blend, dark) >> 8
    return out


def write_overlay(path: str | Path, image: np.ndarray, pred: EntityPrediction) -> Path:
    """Write ``overlay(image, pred)`` as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # fast zlib level: the default (6) takes several times longer on large images for ~10 % size
    Image.fromarray(overlay(image, pred)).save(path, compress_level=1)
    return path


def write_id_map_png(path: str | Path, pred: EntityPrediction) -> Path:
    """Write the id map as a 16-bit grayscale PNG: 0 = no entity, k + 1 = output k."""
    ids = _np(pred["id_map"]).astype(np.int32, copy=False)
    if ids.size and ids.max() + 1 > MAX_PNG_IDS:
        raise ValueError(
            f"{int(ids.max()) + 1} entities do not fit a 16-bit PNG (max {MAX_PNG_IDS}); "
            "use the RLE json instead"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((ids + 1).astype(np.uint16)).save(path, compress_level=3)
    return path


def read_id_map_png(path: str | Path) -> np.ndarray:
    """Read a 16-bit id-map PNG back as an int32 id map (-1 = none)."""
    arr = np.asarray(Image.open(path)).astype(np.int32)
    return arr - 1


def rle_document(
    pred: EntityPrediction, *, file_name: str = "", image_id: int | None = None
) -> dict[str, Any]:
    """The entities as COCO compressed RLE with scores (what ``write_rle_json`` writes).

    Format: ``{"file_name", "image_id", "height", "width", "annotations": [{"id": k + 1,
    "category_id": 1, "score", "query_index", "area", "segmentation": {"size", "counts"}}]}``;
    ``id`` matches the value in the id-map PNG. Empty outputs are skipped. Class-aware
    predictions (``ClassAwareFusion``) give each annotation its class: ``category_id`` (the
    annotation file's id) and ``category_name``.
    """
    ids = _np(pred["id_map"])
    extra: dict[str, Any] = dict(pred)  # class-aware predictions carry more keys
    cat_ids: list[int] | None = extra.get("category_ids")
    cat_names: list[str] | None = extra.get("category_names")
    scores = _np(pred["scores"]).astype(np.float64)
    queries = _np(pred["query_indices"]).astype(np.int64)
    anns: list[dict[str, Any]] = []
    for k, rle in enumerate(id_map_to_rles(ids, num_outputs=len(scores))):
        area = rle_area(rle)
        if area == 0:
            continue
        ann: dict[str, Any] = {
            "id": k + 1,
            "category_id": int(cat_ids[k]) if cat_ids is not None else 1,
            "score": float(scores[k]),
            "query_index": int(queries[k]),
            "area": area,
            "segmentation": rle,
        }
        if cat_names is not None:
            ann["category_name"] = str(cat_names[k])
        anns.append(ann)
    return {
        "file_name": file_name,
        "image_id": image_id,
        "height": int(ids.shape[0]),
        "width": int(ids.shape[1]),
        "annotations": anns,
    }


def write_rle_json(
    path: str | Path, pred: EntityPrediction, *, file_name: str = "", image_id: int | None = None
) -> Path:
    """Write ``rle_document(pred, ...)`` as json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rle_document(pred, file_name=file_name, image_id=image_id)))
    return path
