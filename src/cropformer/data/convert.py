"""Records of any source -> class-agnostic EntitySeg-format json (what every data config reads).

Output: COCO instance layout, compressed RLE, ``area`` = mask area, ``bbox`` from the mask,
``iscrowd`` kept, ``category_id`` 1, non-overlapping masks, ``file_name`` relative to the image
root. Overlaps in the source (COCO instances) are resolved by painting order (later wins);
entities left empty are dropped; both are counted in the report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cropformer.data.decode import label_map_counts, label_source_for
from cropformer.data.records import Record
from cropformer.utils.atomic import write_text


@dataclass
class ConversionReport:
    """What a conversion did (printed by the script)."""

    images: int = 0
    entities: int = 0
    crowd: int = 0
    images_with_overlap: int = 0
    overlap_pixels: int = 0
    dropped_empty: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"images: {self.images}",
            f"entities: {self.entities} (crowd {self.crowd})",
            f"images with overlapping masks: {self.images_with_overlap} "
            f"({self.overlap_pixels} pixels given to the later annotation)",
            f"entities dropped (empty after resolving overlaps): {self.dropped_empty}",
        ]
        return out + self.notes


def record_entity_annotations(record: Record, report: ConversionReport) -> list[dict[str, Any]]:
    """Non-overlapping compressed-RLE annotations of one record (crowd kept and flagged)."""
    from pycocotools import mask as mask_util

    ents = record.entities
    source = label_source_for(record, ents)
    label = source.full()
    h, w = label.shape
    if source.overlap:
        report.images_with_overlap += 1
        claimed = 0
        if record.id_map_path is None:
            from cropformer.data.decode import segmentation_counts

            for e in ents:
                c = segmentation_counts(e.segmentation, h, w)
                claimed += int(c[1::2].sum())
        report.overlap_pixels += max(claimed - int((label >= 0).sum()), 0)
    shifted = (label.astype(np.int64) + 1).astype(np.int32)  # 0 = none, k+1 = entity k
    counts_all = label_map_counts(shifted)
    anns = []
    for k, e in enumerate(ents):
        counts = counts_all[k + 1] if k + 1 < len(counts_all) else np.array([h * w])
        area = int(counts[1::2].sum())
        if area == 0:
            report.dropped_empty += 1
            continue
        rle = mask_util.frPyObjects({"size": [h, w], "counts": counts.tolist()}, h, w)
        anns.append(
            {
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                "area": area,
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "iscrowd": int(e.iscrowd),
                "category_id": 1,
            }
        )
        report.entities += 1
        report.crowd += int(e.iscrowd)
    return anns


def records_to_entityseg(
    records: Iterable[Record], report: ConversionReport | None = None
) -> dict[str, Any]:
    """Build the EntitySeg-format dict of the records (ids renumbered from 1)."""
    report = report if report is not None else ConversionReport()
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for rec in records:
        images.append(
            {
                "id": rec.image_id,
                "file_name": rec.file_name,
                "height": rec.height,
                "width": rec.width,
            }
        )
        for ann in record_entity_annotations(rec, report):
            ann["id"] = len(annotations) + 1
            ann["image_id"] = rec.image_id
            annotations.append(ann)
        report.images += 1
    return {
        "info": {"description": "class-agnostic entity annotations (cropformer convert)"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "entity", "supercategory": "entity"}],
    }


def write_json(data: dict[str, Any], out: str | os.PathLike[str]) -> Path:
    """Write atomically (temporary file + rename)."""
    return write_text(out, json.dumps(data))
