#!/usr/bin/env python
"""Data-loading benchmark: one worker producing CropFormer training samples (full + 1 crop).

Compares, in the same run and on the same draws (flip, crop, short side), our pipeline
(reduced-scale JPEG decode, one run-length label source, label maps sampled at view size,
binary masks expanded at view size) with a re-creation of the official loader's steps
(full-size decode, flip, per-entity full-resolution RLE decode for every view, crop, PIL resize
per mask). Masks of both are compared per entity and view (IoU).

  python scripts/bench_data.py [--size 4000x3000] [--entities 40] [--short-side 800] [--iters 10]

Reusable: ``run(...) -> dict`` returns the figures (samples/s of both, speed-up, min IoU,
peak traced memory per sample: with the boolean mask expansion, and of the worker's sample
alone). Traced = numpy/Python allocations (tracemalloc); Pillow's own buffers are not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cropformer.data.dataset import EntityDataset
from cropformer.data.decode import encode_mask
from cropformer.data.formats.entityseg import read_entityseg
from cropformer.data.records import Record
from cropformer.data.view_sampler import SampleDraw, ViewSampler


def make_fixture(
    folder: Path, width: int = 4000, height: int = 3000, entities: int = 40, seed: int = 0
) -> Path:
    """Write a JPEG partitioned into ``entities`` wavy grid cells + its EntitySeg json."""
    rng = np.random.default_rng(seed)
    n_cols = int(round(math.sqrt(entities * width / height)))
    n_cols = max(1, min(n_cols, entities))
    while entities % n_cols:
        n_cols -= 1
    n_rows = entities // n_cols
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    row = np.zeros((height, width), np.int32)
    for i in range(1, n_rows):
        curve = i * height / n_rows + 0.2 * height / n_rows * np.sin(xs / width * 7 + i)
        row += ys >= curve
    col = np.zeros((height, width), np.int32)
    for j in range(1, n_cols):
        curve = j * width / n_cols + 0.2 * width / n_cols * np.sin(ys / height * 5 + j)
        col += xs >= curve
    label = row * n_cols + col
    colours = rng.integers(0, 256, size=(entities, 3), dtype=np.uint8)
    img = colours[label]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(folder / "bench.jpg", quality=90)
    anns = []
    for k in range(entities):
        m = label == k
        anns.append(
            {
                "id": k + 1,
                "image_id": 1,
                "segmentation": encode_mask(m),
                "area": int(m.sum()),
                "iscrowd": 0,
                "category_id": 1,
            }
        )
    data = {
        "images": [{"id": 1, "file_name": "bench.jpg", "height": height, "width": width}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "entity"}],
    }
    path = folder / "bench.json"
    path.write_text(json.dumps(data))
    return path


def official_sample(record: Record, draw: SampleDraw) -> dict[str, Any]:
    """The official mapper's steps for one training sample (re-created; see module doc)."""
    from pycocotools import mask as mask_util

    with Image.open(record.image_path) as im:
        image = np.asarray(im.convert("RGB"))
    if draw.flip:
        image = image[:, ::-1]
    anns = [e for e in record.entities if not e.iscrowd]
    views, masks = [], []
    for v in draw.views:
        x0, y0, x1, y1 = v.box
        h, w = v.size
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        views.append(np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.BILINEAR)))
        per_view = []
        for e in anns:  # decoded again for every view, as the official mapper does
            m = mask_util.decode(e.segmentation)
            if draw.flip:
                m = m[:, ::-1]
            m = np.ascontiguousarray(m[y0:y1, x0:x1])
            r = Image.fromarray(m).resize((w, h), Image.Resampling.NEAREST)
            per_view.append(np.asarray(r).astype(bool))
        masks.append(np.stack(per_view) if per_view else np.zeros((0, h, w), bool))
    return {"views": views, "masks": masks}


def ours_sample(ds: EntityDataset, draw: SampleDraw) -> dict[str, Any]:
    """Our pipeline for the same draw, masks expanded to (K, h, w) bool like collate does."""
    s = ds.load(0, draw)
    K = s["num_entities"]
    ids = np.arange(K).reshape(K, 1, 1)
    masks = [(lm.numpy()[None] == ids) for lm in s["label_maps"]]
    return {"views": s["views"], "masks": masks}


def _draws(record: Record, short_side: int, n: int, seed: int) -> list[SampleDraw]:
    sampler = ViewSampler(train=True, short_sides=(short_side,), max_size=1333, num_crops=1)
    rng = np.random.default_rng(seed)
    return [sampler.draw(record.height, record.width, rng) for _ in range(n)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _time(fn: Any, draws: list[SampleDraw]) -> tuple[float, int]:
    tracemalloc.start()
    t = time.perf_counter()
    for d in draws:
        fn(d)
    dt = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dt, peak


def run(
    *,
    width: int = 4000,
    height: int = 3000,
    entities: int = 40,
    short_side: int = 800,
    iters: int = 10,
    seed: int = 0,
    workdir: str | None = None,
    official: bool = True,
) -> dict[str, Any]:
    """Measure both pipelines on one generated image; returns the figures as a dict."""
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    folder = Path(workdir if workdir is not None else tmp.name)  # type: ignore[union-attr]
    ann = make_fixture(folder, width, height, entities, seed)
    (record,) = read_entityseg(ann, folder)
    ds = EntityDataset([record], ViewSampler(train=True, short_sides=(short_side,), num_crops=1))
    draws = _draws(record, short_side, iters, seed)
    # Same masks: compare every entity in every view on the first draws.
    min_iou = 1.0
    for d in draws[: min(3, len(draws))]:
        a = ours_sample(ds, d)["masks"] if official else []
        b = official_sample(record, d)["masks"] if official else []
        for ma, mb in zip(a, b):
            for k in range(ma.shape[0]):
                if ma[k].any() or mb[k].any():
                    min_iou = min(min_iou, _iou(ma[k], mb[k]))
    ours_s, ours_peak = _time(lambda d: ours_sample(ds, d), draws)
    # Peak of the sample itself (what a worker holds and ships: views + label maps), without
    # the K x h x w boolean expansion that collate does in the main process.
    _, load_peak = _time(lambda d: ds.load(0, d), draws[:2])
    # Share of the reduced-scale JPEG decode: the same pipeline decoding at full size.
    ds_full = EntityDataset(
        [record], ViewSampler(train=True, short_sides=(short_side,), num_crops=1), jpeg_draft=False
    )
    nodraft_s, _ = _time(lambda d: ours_sample(ds_full, d), draws)
    out: dict[str, Any] = {
        "image": f"{width}x{height}",
        "entities": entities,
        "short_side": short_side,
        "iters": iters,
        "ours_samples_per_s": iters / ours_s,
        "ours_peak_traced_mb": ours_peak / 2**20,
        "ours_sample_peak_traced_mb": load_peak / 2**20,
        "ours_full_decode_samples_per_s": iters / nodraft_s,
    }
    if official:
        off_s, off_peak = _time(lambda d: official_sample(record, d), draws)
        out.update(
            {
                "official_samples_per_s": iters / off_s,
                "official_peak_traced_mb": off_peak / 2**20,
                "speedup": off_s / ours_s,
                "min_iou": min_iou,
            }
        )
    if tmp is not None:
        tmp.cleanup()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", default="4000x3000", help="WxH of the generated JPEG")
    p.add_argument("--entities", type=int, default=40)
    p.add_argument("--short-side", type=int, default=800)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-official", action="store_true", help="only time our pipeline")
    p.add_argument("--json", action="store_true", help="print the figures as json")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    res = run(
        width=w,
        height=h,
        entities=args.entities,
        short_side=args.short_side,
        iters=args.iters,
        seed=args.seed,
        official=not args.no_official,
    )
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for k, v in res.items():
            print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
        if "speedup" in res:
            print(f"ratio (ours / official samples/s): {res['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
