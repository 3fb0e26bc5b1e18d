"""Class sets of class-aware data: category ids, names, thing/stuff, and contiguous indices.

Annotation files number categories freely (COCO 1..200 with gaps, EntitySeg 0..643); the class
head predicts contiguous indices 0..C-1 (C = no-object), as detectron2's
``thing_dataset_id_to_contiguous_id`` / ``stuff_dataset_id_to_contiguous_id`` do. A
``CategorySet`` keeps the file's order (the official contiguous order) and maps both ways.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Category:
    """One class: the annotation file's id, its name and whether it is a thing (countable)."""

    id: int
    name: str
    isthing: bool = True


def category_isthing(entry: Mapping[str, Any], default: bool = True) -> bool:
    """Thing or stuff from a json category entry.

    COCO / ADE20K panoptic jsons carry ``isthing`` (0/1); EntitySeg's EntityClass json carries
    ``type`` ("thing" | "stuff"). Entries with neither are things (instance jsons).
    """
    if "isthing" in entry:
        return bool(int(entry["isthing"]))
    kind = entry.get("type")
    if kind is not None:
        if str(kind) not in ("thing", "stuff"):
            raise ValueError(
                f"category {entry.get('id')} ({entry.get('name')!r}) has type {kind!r}; "
                "expected 'thing' or 'stuff'"
            )
        return str(kind) == "thing"
    return default


class CategorySet:
    """An ordered class set; contiguous index k = position in the file's category list.

    Args:
        categories: the classes in contiguous order (ids unique).
    """

    def __init__(self, categories: Sequence[Category]) -> None:
        ids = [c.id for c in categories]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"category ids must be unique; repeated: {dup[:10]}")
        self.categories: tuple[Category, ...] = tuple(categories)
        self._index = {c.id: k for k, c in enumerate(self.categories)}

    @classmethod
    def from_json(
        cls, entries: Iterable[Mapping[str, Any]], *, source: str = "categories"
    ) -> CategorySet:
        """From a json ``categories`` list (``id``, ``name``, and ``isthing`` or ``type``)."""
        out = []
        for i, e in enumerate(entries):
            if "id" not in e:
                raise ValueError(f"{source}: category entry {i} has no 'id' ({dict(e)})")
            out.append(Category(int(e["id"]), str(e.get("name", e["id"])), category_isthing(e)))
        if not out:
            raise ValueError(f"{source}: the categories list is empty")
        return cls(out)

    @classmethod
    def from_names(
        cls, names: Sequence[str], isthing: Sequence[bool] | None = None, first_id: int = 0
    ) -> CategorySet:
        """Classes numbered ``first_id, first_id + 1, ...`` in the given order."""
        flags = list(isthing) if isthing is not None else [True] * len(names)
        if len(flags) != len(names):
            raise ValueError(f"{len(names)} class names but {len(flags)} isthing flags")
        return cls(
            [Category(first_id + k, str(n), bool(t)) for k, (n, t) in enumerate(zip(names, flags))]
        )

    def __len__(self) -> int:
        return len(self.categories)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.categories)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CategorySet) and self.categories == other.categories

    def __repr__(self) -> str:
        return f"CategorySet({len(self)} classes: {self.num_things} things, {self.num_stuff} stuff)"

    @property
    def num_things(self) -> int:
        """Number of thing classes."""
        return sum(c.isthing for c in self.categories)

    @property
    def num_stuff(self) -> int:
        """Number of stuff classes."""
        return len(self) - self.num_things

    @property
    def names(self) -> list[str]:
        """Names in contiguous order."""
        return [c.name for c in self.categories]

    @property
    def isthing(self) -> list[bool]:
        """Thing flags in contiguous order."""
        return [c.isthing for c in self.categories]

    @property
    def ids(self) -> list[int]:
        """Annotation-file ids in contiguous order."""
        return [c.id for c in self.categories]

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._index

    def contiguous(self, category_id: int, *, where: str = "annotation") -> int:
        """Contiguous index of an annotation-file category id (clear error if unknown)."""
        try:
            return self._index[int(category_id)]
        except KeyError:
            raise ValueError(
                f"{where}: category_id {category_id} is not in the class set "
                f"({len(self)} classes, ids {self.ids[:5]}...); check the categories list"
            ) from None

    def thing_stuff(self, category_id: int) -> bool:
        """Whether an annotation-file category id is a thing."""
        return self.categories[self.contiguous(category_id)].isthing

    def to_json(self) -> list[dict[str, Any]]:
        """The class set as a json ``categories`` list (``id``, ``name``, ``isthing``)."""
        return [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in self.categories]
