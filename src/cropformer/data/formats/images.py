"""Records for plain image files without annotations (prediction on in-the-wild images)."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from cropformer.data.decode import image_size
from cropformer.data.records import Record

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(spec: str | os.PathLike[str] | Sequence[str]) -> list[tuple[Path, str]]:
    """(path, name) of every image of a folder (recursive), a glob pattern or a list of files.

    ``name`` is relative to the folder for folders, else the path as given.
    """
    if isinstance(spec, (str, os.PathLike)):
        p = Path(spec)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            return [(f, str(f.relative_to(p))) for f in files]
        if p.is_file():
            return [(p, p.name)]
        matches = sorted(glob.glob(str(spec), recursive=True))
        if not matches:
            raise FileNotFoundError(f"no image matches {spec} (a folder, a file or a glob)")
        return [(Path(m), m) for m in matches]
    return [(Path(s), str(s)) for s in spec]


def image_records(spec: str | os.PathLike[str] | Sequence[str]) -> list[Record]:
    """One entity-less record per image (size from the header, EXIF orientation applied)."""
    records = []
    for i, (path, name) in enumerate(list_images(spec)):
        h, w = image_size(path)
        records.append(Record(str(path), name, h, w, image_id=i + 1))
    return records
