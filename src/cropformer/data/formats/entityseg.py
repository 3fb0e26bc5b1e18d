"""EntitySeg / COCO-instance json reader (RLE compressed or not, polygons).

Every entity keeps its ``category_id`` and, where the json's ``categories`` say so, ``isthing``
(``isthing`` 0/1, or EntitySeg EntityClass ``type`` thing/stuff); entity tasks ignore both.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from cropformer.data.categories import CategorySet, category_isthing
from cropformer.data.records import Entity, Record


def load_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an annotation json with a clear error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"annotation file not found: {p}")
    try:
        with p.open("rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"annotation file {p} is not valid json: {e}") from e
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"annotation file {p} has no 'images' list (not COCO/EntitySeg format)")
    return data


def read_categories(
    source: str | os.PathLike[str] | dict[str, Any] | list[dict[str, Any]],
) -> CategorySet:
    """The class set of an annotation json (its ``categories``) or of a categories file (a json
    list, e.g. panopticapi's ``panoptic_coco_categories.json``)."""
    name = "<dict>"
    data: Any = source
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        p = Path(source)
        if not p.is_file():
            raise FileNotFoundError(f"categories file not found: {p}")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"categories file {p} is not valid json: {e}") from e
    if isinstance(data, dict):
        if "categories" not in data:
            raise ValueError(f"{name} has no 'categories' list; give a categories file")
        data = data["categories"]
    if not isinstance(data, list):
        raise ValueError(f"{name}: categories must be a json list of {{id, name, isthing}}")
    return CategorySet.from_json(data, source=name)


def _thing_flags(data: dict[str, Any]) -> dict[int, bool]:
    """Category id -> isthing from a json's ``categories`` (empty when it has none)."""
    return {int(c["id"]): category_isthing(c) for c in data.get("categories") or [] if "id" in c}


def records_from_coco(
    data: dict[str, Any], image_root: str | os.PathLike[str], *, source: str = ""
) -> list[Record]:
    """Records from an already-loaded COCO-style dict (category ids and thing flags kept)."""
    things = _thing_flags(data)
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in data.get("annotations", []) or []:
        by_image[ann.get("image_id")].append(ann)
    root = Path(image_root)
    records = []
    for img in data["images"]:
        for key in ("id", "file_name"):
            if key not in img:
                raise ValueError(f"{source}: image entry {img} lacks '{key}'")
        if "height" not in img or "width" not in img:
            # Some exporters omit the size: read it from the image header (EXIF applied).
            from cropformer.data.decode import image_size

            img = dict(img)
            img["height"], img["width"] = image_size(root / img["file_name"])
        ents = []
        for ann in by_image.get(img["id"], []):
            if "segmentation" not in ann:
                raise ValueError(
                    f"{source}: annotation {ann.get('id')} of image {img['file_name']} "
                    "has no 'segmentation'"
                )
            cat = ann.get("category_id")
            ents.append(
                Entity(
                    segmentation=ann["segmentation"],
                    iscrowd=bool(ann.get("iscrowd", 0)),
                    ann_id=int(ann.get("id", -1)),
                    bbox=ann.get("bbox"),
                    category_id=None if cat is None else int(cat),
                    isthing=None if cat is None else things.get(int(cat)),
                )
            )
        records.append(
            Record(
                image_path=str(root / img["file_name"]),
                file_name=str(img["file_name"]),
                height=int(img["height"]),
                width=int(img["width"]),
                image_id=int(img["id"]),
                entities=ents,
                source=source,
            )
        )
    return records


def read_entityseg(
    annotations: str | os.PathLike[str], image_root: str | os.PathLike[str]
) -> list[Record]:
    """Records of an EntitySeg-format (COCO instance) json; also the ``images_lr`` variant.

    ``file_name`` is relative to ``image_root`` (EntitySeg ``_all`` jsons include the
    ``entity_0X_...`` sub-folder).
    """
    return records_from_coco(load_json(annotations), image_root, source=str(annotations))
