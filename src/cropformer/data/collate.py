"""Collate samples into the Batch contract (schema.Batch).

Samples carry one label map per view (cheap to send from workers); binary masks are expanded
here, directly at the padded batch size, so a worker never ships K*T full masks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from cropformer.schema import Batch, EntityTarget


def padded_size(sizes: Sequence[tuple[int, int]], size_divisibility: int = 32) -> tuple[int, int]:
    """Largest (h, w) over views rounded up to a multiple of ``size_divisibility``."""
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    if size_divisibility > 1:
        h = int(math.ceil(h / size_divisibility) * size_divisibility)
        w = int(math.ceil(w / size_divisibility) * size_divisibility)
    return h, w


def collate(samples: Sequence[dict[str, Any]], size_divisibility: int = 32) -> Batch:
    """Stack samples into a Batch: views image-major, zero-padded bottom/right.

    Each sample is a dict with ``views`` (list of T (3, h, w) uint8 tensors), ``boxes`` (T, 4),
    ``orig_size`` (H, W), ``image_id``, ``file_name`` and, with targets, ``label_maps`` (list of T
    (h, w) int tensors, -1 = none) and ``num_entities`` K. All samples must have the same T.

    Shape:
        images (N, 3, H, W) uint8 with N = B*T; view_sizes (N, 2); boxes (B, T, 4);
        targets[b]["masks"] (K, T, H, W) bool at the padded size; targets[b]["valid"] (K, T).
    """
    samples = [s for s in samples if s is not None]
    if not samples:
        raise ValueError("collate received no samples (all skipped as bad?)")
    T = len(samples[0]["views"])
    for s in samples:
        if len(s["views"]) != T:
            raise ValueError(
                f"all samples of a batch need the same number of views; {s.get('file_name')} "
                f"has {len(s['views'])}, expected {T}"
            )
    views = [v for s in samples for v in s["views"]]
    sizes = [(int(v.shape[1]), int(v.shape[2])) for v in views]
    H, W = padded_size(sizes, size_divisibility)
    images = torch.zeros((len(views), 3, H, W), dtype=views[0].dtype)
    for i, v in enumerate(views):
        images[i, :, : v.shape[1], : v.shape[2]] = v
    batch: Batch = {
        "images": images,
        "view_sizes": torch.tensor(sizes, dtype=torch.int64).reshape(len(views), 2),
        "boxes": torch.stack([torch.as_tensor(s["boxes"], dtype=torch.float32) for s in samples]),
        "orig_sizes": torch.tensor([list(s["orig_size"]) for s in samples], dtype=torch.int64),
        "image_ids": torch.tensor([int(s["image_id"]) for s in samples], dtype=torch.int64),
        "file_names": [str(s["file_name"]) for s in samples],
    }
    if all("label_maps" in s for s in samples):
        batch["targets"] = [_expand(s, H, W) for s in samples]
    return batch


def _expand(sample: dict[str, Any], H: int, W: int) -> EntityTarget:
    K = int(sample["num_entities"])
    maps = sample["label_maps"]
    T = len(maps)
    masks = torch.zeros((K, T, H, W), dtype=torch.bool)
    ids = torch.arange(K, dtype=torch.int64).view(K, 1, 1)
    for t, lm in enumerate(maps):
        h, w = lm.shape
        if K:
            masks[:, t, :h, :w] = lm.to(torch.int64).unsqueeze(0) == ids
    valid = masks.flatten(2).any(-1) if K else torch.zeros((0, T), dtype=torch.bool)
    if "valid" in sample:
        valid = torch.as_tensor(sample["valid"], dtype=torch.bool).reshape(K, T)
    target: EntityTarget = {"masks": masks, "valid": valid}
    if "labels" in sample:
        target["labels"] = torch.as_tensor(sample["labels"], dtype=torch.int64).reshape(K)
    return target
