"""Write synthetic scenes as a dataset: JPEG + EntitySeg-format json, cached and atomic.

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

from cropformer.data.synthetic import SyntheticSpec, render_scene


def _make_one(args: tuple[SyntheticSpec, str, int, str]) -> dict[str, Any]:
    from pycocotools import mask as mask_util

    from cropformer.data.decode import label_map_counts

    spec, split, index, out_dir = args
    split_id = 0 if split == "train" else 1
    img, label = render_scene(spec, [spec.seed, split_id, index])
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
    n = spec.num_train if split == "train" else spec.num_val
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
    return path


def prepare_synthetic(
    root: str | os.PathLike[str], spec: SyntheticSpec, *, processes: int | None = None
) -> Path:
    """Generate (once) and return ``<root>/<spec.key()>/`` holding train/ val/ train.json val.json.

    Safe with concurrent callers: a file lock serialises generation, the data is written to a
    temporary folder and renamed into place, and a finished folder is reused as is.
    """
    root = Path(root)
    final = root / spec.key()
    if (final / "val.json").is_file() and (final / "train.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{spec.key()}.lock"):
        if (final / "val.json").is_file() and (final / "train.json").is_file():
            return final
        tmp = root / f".{spec.key()}.tmp-{os.getpid()}-{time.time_ns()}"
        try:
            procs = processes if processes is not None else min(2, os.cpu_count() or 1)
            generate_split(spec, "train", tmp, processes=procs)
            generate_split(spec, "val", tmp, processes=procs)
            (tmp / "SPEC.json").write_text(json.dumps(asdict(spec), indent=1, default=list))
            if final.exists():  # a stale partial folder from an older crash: replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final
