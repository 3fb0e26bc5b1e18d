"""COCO panoptic reader: every segment (thing or stuff) is one entity, crowd flagged."""

from __future__ import annotations

import os
from pathlib import Path

from cropformer.data.formats.entityseg import load_json
from cropformer.data.records import Entity, Record


def read_coco_panoptic(
    panoptic_json: str | os.PathLike[str],
    panoptic_dir: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    *,
    file_prefix: str = "",
) -> list[Record]:
    """Records of a COCO panoptic json + PNG folder (id = R + 256 G + 256^2 B, 0 = void).

    ``file_prefix`` is prepended to each image ``file_name`` (e.g. ``train2017/`` when the
    image root is the COCO folder).
    """
    data = load_json(panoptic_json)
    images = {img["id"]: img for img in data["images"]}
    records = []
    for ann in data.get("annotations", []):
        img = images.get(ann["image_id"])
        if img is None:
            raise ValueError(
                f"{panoptic_json}: panoptic annotation {ann.get('file_name')} refers to unknown "
                f"image id {ann['image_id']}"
            )
        ents = [
            Entity(
                iscrowd=bool(s.get("iscrowd", 0)),
                ann_id=int(s["id"]),
                segment_id=int(s["id"]),
                bbox=s.get("bbox"),
            )
            for s in ann.get("segments_info", [])
        ]
        name = file_prefix + str(img["file_name"])
        records.append(
            Record(
                image_path=str(Path(image_root) / name),
                file_name=name,
                height=int(img["height"]),
                width=int(img["width"]),
                image_id=int(img["id"]),
                entities=ents,
                id_map_path=str(Path(panoptic_dir) / ann["file_name"]),
                id_map_encoding="coco_panoptic",
                source=str(panoptic_json),
            )
        )
    return records
