"""Write synthetic scenes as a dataset: JPEG + EntitySeg-format json, cached and atomic.

Next to each ``<split>.json`` (class-agnostic, every entity category 1) a ``<split>_classes.json``
holds the same annotations with the generator's kind of each entity as its category
(``SYNTHETIC_CATEGORIES``: the class-aware embedded task). Folders generated before it existed get
it on first use (:func:`ensure_class_annotations`): the kinds are recomputed from the layout part of
the generator, no pixel is rendered, and the cache key does not change.

The files go through the same reader as real data (``formats.entityseg``). Generation is seeded
per image (seed, split, index), so the same parameters give byte-identical files; the output is
cached under ``<root>/<hash of the parameters>/`` and built atomically (temporary directory +
rename, under a file lock) so concurrent processes never see a half-written dataset.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from cropformer.data.synthetic import (
    SYNTHETIC_CATEGORIES,
    SyntheticSpec,
    render_scene,
    scene_layout_categories,
)
from cropformer.utils.atomic import write_text

#: the split's element of each image's seed (seed, split id, index): disjoint random streams
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
SPLITS = tuple(SPLIT_IDS)


def split_seed(spec: SyntheticSpec, split: str, index: int) -> list[int]:
    """The seed sequence of image ``index`` of a split (the one place it is defined)."""
    return [spec.seed, SPLIT_IDS[split], index]


def _make_one(args: tuple[SyntheticSpec, str, int, str]) -> dict[str, Any]:
    from pycocotools import mask as mask_util

    from cropformer.data.decode import label_map_counts

    spec, split, index, out_dir = args
    img, label = render_scene(spec, split_seed(spec, split, index))
    H, W = label.shape
    file_name = f"{split}/{split}_{index:05d}.jpg"
    Image.fromarray(img).save(Path(out_dir) / file_name, quality=spec.jpeg_quality)
    image_id = index + 1
    anns = []
    for counts in label_map_counts(label):
        rle = mask_util.frPyObjects({"size": [H, W], "counts": counts.tolist()}, H, W)
        area = int(counts[1::2].sum())
        if area == 0:
            continue
        anns.append(
            {
                "image_id": image_id,
                "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")},
                "area": area,
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "iscrowd": 0,
                "category_id": 1,
            }
        )
    return {
        "image": {"id": image_id, "file_name": file_name, "height": H, "width": W},
        "annotations": anns,
    }


@contextlib.contextmanager
def _locked(path: Path, timeout: float = 1800.0) -> Iterator[None]:
    try:
        from filelock import FileLock
    except ImportError:  # pragma: no cover - filelock ships with torch
        yield
        return
    with FileLock(str(path), timeout=timeout):
        yield


def generate_split(spec: SyntheticSpec, split: str, out_dir: Path, *, processes: int = 1) -> Path:
    """Write one split's images under ``out_dir/<split>/`` and ``out_dir/<split>.json``."""
    n = {"train": spec.num_train, "val": spec.num_val, "test": spec.num_test}[split]
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    jobs = [(spec, split, i, str(out_dir)) for i in range(n)]
    if processes > 1 and n >= 4:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(processes) as pool:
            results = pool.map(_make_one, jobs, chunksize=max(1, n // (4 * processes)))
    else:
        results = [_make_one(j) for j in jobs]
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for r in results:
        images.append(r["image"])
        for a in r["annotations"]:
            a["id"] = len(anns) + 1
            anns.append(a)
    data = {
        "info": {"description": "cropformer synthetic entity scenes", "spec": asdict(spec)},
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "entity", "supercategory": "entity"}],
    }
    path = out_dir / f"{split}.json"
    path.write_text(json.dumps(data))
    write_class_annotations(spec, path)
    return path


def _index_of(file_name: str) -> int:
    """Image index from a generated file name ``<split>/<split>_<index>.jpg``."""
    stem = Path(file_name).stem
    try:
        return int(stem.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"{file_name}: not a generated synthetic image name") from None


def class_annotations_path(split_json: str | os.PathLike[str]) -> Path:
    """``<split>_classes.json`` next to ``<split>.json``."""
    p = Path(split_json)
    return p.with_name(f"{p.stem}_classes.json")


def write_class_annotations(spec: SyntheticSpec, split_json: str | os.PathLike[str]) -> Path:
    """Write ``<split>_classes.json``: the split's annotations with their kind as category.

    Every value of the entity json is kept except ``category_id`` and ``categories``. The kinds
    come from the generator's layout with each image's own seed; the entity areas it gives are
    checked against the json, so a wrong seed or a changed generator cannot go unnoticed.
    """
    src = Path(split_json)
    data = json.loads(src.read_text())
    split = src.stem
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in data["annotations"]:
        by_image.setdefault(int(a["image_id"]), []).append(a)
    anns: list[dict[str, Any]] = []
    for img in data["images"]:
        index = _index_of(img["file_name"])
        cats, areas = scene_layout_categories(spec, split_seed(spec, split, index))
        own = by_image.get(int(img["id"]), [])
        if [int(a["area"]) for a in own] != areas:
            raise ValueError(
                f"{src}: image {img['file_name']}: the generator's layout does not reproduce its "
                "entities (different spec or generator version); regenerate the dataset"
            )
        anns.extend({**a, "category_id": c} for a, c in zip(own, cats))
    out = {**data, "annotations": anns, "categories": [dict(c) for c in SYNTHETIC_CATEGORIES]}
    path = class_annotations_path(src)
    write_text(path, json.dumps(out))
    return path


def ensure_class_annotations(folder: str | os.PathLike[str], spec: SyntheticSpec) -> None:
    """Add the missing ``<split>_classes.json`` of a generated folder (older caches)."""
    folder = Path(folder)
    for split_json in sorted(folder.glob("*.json")):
        if split_json.stem.endswith("_classes") or split_json.name == "SPEC.json":
            continue
        if not class_annotations_path(split_json).is_file():
            with _locked(folder / f"{split_json.stem}_classes.lock"):
                if not class_annotations_path(split_json).is_file():
                    write_class_annotations(spec, split_json)


def prepare_synthetic(
    root: str | os.PathLike[str], spec: SyntheticSpec, *, processes: int | None = None
) -> Path:
    """Generate (once) and return ``<root>/<spec.key()>/`` holding ``<split>/`` and ``<split>.json``
    for the train, val and test splits.

    Safe with concurrent callers: a file lock serialises generation, the data is written to a
    temporary folder and renamed into place, and a finished folder is reused as is.
    """
    root = Path(root)
    final = root / spec.key()
    if _complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{spec.key()}.lock"):
        if _complete(final):
            return final
        tmp = root / f".{spec.key()}.tmp-{os.getpid()}-{time.time_ns()}"
        try:
            procs = processes if processes is not None else min(2, os.cpu_count() or 1)
            for split in SPLITS:
                generate_split(spec, split, tmp, processes=procs)
            (tmp / "SPEC.json").write_text(json.dumps(asdict(spec), indent=1, default=list))
            if final.exists():  # a stale partial folder from an older crash: replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _complete(folder: Path) -> bool:
    return all((folder / f"{split}.json").is_file() for split in SPLITS)
