"""COCO panoptic reader: every segment (thing or stuff) is one entity, crowd flagged.

The same official format serves ADE20K panoptic (``ade20k_panoptic_{train,val}.json`` + PNG
folder written by Mask2Former's ``prepare_ade20k_pan_seg.py``, 150 classes: 100 things, 50 stuff).
Each entity keeps its ``category_id`` and ``isthing`` (from the json's ``categories`` or a
categories file such as panopticapi's ``panoptic_coco_categories.json``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cropformer.data.categories import CategorySet
from cropformer.data.formats.entityseg import load_json, read_categories
from cropformer.data.records import Entity, Record


def read_coco_panoptic(
    panoptic_json: str | os.PathLike[str],
    panoptic_dir: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    *,
    file_prefix: str = "",
    categories: str | os.PathLike[str] | list[dict[str, Any]] | CategorySet | None = None,
) -> list[Record]:
    """Records of a COCO panoptic json + PNG folder (id = R + 256 G + 256^2 B, 0 = void).

    ``file_prefix`` is prepended to each image ``file_name`` (e.g. ``train2017/`` when the
    image root is the COCO folder). ``categories`` (a file, a list or a ``CategorySet``) gives
    the thing flags when the json has no ``categories`` list.
    """
    data = load_json(panoptic_json)
    if isinstance(categories, CategorySet):
        classes: CategorySet | None = categories
    elif categories is not None:
        classes = read_categories(categories)
    elif data.get("categories"):
        classes = read_categories(data)
    else:
        classes = None
    images = {img["id"]: img for img in data["images"]}
    records = []
    for ann in data.get("annotations", []):
        img = images.get(ann["image_id"])
        if img is None:
            raise ValueError(
                f"{panoptic_json}: panoptic annotation {ann.get('file_name')} refers to unknown "
                f"image id {ann['image_id']}"
            )
        ents = []
        for s in ann.get("segments_info", []):
            cat = s.get("category_id")
            isthing = None
            if cat is not None and classes is not None:
                where = f"{panoptic_json}: {ann.get('file_name')} segment {s.get('id')}"
                isthing = classes.categories[classes.contiguous(cat, where=where)].isthing
            ents.append(
                Entity(
                    iscrowd=bool(s.get("iscrowd", 0)),
                    ann_id=int(s["id"]),
                    segment_id=int(s["id"]),
                    bbox=s.get("bbox"),
                    category_id=None if cat is None else int(cat),
                    isthing=isthing,
                )
            )
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


#: ADE20K panoptic (Mask2Former's ``prepare_ade20k_pan_seg.py`` output) is COCO panoptic format.
read_ade20k_panoptic = read_coco_panoptic
