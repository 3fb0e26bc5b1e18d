"""Views of an image: the full view plus crops, each resized like the official crop dataloader.

A view is a box ``(x0, y0, x1, y1)`` in original-image pixels (of the flipped image when the
sample is flipped) and the (h, w) it is resized to. The full view's box is the whole image.
Images are resized with PIL bilinear (official), label maps with PIL-exact nearest-neighbour
index arithmetic (official masks use PIL nearest), so both match the official mapper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from cropformer.data.decode import LabelSource

Box = tuple[int, int, int, int]

CROP_MODES = ("fixed", "fixed8", "random", "none")

# The official training draw (reference doc §3): short side chosen from MIN_SIZE_TRAIN, long
# side capped by MAX_SIZE_TRAIN, one crop per sample. Crop geometry and the test-time views are
# OFFICIAL_TEST_VIEWS below: the one place each official value lives.
TRAIN_SHORT_SIDES = (640, 672, 704, 736, 768, 800)
TRAIN_MAX_SIZE = 1333  # MAX_SIZE_TRAIN (also caps crop views at test: official quirk)
NUM_TRAIN_CROPS = 1


@dataclass(frozen=True)
class InferenceViews:
    """The evaluation views of an image: the full view plus crops, each resized on its own.

    The defaults are the official test-time views (reference doc §3, the official config's
    ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, ``ENTITY.CROP_SAMPLE_NUM_TEST`` /
    ``CROP_AREA_RATIO`` / ``CROP_STRIDE_RATIO``); ``OFFICIAL_TEST_VIEWS`` is this object and
    the one home of those values. ``eval.py`` (validation, through ``ViewSampler``) and
    ``predict.py`` / the API (through ``build_eval_views``) both plan their views with
    :meth:`plan`, so one image gets the same views on both paths.

    Args:
        short_side, max_size: full-view ResizeShortestEdge (official 800 / 1333).
        num_crops: crops per image (official 4); 0 = full view only.
        crop_ratio: crop side / image side (official 0.7; ``CROP_AREA_RATIO`` is per side).
        stride_ratio: start-position stride / image side (official 0.6).
        crop_mode: ``fixed`` (4 corners), ``fixed8`` (3x3 grid minus centre), ``random`` (= fixed
            at evaluation), ``none``.
        crop_max_size: long-side cap of crop views (official: ``MAX_SIZE_TRAIN``, 1333, even at
            test); None = ``max_size``.
        cover_gap: widen ratio-0.5 crops of odd sides to leave no gap (see :func:`crop_size`).
    """

    short_side: int = 800
    max_size: int = 1333
    num_crops: int = 4
    crop_ratio: float = 0.7
    stride_ratio: float = 0.6
    crop_mode: str = "fixed"
    crop_max_size: int | None = TRAIN_MAX_SIZE
    cover_gap: bool = False

    def __post_init__(self) -> None:
        if self.short_side < 1 or self.max_size < 1:
            raise ValueError(
                f"test views need short_side >= 1 and max_size >= 1, got {self.short_side} / "
                f"{self.max_size}"
            )
        if self.num_crops < 0:
            raise ValueError(f"num_crops={self.num_crops} must be >= 0")
        if not 0.0 < self.crop_ratio <= 1.0:
            raise ValueError(f"crop_ratio={self.crop_ratio} must lie in (0, 1]")
        if self.stride_ratio <= 0.0:
            raise ValueError(f"stride_ratio={self.stride_ratio} must be > 0")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"unknown crop mode {self.crop_mode!r}; expected one of {CROP_MODES}")

    @property
    def num_views(self) -> int:
        """T = 1 + crops (1 when the crop mode is ``none``)."""
        return 1 + (0 if self.crop_mode == "none" else self.num_crops)

    def candidate_boxes(self, height: int, width: int) -> list[Box]:
        """Every crop box of the mode for a ``height x width`` image (training draws from these,
        evaluation takes the first ``num_crops``)."""
        return crop_boxes(
            height,
            width,
            mode=self.crop_mode,
            ratio=self.crop_ratio,
            stride_ratio=self.stride_ratio,
            cover_gap=self.cover_gap,
        )

    def crops(self, height: int, width: int) -> tuple[tuple[int, ...], list[Box]]:
        """The crop boxes of an image and their indices among the mode's boxes.

        Official: crops ``0 .. num_crops - 1`` of the mode's boxes, in fixed order (the official
        mapper asserts the image has exactly ``num_crops`` boxes and fails otherwise). When an
        image has fewer boxes (a side of 1 px gives 1 or 2 boxes; ``num_crops`` above the mode's
        4 or 8), the boxes repeat cyclically, so every image has T = 1 + ``num_crops`` views:
        the batch-level pass's view code is normalised by T, and images of a batch must stack.
        """
        if self.num_views == 1:
            return (), []
        cand = self.candidate_boxes(height, width)
        idx = tuple(i % len(cand) for i in range(self.num_crops))
        return idx, [cand[i] for i in idx]

    def plan(self, height: int, width: int) -> tuple[tuple[int, ...], list[ViewSpec]]:
        """(crop indices, the T views of a ``height x width`` image): full view first."""
        idx, boxes = self.crops(height, width)
        views = plan_views(
            height,
            width,
            boxes,
            short_side=self.short_side,
            max_size=self.max_size,
            crop_max_size=self.crop_max_size,
        )
        return idx, views


#: the official test-time views: 800 / 1333, 4 fixed corner crops of 0.7 with stride 0.6, crop
#: views capped by MAX_SIZE_TRAIN (1333)
OFFICIAL_TEST_VIEWS = InferenceViews()


def resize_shortest_edge_size(
    height: int, width: int, short: int, max_size: int
) -> tuple[int, int]:
    """Output (h, w) of detectron2's ResizeShortestEdge for one image.

    scale = short / min(h, w); if max(h, w) * scale > max_size: scale = max_size / max(h, w);
    new = int(dim * scale + 0.5).
    """
    scale = short / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    # max(1, .): an extreme panorama (e.g. 1 x 5000) would otherwise get a 0-pixel side.
    return max(int(height * scale + 0.5), 1), max(int(width * scale + 0.5), 1)


def crop_size(height: int, width: int, ratio: float, *, cover_gap: bool = False) -> tuple[int, int]:
    """(w, h) of a crop: ``int(ratio * side)`` per side (official), at least 1 px.

    Official quirk: at ratio 0.5 with an odd side the two crops leave the middle 1-px column
    (row) uncovered. ``cover_gap`` (``data.crop.cover_gap``, off by default) raises a side to
    ``ceil(side / 2)`` when truncation falls below it (ratio >= 0.5 only), so two crops cover
    the image; for the official 0.7 it never changes a size above 4 px.
    """
    cw, ch = max(int(ratio * width), 1), max(int(ratio * height), 1)
    if cover_gap and ratio >= 0.5:
        cw, ch = max(cw, (width + 1) // 2), max(ch, (height + 1) // 2)
    return cw, ch


def _starts(size: int, crop: int, stride: int) -> list[int]:
    starts: list[int] = []
    s = 0
    while True:
        c = min(s, size - crop)
        if starts and c <= starts[-1]:
            break
        starts.append(c)
        if c + crop >= size:
            break
        s += stride
    return starts


def corner_crop_boxes(
    height: int,
    width: int,
    ratio: float = OFFICIAL_TEST_VIEWS.crop_ratio,
    stride_ratio: float = OFFICIAL_TEST_VIEWS.stride_ratio,
    *,
    cover_gap: bool = False,
) -> list[Box]:
    """The official fixed crop boxes ``(x0, y0, x1, y1)``, row-major from the top-left.

    Crop size is ``int(ratio*W) x int(ratio*H)`` (ratio is per side; ``cover_gap``: see
    :func:`crop_size`).
    Start positions step by ``int(stride_ratio*side)`` and the last one is clamped so the crop
    ends at the border; with the defaults that gives 4 crops: top-left, top-right, bottom-left,
    bottom-right.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"crop ratio must be in (0, 1], got {ratio}")
    if stride_ratio <= 0.0:
        raise ValueError(f"crop stride_ratio must be > 0, got {stride_ratio}")
    cw, ch = crop_size(height, width, ratio, cover_gap=cover_gap)
    sx, sy = max(int(stride_ratio * width), 1), max(int(stride_ratio * height), 1)
    return [(x, y, x + cw, y + ch) for y in _starts(height, ch, sy) for x in _starts(width, cw, sx)]


def grid8_crop_boxes(
    height: int,
    width: int,
    ratio: float = OFFICIAL_TEST_VIEWS.crop_ratio,
    *,
    cover_gap: bool = False,
) -> list[Box]:
    """Denser fixed grid (``crop=fixed8``): a 3x3 grid of crop positions minus the centre.

    Order: top-left, top-centre, top-right, middle-left, middle-right, bottom-left,
    bottom-centre, bottom-right. Not in the official code (an extension for ablations).
    """
    cw, ch = crop_size(height, width, ratio, cover_gap=cover_gap)
    xs = [0, (width - cw) // 2, width - cw]
    ys = [0, (height - ch) // 2, height - ch]
    return [
        (x, y, x + cw, y + ch)
        for j, y in enumerate(ys)
        for i, x in enumerate(xs)
        if not (i == 1 and j == 1)
    ]


def crop_boxes(
    height: int,
    width: int,
    *,
    mode: str = "fixed",
    ratio: float = OFFICIAL_TEST_VIEWS.crop_ratio,
    stride_ratio: float = OFFICIAL_TEST_VIEWS.stride_ratio,
    cover_gap: bool = False,
) -> list[Box]:
    """All candidate crop boxes of a crop mode (``random`` uses the fixed ones at evaluation)."""
    if mode in ("fixed", "random"):
        return corner_crop_boxes(height, width, ratio, stride_ratio, cover_gap=cover_gap)
    if mode == "fixed8":
        return grid8_crop_boxes(height, width, ratio, cover_gap=cover_gap)
    if mode == "none":
        return []
    raise ValueError(f"unknown crop mode {mode!r}; expected one of {CROP_MODES}")


def random_crop_box(
    height: int, width: int, ratio: float, rng: np.random.Generator, *, cover_gap: bool = False
) -> Box:
    """A crop of the fixed size at a uniformly random position (paper Table 9b ablation)."""
    cw, ch = crop_size(height, width, ratio, cover_gap=cover_gap)
    x = int(rng.integers(0, width - cw + 1))
    y = int(rng.integers(0, height - ch + 1))
    return (x, y, x + cw, y + ch)


@dataclass(frozen=True)
class ViewSpec:
    """One view: its box in original pixels and its resized (h, w)."""

    box: Box
    size: tuple[int, int]


def plan_views(
    height: int,
    width: int,
    boxes: Sequence[Box],
    *,
    short_side: int,
    max_size: int,
    crop_max_size: int | None = None,
) -> list[ViewSpec]:
    """Full view plus one view per crop box, each resized by ResizeShortestEdge on its own.

    parity: crops are resized independently to the same short side (so a crop view can be one
    pixel narrower than the full view); official eval crops use MAX_SIZE_TRAIN, hence
    ``crop_max_size`` (defaults to ``max_size``).
    """
    cmax = max_size if crop_max_size is None else crop_max_size
    views = [
        ViewSpec(
            (0, 0, width, height), resize_shortest_edge_size(height, width, short_side, max_size)
        )
    ]
    for b in boxes:
        x0, y0, x1, y1 = b
        views.append(ViewSpec(b, resize_shortest_edge_size(y1 - y0, x1 - x0, short_side, cmax)))
    return views


def required_scale(views: Sequence[ViewSpec]) -> float:
    """Largest view-pixels per original-pixel ratio over the views (what decoding must serve)."""
    s = 0.0
    for v in views:
        x0, y0, x1, y1 = v.box
        s = max(s, v.size[0] / (y1 - y0), v.size[1] / (x1 - x0))
    return s


def nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Source indices PIL's NEAREST resize picks for ``n_in -> n_out`` (bit-exact).

    Pillow accumulates ``x = 0.5*a + i*a`` (a = n_in / n_out) by repeated double addition and
    truncates; ``np.cumsum`` adds sequentially in float64, so it reproduces every index.
    """
    step = n_in / n_out
    v = np.full(n_out, step, dtype=np.float64)
    v[0] = step * 0.5
    return np.minimum(np.cumsum(v).astype(np.int64), n_in - 1)


def render_image_view(
    image: Image.Image, full_size: tuple[int, int], view: ViewSpec, *, flip: bool = False
) -> np.ndarray:
    """Cut and resize one view from a (possibly reduced-scale) decoded RGB image.

    ``image`` must already be flipped when ``flip`` is set (flip once, use for all views); the
    flag only documents intent. At full decode scale this is crop-then-resize with PIL bilinear,
    exactly the official mapper; at reduced scale the box is scaled and PIL resamples from it.

    Shape: returns (h, w, 3) uint8.
    """
    del flip
    H, W = full_size
    x0, y0, x1, y1 = view.box
    h, w = view.size
    if image.size == (W, H):
        region = image if view.box == (0, 0, W, H) else image.crop(view.box)
        out = region if region.size == (w, h) else region.resize((w, h), Image.Resampling.BILINEAR)
    else:
        sx, sy = image.size[0] / W, image.size[1] / H
        out = image.resize(
            (w, h), Image.Resampling.BILINEAR, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        )
    return np.asarray(out, dtype=np.uint8)


def render_label_view(source: LabelSource, view: ViewSpec, *, flip: bool = False) -> np.ndarray:
    """The entity label map of one view: crop then PIL-nearest resize, without a full-res map.

    Shape: returns (h, w) int32, -1 where no entity.
    """
    x0, y0, x1, y1 = view.box
    h, w = view.size
    rows = y0 + nearest_indices(h, y1 - y0)
    cols = x0 + nearest_indices(w, x1 - x0)
    if flip:
        cols = source.width - 1 - cols
    return source.sample(rows, cols)


def to_chw_tensor(view: np.ndarray) -> torch.Tensor:
    """(h, w, 3) uint8 array -> (3, h, w) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(view.transpose(2, 0, 1)))


def build_eval_views(
    image: np.ndarray, views: InferenceViews = OFFICIAL_TEST_VIEWS
) -> dict[str, object]:
    """The evaluation views of one in-the-wild image (no flip), planned by ``views.plan``.

    Args:
        image: (H, W, 3) uint8 RGB.
        views: the test-time views (default: the official ones).

    Returns:
        ``images``: list of T (3, h, w) uint8 tensors; ``boxes``: (T, 4) float32 in original
        pixels; ``view_sizes``: (T, 2) int64.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            "build_eval_views expects an (H, W, 3) uint8 RGB array, "
            f"got {image.shape} {image.dtype}"
        )
    H, W = image.shape[:2]
    _, planned = views.plan(H, W)
    pil = Image.fromarray(image)
    imgs = [to_chw_tensor(render_image_view(pil, (H, W), v)) for v in planned]
    return {
        "images": imgs,
        "boxes": torch.tensor([v.box for v in planned], dtype=torch.float32),
        "view_sizes": torch.tensor([v.size for v in planned], dtype=torch.int64),
    }
