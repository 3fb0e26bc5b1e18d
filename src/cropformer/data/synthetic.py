"""Deterministic synthetic entity-segmentation scenes, written as JPEG + EntitySeg-format json.

Each scene partitions the whole image into non-overlapping entities, like EntitySeg, and is
built so that the resolution of a view matters (the embedded benchmark of CropFormer vs
Mask2Former):

- "stuff": 2-4 bands with wavy, finely rippled borders covering the image (sky, wall, ground...);
- objects of log-uniform size (many small, few large): blobs whose outlines carry high
  harmonics, rings, thin bent bars (a few pixels wide at full resolution) and small discs;
- every entity has its own texture (stripes, checker, blotches, speckle) with a period drawn
  log-uniformly from a few pixels to tens of pixels, and some entities are camouflaged: coloured
  like the entity they lie on, told apart only by texture. Detail below a view's resolution is
  averaged away, so a high-resolution crop sees boundaries the small full view cannot.

Writing a dataset to disk (JPEG + EntitySeg json, cached and atomic) is in
``synthetic_store.py``.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

# 2: log-uniform object sizes, outlines with fine detail, per-entity texture periods, camouflage.
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class SyntheticSpec:
    """Generator parameters (all of them enter the cache hash).

    The defaults are the embedded benchmark: scenes in which the resolution of a view matters
    (see ``render_scene``). Sizes and periods are in pixels of the image on disk.

    Args:
        num_train, num_val, num_test: images per split. Each image is seeded by (seed, split,
            index), so the splits are disjoint draws and growing one split changes no other.
            ``test`` is the held-out split: no design choice of the benchmark was made on it.
        image_size: (width, height) of the images on disk.
        num_stuff: inclusive range of stuff bands per image.
        num_objects: inclusive range of objects per image (fine structures included); objects
            that find no free place are dropped.
        object_size: range of object diameters as a fraction of the short side, drawn
            log-uniformly (many small objects, few large ones).
        fine_fraction: fraction of objects that are fine structures (thin bent bars, small discs).
        boundary_detail: amplitude of the high harmonics of blob outlines (0 = smooth outlines).
        texture_contrast: amplitude of the textures relative to the colour differences (0 = flat
            colours, 1 = textures as strong as the colour contrast).
        texture_period: range of texture periods in pixels, drawn log-uniformly per entity.
        colour_separation: minimum RGB distance between the base colours of entities of one image.
        camouflage_fraction: share of entities whose base colour is close to that of the entity
            they lie on or border: only their texture (and the outline) tells them apart.
        jpeg_quality: JPEG quality of the written images.
        seed: base seed.
    """

    num_train: int = 200
    num_val: int = 50
    num_test: int = 100
    image_size: tuple[int, int] = (2048, 1536)
    num_stuff: tuple[int, int] = (2, 4)
    num_objects: tuple[int, int] = (10, 22)
    object_size: tuple[float, float] = (0.015, 0.3)
    fine_fraction: float = 0.25
    boundary_detail: float = 0.5
    texture_contrast: float = 0.35
    texture_period: tuple[float, float] = (3.0, 48.0)
    colour_separation: float = 60.0
    camouflage_fraction: float = 0.3
    jpeg_quality: int = 90
    seed: int = 0

    def key(self) -> str:
        """Short hash of the parameters and the generator version (the cache folder name)."""
        d = asdict(self)
        d["version"] = GENERATOR_VERSION
        blob = json.dumps(d, sort_keys=True, default=list).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


@dataclass
class _Entity:
    """Appearance of one entity: base colour, texture kind/period/angle/amplitude."""

    colour: np.ndarray
    texture: int  # 0 stripes, 1 checker, 2 blotches, 3 speckle
    period: float
    angle: float
    amplitude: float


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


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo)))))


def _boxes_overlap(a: tuple[float, ...], b: tuple[float, ...], margin: float) -> bool:
    return not (
        a[2] + margin <= b[0]
        or b[2] + margin <= a[0]
        or a[3] + margin <= b[1]
        or b[3] + margin <= a[1]
    )


def _draw_stuff(rng: np.random.Generator, spec: SyntheticSpec, W: int, H: int) -> Image.Image:
    """Label canvas ("L") of 2-4 stuff bands below wavy curves (ids 0..n-1, top to bottom)."""
    n_stuff = int(rng.integers(spec.num_stuff[0], spec.num_stuff[1] + 1))
    cuts = np.sort(rng.uniform(0.15, 0.85, n_stuff - 1)) * H
    canvas = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(canvas)
    xs = np.linspace(0, W, 129)
    for i, c in enumerate(cuts):
        amp = rng.uniform(0.0, 0.06) * H
        freq = rng.uniform(0.5, 3.0)
        phase = rng.uniform(0, 2 * math.pi)
        ys = c + amp * np.sin(2 * math.pi * freq * xs / W + phase)
        # fine ripple on the border: visible at full resolution, lost at a small view size
        ys += spec.boundary_detail * 0.004 * H * np.sin(2 * math.pi * 24 * xs / W + 3 * phase)
        draw.polygon([*zip(xs.tolist(), ys.tolist()), (W, H + 1), (0, H + 1)], fill=i + 1)
    return canvas


def _blob_outline(
    rng: np.random.Generator, cx: float, cy: float, radius: float, detail: float
) -> list[tuple[float, float]]:
    """A closed outline r(theta) with a few low harmonics (shape) and many high ones (detail)."""
    theta = np.linspace(0, 2 * math.pi, 256, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 5):
        r += rng.uniform(0, 0.25) * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
    for k in rng.choice(np.arange(5, 41), size=6, replace=False):
        amp = detail * rng.uniform(0, 0.15) / math.sqrt(float(k))
        r += amp * np.sin(float(k) * theta + rng.uniform(0, 2 * math.pi))
    r = np.clip(r, 0.2, None)
    aspect, rot = rng.uniform(0.5, 1.0), rng.uniform(0, math.pi)
    x, y = radius * r * np.cos(theta), radius * aspect * r * np.sin(theta)
    xr = cx + x * math.cos(rot) - y * math.sin(rot)
    yr = cy + x * math.sin(rot) + y * math.cos(rot)
    return list(zip(xr.tolist(), yr.tolist()))


def _bent_bar(
    rng: np.random.Generator, cx: float, cy: float, length: float
) -> list[tuple[float, float]]:
    """Centre line of a thin bar bent 1-3 times (a branch, a cable, a railing)."""
    n_seg = int(rng.integers(1, 4))
    ang = rng.uniform(0, 2 * math.pi)
    pts = [(cx, cy)]
    for _ in range(n_seg):
        ang += rng.uniform(-0.8, 0.8)
        x, y = pts[-1]
        pts.append((x + math.cos(ang) * length / n_seg, y + math.sin(ang) * length / n_seg))
    return pts


def _place_objects(
    rng: np.random.Generator,
    spec: SyntheticSpec,
    canvas: Image.Image,
    first_id: int,
    kinds: list[str] | None = None,
) -> int:
    """Draw objects onto the label canvas without overlapping boxes; returns the next free id.

    ``kinds`` (if given) receives the kind of each drawn object in id order (``blob``, ``ring``,
    ``bar``, ``dot``); recording it draws no random numbers.

    Objects are drawn largest first so that the many small ones still find a place. A ring is a
    blob with a hole that shows the stuff beneath.
    """
    W, H = canvas.size
    s = min(W, H)
    stuff = canvas.copy()
    draw = ImageDraw.Draw(canvas)
    n_obj = int(rng.integers(spec.num_objects[0], spec.num_objects[1] + 1))
    sizes = sorted(
        (_log_uniform(rng, spec.object_size[0] * s, spec.object_size[1] * s) for _ in range(n_obj)),
        reverse=True,
    )
    placed: list[tuple[float, ...]] = []
    k = first_id
    for diameter in sizes:
        fine = rng.random() < spec.fine_fraction
        kind = str(rng.choice(["bar", "dot"])) if fine else str(rng.choice(["blob"] * 3 + ["ring"]))
        for _attempt in range(30):
            cx, cy = rng.uniform(0, W), rng.uniform(0, H)
            if kind == "bar":
                width = max(rng.uniform(0.0015, 0.006) * s, 2.0)
                line = _bent_bar(rng, cx, cy, max(diameter, 0.08 * s))
                pts = line
                pad = width / 2 + 1
            elif kind == "dot":
                r = max(min(diameter, 0.03 * s) / 2, 2.0)
                pts = [(cx - r, cy - r), (cx + r, cy + r)]
                pad = 0.0
            else:
                pts = _blob_outline(rng, cx, cy, diameter / 2, spec.boundary_detail)
                pad = 0.0
            px, py = [p[0] for p in pts], [p[1] for p in pts]
            box = (min(px) - pad, min(py) - pad, max(px) + pad, max(py) + pad)
            if box[0] < 1 or box[1] < 1 or box[2] >= W - 1 or box[3] >= H - 1:
                continue
            if any(_boxes_overlap(box, b, 0.005 * s) for b in placed):
                continue
            if k >= 254:
                return k
            placed.append(box)
            if kinds is not None:
                kinds.append(kind)
            if kind == "bar":
                draw.line(pts, fill=k, width=int(round(width)), joint="curve")
            elif kind == "dot":
                draw.ellipse(box, fill=k)
            else:
                draw.polygon(pts, fill=k)
                if kind == "ring":
                    t = rng.uniform(0.35, 0.6)
                    inner = [(cx + (x - cx) * t, cy + (y - cy) * t) for x, y in pts]
                    hole = Image.new("1", (W, H), 0)
                    ImageDraw.Draw(hole).polygon(inner, fill=1)
                    canvas.paste(stuff, mask=hole)
            k += 1
            break
    return k


def _compact_ids(label: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Renumber the ids that survived drawing (a band fully overwritten, an object rasterised to
    nothing) to 0..K-1 in order."""
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=k))
    if present.size == k:
        return label, k
    remap = np.zeros(256, dtype=np.uint8)
    remap[present] = np.arange(present.size)
    return remap[label], int(present.size)


def _neighbour_of(label: np.ndarray, slices: list[Any], i: int) -> int:
    """Id of an entity touching entity ``i`` (the one its outline borders most), or -1."""
    sl = slices[i]
    if sl is None:
        return -1
    y0, y1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, label.shape[0])
    x0, x1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, label.shape[1])
    win = label[y0:y1, x0:x1]
    inside = win == i
    ring = np.zeros_like(inside)
    ring[1:] |= inside[:-1]
    ring[:-1] |= inside[1:]
    ring[:, 1:] |= inside[:, :-1]
    ring[:, :-1] |= inside[:, 1:]
    ring &= ~inside
    ids = win[ring]
    if ids.size == 0:
        return -1
    return int(np.bincount(ids).argmax())


def _appearances(
    rng: np.random.Generator, spec: SyntheticSpec, label: np.ndarray, slices: list[Any]
) -> list[_Entity]:
    """Base colour and texture per entity. A camouflaged entity takes the colour of a neighbour
    (plus a small shift) and a texture of another kind and period: the difference lives in
    detail that a small view averages away."""
    used: list[np.ndarray] = []
    out: list[_Entity] = []
    lo, hi = spec.texture_period
    for i in range(len(slices)):
        amp = spec.texture_contrast * spec.colour_separation * rng.uniform(0.3, 1.0)
        ent = _Entity(
            colour=np.zeros(3),
            texture=int(rng.integers(0, 4)),
            period=_log_uniform(rng, lo, hi),
            angle=rng.uniform(0, math.pi),
            amplitude=float(amp),
        )
        nb = _neighbour_of(label, slices, i) if i > 0 else -1
        if 0 <= nb < i and rng.random() < spec.camouflage_fraction:
            ent.colour = np.clip(out[nb].colour + rng.normal(0, 6, size=3), 0, 255)
            ent.texture = (out[nb].texture + int(rng.integers(1, 4))) % 4
            ent.amplitude = max(ent.amplitude, 0.6 * spec.texture_contrast * spec.colour_separation)
        else:
            ent.colour = _distinct_colour(rng, used, spec.colour_separation)
        used.append(ent.colour)
        out.append(ent)
    return out


def _texture(rng: np.random.Generator, ent: _Entity, ys: slice, xs: slice) -> np.ndarray:
    """Zero-mean texture in [-1, 1] over a window, in absolute image coordinates."""
    yy = np.arange(ys.start, ys.stop, dtype=np.float32)[:, None]
    xx = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :]
    u = xx * math.cos(ent.angle) + yy * math.sin(ent.angle)
    v = yy * math.cos(ent.angle) - xx * math.sin(ent.angle)
    p = ent.period
    if ent.texture == 0:  # stripes
        return np.sin(u * (2 * math.pi / p)).astype(np.float32)
    if ent.texture == 1:  # checker of cell p / 2
        c = max(p / 2, 1.0)
        return ((np.floor(u / c) + np.floor(v / c)) % 2 * 2.0 - 1.0).astype(np.float32)
    h, w = ys.stop - ys.start, xs.stop - xs.start
    cell = max(p / 2, 1.0) if ent.texture == 3 else max(4 * p, 4.0)
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    noise = rng.standard_normal((gh, gw)).astype(np.float32)
    resample = Image.Resampling.NEAREST if ent.texture == 3 else Image.Resampling.BICUBIC
    up = np.asarray(Image.fromarray(noise, "F").resize((int(gw * cell), int(gh * cell)), resample))
    return np.clip(up[:h, :w] / 1.5, -1, 1)


def _paint(
    rng: np.random.Generator,
    spec: SyntheticSpec,
    label: np.ndarray,
    slices: list[Any],
    ents: list[_Entity],
) -> np.ndarray:
    """Image (H, W, 3) uint8: base colours + per-entity textures + soft illumination."""
    H, W = label.shape
    colours = np.stack([e.colour for e in ents]).astype(np.float32)
    img = colours[label]
    if spec.texture_contrast > 0:
        term = np.zeros((H, W), dtype=np.float32)
        for i, sl in enumerate(slices):
            if sl is None:
                continue
            tex = _texture(rng, ents[i], sl[0], sl[1])
            tex *= ents[i].amplitude
            np.copyto(term[sl], tex, where=label[sl] == i)
        img += term[..., None]
    rows = np.arange(H, dtype=np.float32)[:, None]
    img *= (1.0 + 0.15 * (rows / H - 0.5))[..., None]
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


#: The class-aware view of the embedded benchmark: what the generator draws. Stuff bands are
#: stuff; blobs, rings, thin bent bars and small discs are things. Ids are the ``category_id`` of
#: the ``<split>_classes.json`` files (``synthetic_store``).
SYNTHETIC_CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "band", "isthing": 0},
    {"id": 2, "name": "blob", "isthing": 1},
    {"id": 3, "name": "ring", "isthing": 1},
    {"id": 4, "name": "bar", "isthing": 1},
    {"id": 5, "name": "disc", "isthing": 1},
)
_KIND_CATEGORY = {"band": 1, "blob": 2, "ring": 3, "bar": 4, "dot": 5}


def _layout(rng: np.random.Generator, spec: SyntheticSpec) -> tuple[np.ndarray, int, list[str]]:
    """The label map of a scene (ids 0..K-1), K, and the kind of every entity id."""
    W, H = int(spec.image_size[0]), int(spec.image_size[1])
    canvas = _draw_stuff(rng, spec, W, H)
    n_stuff = int(np.asarray(canvas).max()) + 1
    kinds = ["band"] * n_stuff
    k = _place_objects(rng, spec, canvas, first_id=n_stuff, kinds=kinds)
    raw = np.asarray(canvas, dtype=np.uint8).copy()
    present = np.bincount(raw.ravel(), minlength=k)[:k] > 0
    label, k = _compact_ids(raw, k)
    return label, k, [kind for kind, p in zip(kinds, present) if p]


def scene_layout_categories(
    spec: SyntheticSpec, seed_seq: list[int]
) -> tuple[list[int], list[int]]:
    """The ``category_id`` (``SYNTHETIC_CATEGORIES``) and pixel area of every entity of a scene.

    Re-runs only the layout part of :func:`render_scene` with the same random stream (the
    painting draws come after it), so no pixel is painted and the entities are the same.
    """
    label, k, kinds = _layout(np.random.default_rng(seed_seq), spec)
    areas = np.bincount(label.ravel(), minlength=k)[:k]
    return [_KIND_CATEGORY[kind] for kind in kinds], [int(a) for a in areas]


def render_scene(spec: SyntheticSpec, seed_seq: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (H, W, 3) uint8 image and (H, W) uint8 entity label map (0..K-1, no holes).

    The scene partitions the image into entities, like EntitySeg: stuff bands with rippled
    borders, then objects of log-uniform size (outlines with fine harmonics, rings, thin bent
    bars, small discs), each with its own texture period, some camouflaged against a neighbour.
    Much of what separates entities is detail: it survives in a high-resolution crop view and
    is averaged away in a small full view.
    """
    rng = np.random.default_rng(seed_seq)
    label, k, _ = _layout(rng, spec)
    # bounding slices of every entity (None for none): one pass over the label map
    slices = ndimage.find_objects(label.astype(np.int32) + 1, max_label=k)
    img = _paint(rng, spec, label, slices, _appearances(rng, spec, label, slices))
    return img, label
