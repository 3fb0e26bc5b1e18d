"""Which entities become class-aware training targets, and with which class index.

The tasks differ only in how annotated segments turn into targets (Mask2Former's dataset
mappers): ``instance`` keeps the thing segments (stuff pixels are background, as with COCO's
``instances_*.json``), ``panoptic`` keeps every segment but merges the segments of one stuff class
into one (the panoptic format has one segment per stuff class and image; COCO and ADE20K already
are so, EntitySeg's entities and the synthetic bands are not), ``semantic`` merges all segments of
a class into one target per class present (``MaskFormerSemanticDatasetMapper``). Entity tasks use
none of this: every entity is class 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cropformer.data.categories import CategorySet
from cropformer.data.records import Entity

TARGET_MODES = ("instance", "panoptic", "semantic")


@dataclass(frozen=True)
class TargetClasses:
    """Class-aware target selection.

    Args:
        categories: the class set (contiguous index = class-head index).
        mode: ``instance`` | ``panoptic`` | ``semantic``.
    """

    categories: CategorySet
    mode: str = "panoptic"

    def __post_init__(self) -> None:
        if self.mode not in TARGET_MODES:
            raise ValueError(f"target mode {self.mode!r} is not one of {TARGET_MODES}")

    def select(
        self, entities: Sequence[Entity], *, where: str = "annotation"
    ) -> tuple[list[Entity], np.ndarray, np.ndarray | None]:
        """The target entities, their class indices and (semantic) the class group of each.

        Returns:
            entities kept (in order), labels (K,) int64 contiguous class of each kept entity,
            and for ``semantic`` / ``panoptic`` a (K,) int64 target index per entity (groups
            numbered by first appearance; merged entities share one), else None.
        """
        kept: list[Entity] = []
        labels: list[int] = []
        for e in entities:
            if e.category_id is None:
                raise ValueError(
                    f"{where}: annotation {e.ann_id} has no category_id; class-aware tasks need "
                    "categories (use task=entity for class-agnostic data)"
                )
            k = self.categories.contiguous(e.category_id, where=f"{where}, annotation {e.ann_id}")
            if self.mode == "instance" and not self.categories.categories[k].isthing:
                continue
            kept.append(e)
            labels.append(k)
        lab = np.asarray(labels, dtype=np.int64)
        if self.mode == "instance":
            return kept, lab, None
        thing = self.categories.isthing
        keys: dict[tuple[int, int], int] = {}
        group = np.empty(len(kept), dtype=np.int64)
        for i, k in enumerate(labels):
            # semantic: one target per class; panoptic: per stuff class, things apart
            key = (k, -1) if (self.mode == "semantic" or not thing[k]) else (k, i)
            group[i] = keys.setdefault(key, len(keys))
        return kept, lab, group


def group_labels(labels: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Class index of every group (semantic targets), groups numbered 0..G-1.

    Shape: labels (K,), group (K,) -> (G,).
    """
    num = int(group.max()) + 1 if group.size else 0
    out = np.zeros(num, dtype=np.int64)
    out[group] = labels
    return out
