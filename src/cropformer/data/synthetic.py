"""Deterministic synthetic entity-segmentation scenes, written as JPEG + EntitySeg-format json.

Each scene partitions the whole image into non-overlapping entities, like EntitySeg:

- "stuff": 2-4 bands with wavy borders covering the image (sky, wall, ground...), textured;
- objects: ellipses, rectangles, random polygons and rings, textured, placed without overlap;
- fine structures: thin bars (a few pixels wide at full resolution) and small discs, whose masks
  are only right at high resolution (what crops are for).

The files go through the same reader as real data (``formats.entityseg``). Generation is seeded
per image (seed, split, index), so the same parameters give byte-identical files; the output is
cached under ``<root>/<hash of the parameters>/`` and built atomically (temporary directory +
rename, under a file lock) so concurrent processes never see a half-written dataset.
"""

from __future__ import annotations

import colorsys
import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    """Generator parameters (all of them enter the cache hash).

    Args:
        num_train, num_val: images per split.
        image_size: (width, height) of the images on disk.
        num_stuff: inclusive range of stuff bands per image.
        num_objects: inclusive range of objects per image (fine structures included).
        fine_fraction: fraction of objects that are fine structures (thin bars, small discs).
        texture_contrast: amplitude of the textures relative to the colour differences (0 = flat
            colours, 1 = textures as strong as the colour contrast).
        colour_separation: minimum RGB distance between the base colours of entities of one image.
        jpeg_quality: JPEG quality of the written images.
        seed: base seed.
    """

    num_train: int = 200
    num_val: int = 50
    image_size: tuple[int, int] = (2048, 1536)
    num_stuff: tuple[int, int] = (2, 4)
    num_objects: tuple[int, int] = (3, 9)
    fine_fraction: float = 0.25
    texture_contrast: float = 0.35
    colour_separation: float = 60.0
    jpeg_quality: int = 90
    seed: int = 0

    def key(self) -> str:
        """Short hash of the parameters and the generator version (the cache folder name)."""
        d = asdict(self)
        d["version"] = GENERATOR_VERSION
        blob = json.dumps(d, sort_keys=True, default=list).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


def _distinct_colour(rng: np.random.Generator, used: list[np.ndarray], sep: float) -> np.ndarray:
    best, best_d = None, -1.0
    for _ in range(30):
        h, s, v = rng.random(), 0.25 + 0.7 * rng.random(), 0.2 + 0.75 * rng.random()
        c = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0
        d = min((float(np.linalg.norm(c - u)) for u in used), default=1e9)
        if d >= sep:
            return c
        if d > best_d:
            best, best_d = c, d
    assert best is not None
    return best


def _texture_fields(rng: np.random.Generator, h: int, w: int) -> list[np.ndarray]:
    """Four zero-mean texture fields in [-1, 1]: stripes, checker, blotches, grain. (4, h, w)."""
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    s = min(h, w)
    ang = rng.uniform(0, math.pi)
    period = rng.uniform(0.015, 0.05) * s
    stripes = np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * (2 * math.pi / period))
    cell = max(int(rng.uniform(0.01, 0.04) * s), 2)
    checker = (((yy.astype(np.int32) // cell) + (xx.astype(np.int32) // cell)) % 2) * 2.0 - 1.0
    small = rng.standard_normal((max(h // 64, 2), max(w // 64, 2))).astype(np.float32)
    blot = np.asarray(Image.fromarray(small, "F").resize((w, h), Image.Resampling.BICUBIC))
    blot = np.clip(blot / 1.5, -1, 1)
    # Grain from one random tile repeated: as good to the eye, 20x cheaper than full-size noise.
    tile = np.clip(rng.standard_normal((128, 128), dtype=np.float32) / 2.0, -1, 1)
    grain = np.tile(tile, (h // 128 + 1, w // 128 + 1))[:h, :w]
    return [stripes.astype(np.float32), checker.astype(np.float32), blot, grain]


def _boxes_overlap(a: tuple[float, ...], b: tuple[float, ...], margin: float) -> bool:
    return not (
        a[2] + margin <= b[0]
        or b[2] + margin <= a[0]
        or a[3] + margin <= b[1]
        or b[3] + margin <= a[1]
    )


def render_scene(spec: SyntheticSpec, seed_seq: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (H, W, 3) uint8 image and (H, W) uint8 entity label map (0..K-1, no holes)."""
    rng = np.random.default_rng(seed_seq)
    W, H = int(spec.image_size[0]), int(spec.image_size[1])
    s = min(H, W)
    # Stuff: bands below wavy curves, drawn top to bottom (a later band overwrites).
    n_stuff = int(rng.integers(spec.num_stuff[0], spec.num_stuff[1] + 1))
    cuts = np.sort(rng.uniform(0.15, 0.85, n_stuff - 1)) * H
    canvas = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(canvas)
    xs = np.linspace(0, W, 65)
    for i, c in enumerate(cuts):
        amp = rng.uniform(0.0, 0.06) * H
        freq = rng.uniform(0.5, 3.0)
        phase = rng.uniform(0, 2 * math.pi)
        ys = c + amp * np.sin(2 * math.pi * freq * xs / W + phase)
        draw.polygon([*zip(xs.tolist(), ys.tolist()), (W, H + 1), (0, H + 1)], fill=i + 1)
    stuff = canvas.copy()
    k = n_stuff
    # Objects, placed without overlapping boxes (so each one is whole and connected).
    n_obj = int(rng.integers(spec.num_objects[0], spec.num_objects[1] + 1))
    placed: list[tuple[float, ...]] = []
    for _ in range(n_obj):
        fine = rng.random() < spec.fine_fraction
        for _attempt in range(25):
            if fine and rng.random() < 0.5:
                kind = "bar"
                length = rng.uniform(0.15, 0.4) * s
                width = max(rng.uniform(0.003, 0.008) * s, 2.0)
                ang = rng.uniform(0, math.pi)
                cx, cy = rng.uniform(0.1 * W, 0.9 * W), rng.uniform(0.1 * H, 0.9 * H)
                dx, dy = math.cos(ang) * length / 2, math.sin(ang) * length / 2
                nx, ny = -math.sin(ang) * width / 2, math.cos(ang) * width / 2
                pts = [
                    (cx - dx + nx, cy - dy + ny),
                    (cx + dx + nx, cy + dy + ny),
                    (cx + dx - nx, cy + dy - ny),
                    (cx - dx - nx, cy - dy - ny),
                ]
            elif fine:
                kind = "dot"
                r = rng.uniform(0.006, 0.015) * s
                cx, cy = rng.uniform(r + 1, W - r - 1), rng.uniform(r + 1, H - r - 1)
                pts = [(cx - r, cy - r), (cx + r, cy + r)]
            else:
                kind = str(rng.choice(["ellipse", "rect", "poly", "ring"]))
                rw, rh = rng.uniform(0.06, 0.2) * s, rng.uniform(0.06, 0.2) * s
                cx, cy = rng.uniform(rw + 1, W - rw - 1), rng.uniform(rh + 1, H - rh - 1)
                if kind == "poly":
                    n = int(rng.integers(3, 8))
                    angs = np.sort(rng.uniform(0, 2 * math.pi, n))
                    rad = rng.uniform(0.5, 1.0, n)
                    pts = [
                        (cx + rw * r_ * math.cos(a), cy + rh * r_ * math.sin(a))
                        for a, r_ in zip(angs, rad)
                    ]
                else:
                    pts = [(cx - rw, cy - rh), (cx + rw, cy + rh)]
            px = [p[0] for p in pts]
            py = [p[1] for p in pts]
            box = (min(px), min(py), max(px), max(py))
            if box[0] < 0 or box[1] < 0 or box[2] >= W or box[3] >= H:
                continue
            if any(_boxes_overlap(box, b, 0.01 * s) for b in placed):
                continue
            placed.append(box)
            if k >= 254:
                break
            if kind == "bar" or kind == "poly":
                draw.polygon(pts, fill=k)
            elif kind in ("ellipse", "dot"):
                draw.ellipse(box, fill=k)
            elif kind == "rect":
                draw.rectangle(box, fill=k)
            else:  # ring: an ellipse with a hole showing what lies beneath
                draw.ellipse(box, fill=k)
                t = 0.45
                inner = (cx - rw * t, cy - rh * t, cx + rw * t, cy + rh * t)
                hole = Image.new("1", (W, H), 0)
                ImageDraw.Draw(hole).ellipse(inner, fill=1)
                canvas.paste(stuff, mask=hole)
            k += 1
            break
    label = np.asarray(canvas, dtype=np.uint8).copy()
    # Drop ids that vanished (a band fully overwritten, an object rasterised to nothing).
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=k))
    if present.size != k:
        remap = np.zeros(256, dtype=np.uint8)
        remap[present] = np.arange(present.size)
        label = remap[label]
        k = int(present.size)
    # Appearance: base colour + one texture field per entity + soft illumination.
    used: list[np.ndarray] = []
    colours = np.zeros((k, 3), dtype=np.float32)
    for i in range(k):
        colours[i] = _distinct_colour(rng, used, spec.colour_separation)
        used.append(colours[i])
    tex_kind = rng.integers(0, 4, size=k)
    tex_amp = (
        spec.texture_contrast * spec.colour_separation * rng.uniform(0.3, 1.0, size=k)
    ).astype(np.float32)
    fields = _texture_fields(rng, H, W)
    term = np.empty((H, W), dtype=np.float32)
    kind_map = tex_kind[label]
    for f, fld in enumerate(fields):
        np.copyto(term, fld, where=kind_map == f)
    term *= tex_amp[label]
    rows = np.arange(H, dtype=np.float32)[:, None]
    light = (1.0 + 0.15 * (rows / H - 0.5)).astype(np.float32)
    img = colours[label]
    img *= light[..., None]
    img += term[..., None]
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), label


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
