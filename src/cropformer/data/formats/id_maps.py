"""Decoding of id-map PNGs (COCO panoptic, ADE20K) into integer segment ids."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from cropformer.data.errors import SampleError

ENCODINGS = ("coco_panoptic", "ade_instance", "ade_full")


def read_id_map(
    path: str | os.PathLike[str],
    encoding: str | None,
    *,
    expected_size: tuple[int, int] | None,
    semantic_path: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Read an id-map PNG as (H, W) int64 segment ids, 0 = void / unlabeled.

    - ``coco_panoptic``: id = R + 256 G + 256^2 B.
    - ``ade_instance`` (ADEChallengeData2016 ``annotations_instance``): R = class, G = instance
      id, unique within the image regardless of class; id = G. With ``semantic_path`` (the
      ``annotations/`` class map), pixels outside every instance get id ``1000 + class`` for
      class > 0, so stuff regions become entities too (one per class).
    - ``ade_full`` (full ADE20K ``*_seg.png``): class = R/10*256 + G, instance = B; id = B.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown id-map encoding {encoding!r}; expected one of {ENCODINGS}")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.int64)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise SampleError(f"cannot read id-map PNG {path}: {e}") from e
    if expected_size is not None and arr.shape[:2] != tuple(expected_size):
        raise SampleError(
            f"id map {path} is {arr.shape[1]}x{arr.shape[0]} but the image is "
            f"{expected_size[1]}x{expected_size[0]}"
        )
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    if encoding == "coco_panoptic":
        return r + 256 * g + 65536 * b
    if encoding == "ade_instance":
        ids = g.copy()
        if semantic_path is not None:
            with Image.open(semantic_path) as im:
                sem = np.asarray(im, dtype=np.int64)
            if sem.shape != ids.shape:
                raise SampleError(f"semantic map {semantic_path} size differs from {path}")
            stuff = (ids == 0) & (sem > 0)
            ids[stuff] = 1000 + sem[stuff]
        return ids
    return b
