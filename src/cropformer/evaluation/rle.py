"""COCO run-length encoding helpers: masks and id maps <-> compressed RLE, COCO results.

Compressed RLE dicts here always carry ``counts`` as ``str`` (JSON-ready) and ``size`` as
``[H, W]``; pycocotools accepts both ``str`` and ``bytes`` counts on input.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import Tensor

from cropformer.schema import EntityPrediction

RLE = dict[str, Any]


def _to_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def encode_mask(mask: Tensor | np.ndarray) -> RLE:
    """Encode one binary mask as compressed RLE with ``counts`` as str.

    Shape: mask (H, W), any dtype (non-zero = inside).
    """
    m = _to_numpy(mask)
    if m.ndim != 2:
        raise ValueError(f"encode_mask expects a 2-D (H, W) mask, got shape {m.shape}")
    rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8, copy=False)))
    return json_ready_rle(rle)


def encode_masks(masks: Tensor | np.ndarray) -> list[RLE]:
    """Encode a stack of binary masks, one at a time (bounded memory for large images).

    Shape: masks (M, H, W).
    """
    m = _to_numpy(masks)
    if m.ndim != 3:
        raise ValueError(f"encode_masks expects (M, H, W) masks, got shape {m.shape}")
    return [encode_mask(x) for x in m]


def decode_rle(rle: RLE | Sequence[RLE]) -> np.ndarray:
    """Decode one RLE to a bool (H, W) mask, or a list of RLEs to a bool (M, H, W) stack."""
    if isinstance(rle, dict):
        return decode_rles([c_ready_rle(rle)])[:, :, 0].astype(bool)
    rles = list(rle)
    if not rles:
        raise ValueError("decode_rle got an empty list; the image size is unknown")
    out = decode_rles([c_ready_rle(r) for r in rles])  # (H, W, M)
    return np.ascontiguousarray(out.transpose(2, 0, 1)).astype(bool)


def decode_rles(rles: list[RLE]) -> np.ndarray:
    """pycocotools decode of C-ready RLEs (see :func:`c_ready_rle`). Shape: (H, W, M) uint8."""
    # pycocotools' Cython array wrapper triggers a numpy-2 DeprecationWarning on every decode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_util.decode(rles)


def rle_area(rle: RLE) -> int:
    """Number of pixels inside an RLE mask."""
    return int(mask_util.area(c_ready_rle(rle)))


def id_map_to_rles(id_map: Tensor | np.ndarray, num_outputs: int | None = None) -> list[RLE]:
    """Encode every output ``k`` of an id map (``id_map == k``; -1 = none) as RLE.

    Builds one (H, W) mask at a time in Fortran order, never the (M, H, W) stack.

    Shape: id_map (H, W) int; returns ``num_outputs`` RLEs (default: max id + 1).
    """
    ids = _to_numpy(id_map)
    if ids.ndim != 2:
        raise ValueError(f"id_map must be (H, W), got shape {ids.shape}")
    if num_outputs is None:
        num_outputs = int(ids.max()) + 1 if ids.size else 0
    H, W = ids.shape
    empty = json_ready_rle(mask_util.encode(np.zeros((H, W), dtype=np.uint8, order="F")))
    # One pass over the map in column-major (RLE) order: split it into runs of equal ids, then
    # give each output its runs. Same counts as encoding every (H, W) mask ``id_map == k``, at
    # the cost of one map pass instead of one per output (~5x faster for 100 outputs).
    col = np.ascontiguousarray(ids.T).ravel()
    n = col.size
    change = np.flatnonzero(col[1:] != col[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n]))
    vals = col[starts]
    keep = (vals >= 0) & (vals < num_outputs)
    order = np.argsort(vals[keep], kind="stable")
    starts, ends, vals = starts[keep][order], ends[keep][order], vals[keep][order]
    bounds = np.searchsorted(vals, np.arange(num_outputs + 1))
    out: list[RLE] = []
    for k in range(num_outputs):
        a, b = bounds[k], bounds[k + 1]
        if a == b:
            out.append(dict(empty))
            continue
        s, e = starts[a:b], ends[a:b]
        counts = np.empty(2 * (b - a) + 1, dtype=np.int64)
        counts[0::2][: b - a] = s - np.concatenate(([0], e[:-1]))  # zeros before each run
        counts[1::2] = e - s  # ones
        counts[-1] = n - e[-1]  # trailing zeros (dropped when the mask ends with ones)
        if counts[-1] == 0:
            counts = counts[:-1]
        rle = mask_util.frPyObjects({"size": [H, W], "counts": counts.tolist()}, H, W)
        out.append(json_ready_rle(rle))
    return out


def prediction_to_coco_results(pred: EntityPrediction, image_id: int) -> list[dict[str, Any]]:
    """COCO results of one image: compressed RLE, ``category_id`` 1, score; empty masks skipped.

    Skipping empty outputs does not change AP: the official code keeps them with score 0, where
    they only add false positives after every true positive.
    """
    id_map = pred["id_map"]
    scores = _to_numpy(pred["scores"]).astype(np.float64)
    rles = id_map_to_rles(id_map, num_outputs=len(scores))
    results = []
    for k, rle in enumerate(rles):
        if rle_area(rle) == 0:
            continue
        results.append(
            {
                "image_id": int(image_id),
                "category_id": 1,
                "segmentation": rle,
                "score": float(scores[k]),
            }
        )
    return results


def rles_to_id_map(rles: Sequence[RLE], height: int, width: int) -> Tensor:
    """Paint RLE masks into an id map in list order (later masks win); -1 = none.

    Shape: returns (H, W) int32.
    """
    id_map = np.full((height, width), -1, dtype=np.int32)
    for k, rle in enumerate(rles):
        m = decode_rle(rle)
        if m.shape != (height, width):
            raise ValueError(f"RLE {k} has size {m.shape}, expected {(height, width)}")
        id_map[m] = k
    return torch.from_numpy(id_map)


def json_ready_rle(rle: RLE) -> RLE:
    """An RLE whose counts are a str and size plain ints (json-serialisable)."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def c_ready_rle(rle: RLE) -> RLE:
    """pycocotools wants compressed counts as bytes (it accepts str, but not a list)."""
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        return mask_util.frPyObjects(rle, int(rle["size"][0]), int(rle["size"][1]))
    if isinstance(counts, str):
        return {"size": list(rle["size"]), "counts": counts.encode("ascii")}
    return rle
