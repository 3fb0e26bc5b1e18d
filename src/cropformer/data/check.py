"""Dataset checks behind ``scripts/check_dataset.py``: counts and every problem found."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cropformer.data.decode import (
    label_source_from_counts,
    open_image,
    segmentation_counts,
)
from cropformer.data.formats.entityseg import load_json, read_entityseg

RES_BUCKETS = ((0, 1000), (1000, 2000), (2000, 4000), (4000, 8000), (8000, 10**9))


@dataclass
class DatasetReport:
    """Counts and problems of one image folder + annotation json."""

    images: int = 0
    entities: int = 0
    crowd: int = 0
    per_image: list[int] = field(default_factory=list)
    long_sides: list[int] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary."""
        out = [f"images: {self.images}", f"entities: {self.entities} (crowd {self.crowd})"]
        if self.per_image:
            a = np.asarray(self.per_image)
            out.append(f"entities per image: min {a.min()}, mean {a.mean():.1f}, max {a.max()}")
        if self.sizes:
            hs = np.asarray([s[0] for s in self.sizes])
            ws = np.asarray([s[1] for s in self.sizes])
            out.append(
                f"height: min {hs.min()}, median {int(np.median(hs))}, max {hs.max()}; "
                f"width: min {ws.min()}, median {int(np.median(ws))}, max {ws.max()}"
            )
            buckets: Counter[tuple[int, int]] = Counter()
            for s in self.long_sides:
                for lo, hi in RES_BUCKETS:
                    if lo <= s < hi:
                        buckets[(lo, hi)] += 1
            parts = [
                f"{lo}-{hi if hi < 10**9 else 'inf'}px: {buckets[(lo, hi)]}"
                for lo, hi in RES_BUCKETS
            ]
            out.append("long side: " + ", ".join(parts))
        out.append(f"problems: {len(self.problems)}")
        out += [f"  - {p}" for p in self.problems]
        return out


def check_dataset(
    images: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    *,
    decode: bool = True,
    max_problems: int = 10_000,
) -> DatasetReport:
    """Check every image and annotation; problems are collected, never raised.

    Finds: missing/unreadable/truncated images (``decode`` does a reduced-scale full decode),
    json/file size mismatches, invalid RLE or polygons, empty masks, overlapping masks.
    """
    rep = DatasetReport()
    records = read_entityseg(annotations, images)

    def problem(msg: str) -> None:
        if len(rep.problems) < max_problems:
            rep.problems.append(msg)

    data = load_json(annotations)
    ids = Counter(img.get("id") for img in data["images"])
    for image_id, n in ids.items():
        if n > 1:
            problem(f"image id {image_id} is used by {n} images")
    orphans = [a.get("id") for a in data.get("annotations", []) if a.get("image_id") not in ids]
    if orphans:
        problem(f"{len(orphans)} annotations refer to no image (ids {orphans[:5]}...)")

    for rec in records:
        rep.images += 1
        rep.entities += len(rec.entities)
        rep.crowd += sum(e.iscrowd for e in rec.entities)
        rep.per_image.append(len(rec.entities))
        rep.sizes.append((rec.height, rec.width))
        rep.long_sides.append(max(rec.height, rec.width))
        where = f"{rec.file_name}"
        if not Path(rec.image_path).is_file():
            problem(f"{where}: image file missing ({rec.image_path})")
        else:
            try:
                if decode:
                    open_image(
                        rec.image_path, min_size=(64, 64), expected_size=(rec.height, rec.width)
                    )
                else:
                    _header_only(rec.image_path, (rec.height, rec.width))
            except (ValueError, OSError) as e:
                problem(f"{where}: {e}")
        counts_list = []
        for ent in rec.entities:
            try:
                c = segmentation_counts(
                    ent.segmentation,
                    rec.height,
                    rec.width,
                    where=f"{where} annotation {ent.ann_id}",
                )
            except ValueError as err:
                problem(str(err))
                continue
            if c[1::2].sum() == 0:
                problem(f"{where} annotation {ent.ann_id}: empty mask")
            counts_list.append(c)
        if counts_list:
            src = label_source_from_counts(counts_list, rec.height, rec.width)
            if src.overlap:
                claimed = sum(int(c[1::2].sum()) for c in counts_list)
                covered = int((src.full() >= 0).sum())
                problem(f"{where}: masks overlap ({claimed - covered} pixels claimed twice)")
    return rep


def _header_only(path: str, expected: tuple[int, int]) -> None:
    from cropformer.data.decode import SampleError, image_size

    got = image_size(path)
    if got != expected:
        raise SampleError(
            f"image is {got[1]}x{got[0]} but the annotation file says {expected[1]}x{expected[0]}"
        )
