"""The shared COCO panoptic sample (panopticapi's ``sample_data``) in the official json format.

The sample ships the panoptic PNGs and the same segments as a detection-format json (compressed
RLE, category ids, crowd flags, renumbered ids) but no ``panoptic_examples.json``. This builds it
once into a temporary folder, as panopticapi's ``detection2panoptic_coco_format`` converter
would: every detection-format segment is matched to the PNG segment it equals (IoU 1), whose
id = R + 256 G + 256^2 B. Nothing is copied: images and PNGs are read in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util


def sample_root(shared_dir: Path) -> Path:
    """The sample folder in ``../shared/data``."""
    return shared_dir / "data" / "coco-panoptic-sample"


def png_ids(path: Path) -> np.ndarray:
    """Segment ids of a COCO panoptic PNG (R + 256 G + 256^2 B)."""
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return arr[..., 0] + 256 * arr[..., 1] + 65536 * arr[..., 2]


def build_panoptic_json(shared_dir: Path, out: Path) -> dict[str, Any]:
    """Write the official panoptic json of the sample to ``out`` and return its paths.

    Returns ``{"json", "png_dir", "image_root", "categories"}``.
    """
    root = sample_root(shared_dir)
    det = json.loads((root / "sample_data" / "panoptic_coco_detection_format.json").read_text())
    cats = json.loads((root / "panoptic_coco_categories.json").read_text())
    png_dir = root / "sample_data" / "panoptic_examples"
    annotations = []
    for img in det["images"]:
        png = png_dir / (Path(img["file_name"]).stem + ".png")
        ids = png_ids(png)
        segments = []
        for a in (a for a in det["annotations"] if a["image_id"] == img["id"]):
            m = mask_util.decode(a["segmentation"]).astype(bool)
            values, counts = np.unique(ids[m], return_counts=True)
            seg_id = int(values[counts.argmax()])
            assert (ids == seg_id).sum() == m.sum() == counts.max(), "RLE != PNG segment"
            segments.append(
                {
                    "id": seg_id,
                    "category_id": int(a["category_id"]),
                    "iscrowd": int(a["iscrowd"]),
                    "area": int(m.sum()),
                    "bbox": a["bbox"],
                }
            )
        annotations.append(
            {"image_id": img["id"], "file_name": png.name, "segments_info": segments}
        )
    data = {"images": det["images"], "annotations": annotations, "categories": cats}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    return {
        "json": out,
        "png_dir": png_dir,
        "image_root": root / "sample_data" / "input_images",
        "categories": root / "panoptic_coco_categories.json",
    }
