"""A dataset is a list of records: one image file, its size, and its entities.

Entities keep the annotation file's own encoding (compressed RLE, uncompressed RLE or polygons),
or, for label-map sources (COCO panoptic PNG, ADE20K PNG), the value that marks the entity in a
decoded id map. Nothing is decoded when records are built, so a 30k-image json loads in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Entity:
    """One annotated entity.

    Attributes:
        segmentation: COCO ``segmentation`` (RLE dict with str or list ``counts``, or a list of
            polygons); ``None`` for label-map sources.
        iscrowd: crowd region (excluded from training targets, kept for evaluation).
        ann_id: the annotation id in the source file (for error messages).
        segment_id: the id-map value marking this entity (label-map sources only).
        bbox: the annotation's ``[x, y, w, h]`` if the source has one.
        category_id: the annotation file's category id (``None`` where the source has none);
            entity tasks ignore it, class-aware tasks map it through a ``CategorySet``.
        isthing: whether its category is a thing (``None`` where the file does not say).
    """

    segmentation: Any = None
    iscrowd: bool = False
    ann_id: int = -1
    segment_id: int | None = None
    bbox: list[float] | None = None
    category_id: int | None = None
    isthing: bool | None = None


@dataclass
class Record:
    """One image and its entities.

    Attributes:
        image_path: absolute (or working-directory relative) path of the image file.
        file_name: the name as written in the annotation file (relative to the image root).
        height, width: the size the annotation file states (after EXIF orientation).
        image_id: the annotation file's image id.
        entities: all entities, crowd included, in annotation-file order.
        id_map_path: for label-map sources, the PNG holding the entity ids.
        id_map_encoding: how ``id_map_path`` encodes ids: ``"coco_panoptic"`` (R + 256 G +
            256^2 B), ``"ade_instance"`` (ADEChallengeData2016 ``annotations_instance``: G channel
            = instance), ``"ade_full"`` (full ADE20K ``*_seg.png``: B channel = instance).
        semantic_path: ADEChallengeData2016 class map whose non-instance classes become stuff
            entities (``ade_instance`` only).
        source: the annotation file (for error messages).
    """

    image_path: str
    file_name: str
    height: int
    width: int
    image_id: int
    entities: list[Entity] = field(default_factory=list)
    id_map_path: str | None = None
    id_map_encoding: str | None = None
    semantic_path: str | None = None
    source: str = ""

    def non_crowd(self) -> list[Entity]:
        """The entities used as training targets (official: crowd annotations dropped)."""
        return [e for e in self.entities if not e.iscrowd]
