"""Class-aware ground truth of a record at its original resolution.

One decode of the record gives everything the class-aware metrics compare against: the panoptic
map and segments (PQ), the semantic map (mIoU) and the thing instances as COCO annotations
(instance AP). Stuff segments of one class are merged (the panoptic format has one segment per
stuff class and image; COCO / ADE20K panoptic already do, EntitySeg entities and the synthetic
bands do not); crowd segments stay apart and flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cropformer.data.categories import CategorySet
from cropformer.data.decode import label_source_for
from cropformer.data.records import Record
from cropformer.evaluation.rle import encode_mask
from cropformer.evaluation.semantic_iou import IGNORE


@dataclass
class ClassGroundTruth:
    """Ground truth of one image.

    Shape: panoptic (H, W) int64 segment ids (0 = void); semantic (H, W) int64 class index
    (``IGNORE`` = no label; crowd regions carry their class).
    """

    panoptic: np.ndarray
    segments: list[dict[str, Any]]
    semantic: np.ndarray


def record_ground_truth(record: Record, categories: CategorySet) -> ClassGroundTruth:
    """Decode a record into its panoptic map, segments and semantic map.

    Segments are ``{"id", "category" (contiguous), "iscrowd", "isthing", "entities"}``;
    ``entities`` lists the record's entity indices merged into the segment.
    """
    ents = record.entities
    where = f"{record.source or 'annotations'}: image {record.file_name}"
    labels = [
        categories.contiguous(e.category_id, where=f"{where}, annotation {e.ann_id}")
        if e.category_id is not None
        else _no_category(where, e.ann_id)
        for e in ents
    ]
    lm = label_source_for(record, ents).full().astype(np.int64)  # (H, W), -1 = none
    seg_of = np.zeros(len(ents) + 1, dtype=np.int64)  # index -1 (none) -> 0 (void)
    cls_of = np.full(len(ents) + 1, IGNORE, dtype=np.int64)
    segments: list[dict[str, Any]] = []
    stuff_seg: dict[int, dict[str, Any]] = {}
    for k, (e, c) in enumerate(zip(ents, labels)):
        thing = categories.categories[c].isthing
        cls_of[k] = c
        if not thing and not e.iscrowd and c in stuff_seg:
            seg = stuff_seg[c]
            seg["entities"].append(k)
        else:
            seg = {
                "id": len(segments) + 1,
                "category": c,
                "iscrowd": bool(e.iscrowd),
                "isthing": thing,
                "entities": [k],
            }
            segments.append(seg)
            if not thing and not e.iscrowd:
                stuff_seg[c] = seg
        seg_of[k] = seg["id"]
    return ClassGroundTruth(panoptic=seg_of[lm], segments=segments, semantic=cls_of[lm])


def _no_category(where: str, ann_id: int) -> int:
    raise ValueError(
        f"{where}, annotation {ann_id}: no category_id; class-aware evaluation needs categories"
    )


def instance_annotations(
    gt: ClassGroundTruth, image_id: int, categories: CategorySet, *, first_id: int = 1
) -> list[dict[str, Any]]:
    """COCO annotations of the thing segments of one image (crowd flagged), RLE masks.

    ``category_id`` is the annotation-file id (``categories.ids``); ids start at ``first_id``.
    """
    anns: list[dict[str, Any]] = []
    for seg in gt.segments:
        if not seg["isthing"]:
            continue
        mask = gt.panoptic == seg["id"]
        rle = encode_mask(mask)
        anns.append(
            {
                "id": first_id + len(anns),
                "image_id": int(image_id),
                "category_id": categories.ids[seg["category"]],
                "segmentation": rle,
                "area": int(mask.sum()),
                "iscrowd": int(seg["iscrowd"]),
                "bbox": _bbox(mask),
            }
        )
    return anns


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]
