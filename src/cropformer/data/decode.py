"""Decoding: image files at the needed scale, entity masks into one integer label map.

Entities never overlap in EntitySeg, so the ground truth of an image is one integer label map
(-1 = no entity, k = entity k). It is never materialised at full resolution on the fast path:
every entity's RLE is turned into runs along the column-major pixel order, the runs of all entities
are merged into one sorted boundary list, and a view's label map is read by looking up only the
source pixels that nearest-neighbour resizing picks. Cost and memory scale with the view size and
the number of runs, not with the original resolution (an 8000x6000 image with 200 entities costs
the same as a 800x600 one with the same outlines).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cropformer.data.errors import SampleError
from cropformer.data.formats.id_maps import read_id_map

# A 20000x15000 photo (3e8 pixels) is a legitimate input here; Pillow's default bomb guard
# (8.9e7 warning, 1.8e8 error) would refuse it. 1e9 pixels still stops absurd headers.
MAX_IMAGE_PIXELS = 1_000_000_000

_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


@contextlib.contextmanager
def _pixel_limit(limit: int) -> Iterator[None]:
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max(limit, old or 0)
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (16-bit and float data are rescaled, not clipped)."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        arr = np.asarray(im)
        if im.mode.startswith("I;16") or (im.mode == "I" and arr.max(initial=0) > 255):
            arr8 = np.clip(np.round(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
        else:
            arr8 = np.clip(np.round(arr.astype(np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(arr8[..., None], 3, axis=2), "RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    # RGBA/LA: alpha dropped (detectron2 read_image does the same); CMYK/YCbCr/L/1 converted.
    return im.convert("RGB")


def _open(path: str | os.PathLike[str]) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"image file not found: {p} (check data.image_root and the file_name in the json)"
        )
    if p.stat().st_size == 0:
        raise SampleError(f"image file is empty (0 bytes): {p}; re-download or remove it")
    try:
        with _pixel_limit(MAX_IMAGE_PIXELS):
            return Image.open(p)
    except Image.DecompressionBombError as e:
        raise SampleError(
            f"image {p} is larger than {MAX_IMAGE_PIXELS} pixels "
            "(cropformer.data.decode.MAX_IMAGE_PIXELS): {e}"
        ) from e
    except (UnidentifiedImageError, OSError) as e:
        raise SampleError(f"cannot identify image file {p}: {e} (corrupt or not an image?)") from e


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(H, W) of an image after EXIF orientation, reading only the header."""
    im = _open(path)
    with im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (w, h) if orientation in _TRANSPOSING_ORIENTATIONS else (h, w)


def open_image(
    path: str | os.PathLike[str],
    *,
    min_size: tuple[int, int] | None = None,
    expected_size: tuple[int, int] | None = None,
    draft: bool = True,
) -> tuple[Image.Image, tuple[int, int]]:
    """Open an image as 8-bit RGB, EXIF orientation applied, decoded at a reduced scale if allowed.

    Args:
        path: image file.
        min_size: (h, w) the decoded image must at least have (oriented). With ``draft`` a JPEG
            is decoded at the smallest of 1, 1/2, 1/4, 1/8 scale that still covers it.
        expected_size: (H, W) the annotation file states; a different file size is an error.
        draft: allow reduced-scale JPEG decoding (``Image.draft``).

    Returns:
        The RGB image (possibly smaller than the file) and the full oriented (H, W).
    """
    im = _open(path)
    try:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
        transposed = orientation in _TRANSPOSING_ORIENTATIONS
        full = (w, h) if transposed else (h, w)
        if expected_size is not None and tuple(expected_size) != full:
            hint = ""
            if tuple(expected_size) == (full[1], full[0]):
                hint = " (swapped: the annotation was probably made without EXIF orientation)"
            raise SampleError(
                f"image {path} is {full[1]}x{full[0]} (WxH, EXIF orientation applied) but the "
                f"annotation file says {expected_size[1]}x{expected_size[0]}{hint}"
            )
        if draft and min_size is not None and im.format == "JPEG":
            req_h, req_w = int(min_size[0]), int(min_size[1])
            if transposed:
                req_h, req_w = req_w, req_h
            if req_w < w or req_h < h:
                im.draft(None, (max(req_w, 1), max(req_h, 1)))
        with _pixel_limit(MAX_IMAGE_PIXELS):
            im.load()
        out = ImageOps.exif_transpose(im) if orientation != 1 else im
        out = _to_rgb(out)
    except SampleError:
        im.close()
        raise
    except (OSError, ValueError, SyntaxError) as e:
        im.close()
        raise SampleError(f"cannot decode image {path}: {e} (truncated or corrupt file?)") from e
    return out, full


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read any image file as an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit files are converted. Errors name the
    file: FileNotFoundError (missing) or SampleError, a ValueError (empty, corrupt, truncated).
    """
    im, _ = open_image(path, draft=False)
    return np.asarray(im, dtype=np.uint8).copy()


# EXIF orientation -> the transpose detectron2's ``read_image`` applies (the same table as
# ``ImageOps.exif_transpose``; other values, e.g. 1 or 0, leave the image as stored)
_DETECTRON2_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def load_image_detectron2(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as detectron2's ``read_image(path, format="BGR")`` does, returned as RGB.

    The official demo reads frames this way: EXIF orientation applied (an unreadable EXIF block is
    ignored), then Pillow's ``convert("RGB")`` for every mode. For 8-bit files this equals
    ``load_image``; they differ on 16-bit and float files, which Pillow's conversion clips to
    0..255 where ``load_image`` rescales. Errors as ``load_image``.

    Shape: returns (H, W, 3) uint8.
    """
    im = _open(path)
    try:
        with _pixel_limit(MAX_IMAGE_PIXELS):
            im.load()
        try:
            orientation = im.getexif().get(0x0112)
        except Exception:  # detectron2 ignores a broken EXIF block the same way
            orientation = None
        method = _DETECTRON2_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
        out = im.transpose(method) if method is not None else im
        arr = np.asarray(out.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as e:
        raise SampleError(f"cannot decode image {path}: {e} (truncated or corrupt file?)") from e
    finally:
        im.close()
    return arr


# ---------------------------------------------------------------------------------------------
# RLE


def decode_rle_string(counts: str | bytes) -> np.ndarray:
    """Decode a COCO compressed RLE string into run lengths (vectorised LEB128-like decoding).

    Raises:
        ValueError: the string contains characters outside the RLE alphabet or ends mid-value.
    """
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError("RLE counts string has characters outside '0'..'o'")
    more = (c & 0x20) != 0
    if more[-1]:
        raise ValueError("RLE counts string ends in the middle of a value")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 12:
        raise ValueError("RLE counts string holds a value longer than 60 bits")
    k = np.arange(c.size) - np.repeat(starts, lengths)
    vals = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    neg = (c[ends] & 0x10) != 0
    vals[neg] -= np.left_shift(1, 5 * lengths[neg])
    out = vals.copy()
    # Values from the 4th on are stored as differences to the value two places before.
    if out.size > 3:
        out[1::2] = np.cumsum(vals[1::2])
        out[2::2] = np.cumsum(vals[2::2])
    return out


def segmentation_counts(
    segmentation: Any, height: int, width: int, *, where: str = "annotation"
) -> np.ndarray:
    """Run lengths (column-major, starting with background) of one COCO ``segmentation``.

    Accepts compressed RLE, uncompressed RLE (``counts`` a list) and polygon lists.

    Raises:
        ValueError: size mismatch, invalid RLE, or an unsupported structure; names ``where``.
    """
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if size is None or "counts" not in segmentation:
            raise ValueError(f"{where}: RLE segmentation needs 'size' and 'counts'")
        if [int(size[0]), int(size[1])] != [height, width]:
            raise ValueError(
                f"{where}: RLE size {list(size)} differs from the image size [{height}, {width}]"
            )
        raw = segmentation["counts"]
        try:
            if isinstance(raw, (str, bytes)):
                counts = decode_rle_string(raw)
            else:
                counts = np.asarray(raw, dtype=np.int64)
        except ValueError as e:
            raise ValueError(f"{where}: invalid RLE: {e}") from e
        if counts.size and counts.min() < 0:
            raise ValueError(f"{where}: invalid RLE: negative run length")
        total = int(counts.sum())
        if total != height * width:
            raise ValueError(
                f"{where}: invalid RLE: runs cover {total} pixels, image has {height * width}"
            )
        return counts
    if isinstance(segmentation, (list, tuple)):
        from pycocotools import mask as mask_util

        polys = [list(map(float, p)) for p in segmentation if len(p) >= 6]
        if not polys:
            return np.array([height * width], dtype=np.int64)
        rle = mask_util.merge(mask_util.frPyObjects(polys, height, width))
        return decode_rle_string(rle["counts"])
    raise ValueError(
        f"{where}: unsupported segmentation of type {type(segmentation).__name__} "
        "(expected an RLE dict or a list of polygons)"
    )


def label_map_counts(label: np.ndarray) -> list[np.ndarray]:
    """COCO run lengths (column-major, background first) of every id 0..max of a label map.

    Shape: label (H, W) non-negative ints; returns max+1 arrays (entity k = ``label == k``).

    One pass over the map for all entities instead of one full-size mask per entity.
    """
    H, W = label.shape
    flat = np.ascontiguousarray(label.T).ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [flat.size]))
    values = flat[starts]
    out = []
    for k in range(int(label.max()) + 1):
        sel = values == k
        s, e = starts[sel], ends[sel]
        if s.size == 0:
            out.append(np.array([H * W], dtype=np.int64))
            continue
        counts = np.empty(2 * s.size + 1, dtype=np.int64)
        counts[0] = s[0]
        counts[1:-1:2] = e - s
        counts[2:-1:2] = s[1:] - e[:-1]
        counts[-1] = flat.size - e[-1]
        out.append(counts)
    return out


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a boolean (H, W) mask, ``counts`` as str (json-ready)."""
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return dict(rle)


# ---------------------------------------------------------------------------------------------
# Label sources


class LabelSource:
    """Entity label map of one image (-1 = none), readable at chosen source pixels.

    Shape:
        sample(rows (h,), cols (w,)) -> (h, w) int32 with values in [-1, K).
    """

    height: int
    width: int
    num_entities: int
    overlap: bool = False

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def full(self) -> np.ndarray:
        """The whole (H, W) label map (materialised; for converters and checks)."""
        return self.sample(np.arange(self.height), np.arange(self.width))


class RunLabelSource(LabelSource):
    """Label map held as merged runs in column-major order (non-overlapping entities)."""

    def __init__(self, bounds: np.ndarray, labels: np.ndarray, height: int, width: int, k: int):
        self.bounds = bounds
        self.labels = labels
        self.height, self.width, self.num_entities = height, width, k

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self.bounds.size == 0:
            return np.full((rows.size, cols.size), -1, dtype=np.int32)
        if cols.size > 1 and cols[0] > cols[-1]:  # flipped view: search ascending, flip back
            return np.ascontiguousarray(self.sample(rows, cols[::-1])[:, ::-1])
        # Queries laid out column-major are ascending (for ascending columns), which keeps the
        # binary searches cache-friendly: ~3x faster than the row-major layout.
        pos = cols.astype(np.int64)[:, None] * self.height + rows.astype(np.int64)[None, :]
        idx = np.searchsorted(self.bounds, pos, side="right") - 1
        out = np.where(idx >= 0, self.labels[np.maximum(idx, 0)], -1).astype(np.int32)
        return np.ascontiguousarray(out.T)


class DenseLabelSource(LabelSource):
    """Label map held as a full-resolution array (label-map sources, overlap fallback)."""

    def __init__(self, label_map: np.ndarray, k: int, overlap: bool = False):
        self.label_map = label_map
        self.height, self.width = label_map.shape
        self.num_entities = k
        self.overlap = overlap

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.label_map[rows[:, None], cols[None, :]].astype(np.int32, copy=False)


def label_source_from_counts(
    counts_list: Sequence[np.ndarray], height: int, width: int
) -> LabelSource:
    """Merge the runs of K entities into one label source; entity k is ``counts_list[k]``.

    Overlapping entities (custom COCO data) fall back to a dense map painted in list order, so
    a later entity wins where two overlap (``overlap`` is then True).
    """
    k = len(counts_list)
    starts_all: list[np.ndarray] = []
    ends_all: list[np.ndarray] = []
    labels_all: list[np.ndarray] = []
    for i, counts in enumerate(counts_list):
        pos = np.cumsum(counts)
        ones = np.arange(1, counts.size, 2)
        ones = ones[counts[ones] > 0]
        if ones.size == 0:
            continue
        ends = pos[ones]
        starts_all.append(ends - counts[ones])
        ends_all.append(ends)
        labels_all.append(np.full(ones.size, i, dtype=np.int32))
    if not starts_all:
        return RunLabelSource(np.zeros(0, np.int64), np.zeros(0, np.int32), height, width, k)
    starts = np.concatenate(starts_all)
    ends = np.concatenate(ends_all)
    labels = np.concatenate(labels_all)
    bounds = np.concatenate([starts, ends])
    is_start = np.concatenate([np.ones(starts.size, bool), np.zeros(ends.size, bool)])
    lab = np.concatenate([labels, np.full(ends.size, -1, np.int32)])
    # Ends sort before starts at the same position, so touching runs hand over cleanly.
    order = np.lexsort((is_start, bounds))
    depth = np.cumsum(np.where(is_start[order], 1, -1))
    if depth.max() > 1:
        return DenseLabelSource(_paint_dense(counts_list, height, width), k, overlap=True)
    return RunLabelSource(bounds[order], lab[order], height, width, k)


def _paint_dense(counts_list: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    dtype = np.int16 if len(counts_list) < 32000 else np.int32
    flat = np.full(height * width, -1, dtype=dtype)
    for i, counts in enumerate(counts_list):
        pos = np.cumsum(counts)
        for j in range(1, counts.size, 2):
            if counts[j]:
                flat[pos[j] - counts[j] : pos[j]] = i
    return flat.reshape(width, height).T


def label_source_for(record: Any, entities: Sequence[Any]) -> LabelSource:
    """Label source of the given entities of a record (entity k = ``entities[k]``).

    Raises:
        ValueError: an annotation cannot be decoded (names the json, image and annotation id).
    """
    h, w = record.height, record.width
    if record.id_map_path is not None:
        ids = read_id_map(
            record.id_map_path,
            record.id_map_encoding,
            expected_size=(h, w),
            semantic_path=record.semantic_path,
        )
        seg_ids = np.array([e.segment_id for e in entities], dtype=np.int64)
        lm = np.full(ids.shape, -1, dtype=np.int16 if len(entities) < 32000 else np.int32)
        if seg_ids.size:
            order = np.argsort(seg_ids)
            pos = np.searchsorted(seg_ids[order], ids)
            pos = np.minimum(pos, seg_ids.size - 1)
            hit = seg_ids[order][pos] == ids
            lm[hit] = order[pos[hit]]
        return DenseLabelSource(lm, len(entities))
    counts_list = []
    for e in entities:
        where = f"{record.source or 'annotations'}: image {record.file_name}, annotation {e.ann_id}"
        counts_list.append(segmentation_counts(e.segmentation, h, w, where=where))
    return label_source_from_counts(counts_list, h, w)
