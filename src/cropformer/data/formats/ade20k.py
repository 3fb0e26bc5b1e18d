"""ADE20K readers: ADEChallengeData2016 (``annotations_instance``) and the full release."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cropformer.data.decode import image_size
from cropformer.data.formats.id_maps import read_id_map
from cropformer.data.records import Entity, Record


def _entities_of(ids: np.ndarray) -> list[Entity]:
    values = np.unique(ids)
    return [Entity(ann_id=int(v), segment_id=int(v)) for v in values if v != 0]


def read_ade20k_challenge(
    root: str | os.PathLike[str], split: str = "validation", *, with_stuff: bool = True
) -> list[Record]:
    """ADEChallengeData2016: ``images/<split>/*.jpg`` + ``annotations_instance/<split>/*.png``.

    Each instance (G channel) is one entity. With ``with_stuff`` and ``annotations/<split>``
    present, every class of the semantic map not covered by an instance becomes one more
    entity (stuff), so the image is covered like EntitySeg. ``file_name`` is relative to
    ``<root>/images``.
    """
    root = Path(root)
    inst_dir = root / "annotations_instance" / split
    if not inst_dir.is_dir():
        raise FileNotFoundError(f"ADE20K instance annotations not found: {inst_dir}")
    sem_dir = root / "annotations" / split
    records = []
    for i, png in enumerate(sorted(inst_dir.glob("*.png"))):
        name = f"{split}/{png.stem}.jpg"
        img_path = root / "images" / name
        sem = sem_dir / png.name if with_stuff and (sem_dir / png.name).is_file() else None
        h, w = image_size(img_path)
        ids = read_id_map(png, "ade_instance", expected_size=(h, w), semantic_path=sem)
        records.append(
            Record(
                image_path=str(img_path),
                file_name=name,
                height=h,
                width=w,
                image_id=i + 1,
                entities=_entities_of(ids),
                id_map_path=str(png),
                id_map_encoding="ade_instance",
                semantic_path=str(sem) if sem else None,
                source=str(inst_dir),
            )
        )
    return records


def read_ade20k_full(root: str | os.PathLike[str]) -> list[Record]:
    """Full ADE20K release: every ``*_seg.png`` under ``root`` with its ``.jpg`` beside it.

    class = R/10*256 + G, instance = B (0 = unlabeled); one entity per non-zero B value. The
    amodal ``instance_*.png`` files are ignored. ``file_name`` is relative to ``root``.
    """
    root = Path(root)
    records = []
    for i, seg in enumerate(sorted(root.rglob("*_seg.png"))):
        jpg = seg.with_name(seg.name[: -len("_seg.png")] + ".jpg")
        if not jpg.is_file():
            raise FileNotFoundError(f"{seg}: image {jpg.name} not found beside it")
        h, w = image_size(jpg)
        ids = read_id_map(seg, "ade_full", expected_size=(h, w))
        records.append(
            Record(
                image_path=str(jpg),
                file_name=str(jpg.relative_to(root)),
                height=h,
                width=w,
                image_id=i + 1,
                entities=_entities_of(ids),
                id_map_path=str(seg),
                id_map_encoding="ade_full",
                source=str(root),
            )
        )
    return records
