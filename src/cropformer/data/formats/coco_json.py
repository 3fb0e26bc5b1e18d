"""Any COCO-format instance json as entity data (custom data, no code).

Same reader as EntitySeg: each instance keeps its ``category_id`` (and ``isthing`` where the
json's categories carry ``isthing`` or ``type``; otherwise a thing) for class-aware tasks.
Instances may overlap: they are resolved by painting order (a later annotation wins where two
overlap); ``convert_to_entity.py coco`` writes the resolved, non-overlapping json once and
reports the overlaps.
"""

from __future__ import annotations

from cropformer.data.formats.entityseg import read_entityseg as read_coco_json

__all__ = ["read_coco_json"]
