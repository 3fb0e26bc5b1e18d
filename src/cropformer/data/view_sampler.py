"""The view sampler: per-sample draws shared by all views of a sample.

One draw per sample (official crop mapper): the flip flag, the short side, and the crops. All
views of the sample use the same draw, so image and masks of every view stay consistent. The
geometric operations themselves are PIL bilinear (images) and PIL-exact nearest (label maps) in
``views.py``, which is what the official mapper does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cropformer.data.views import (
    NUM_TRAIN_CROPS,
    OFFICIAL_TEST_VIEWS,
    TRAIN_MAX_SIZE,
    TRAIN_SHORT_SIDES,
    Box,
    InferenceViews,
    ViewSpec,
    plan_views,
    random_crop_box,
)


@dataclass(frozen=True)
class SampleDraw:
    """What one sample's views are: flip flag, short side, crop indices and the views."""

    flip: bool
    short_side: int
    crop_indices: tuple[int, ...]
    views: tuple[ViewSpec, ...]


@dataclass
class ViewSampler:
    """Draws the views of a sample (the crop dataloader's random choices).

    Args:
        train: random flip, short side chosen from ``short_sides``, ``num_crops`` crops chosen at
            random (fixed modes) or placed at random (``random``); else full view + the first
            ``num_crops`` crops of the mode, in fixed order, ``short_sides[0]``, no flip.
        short_sides: official train choices (640..800) or the single test size (800).
        max_size: long-side cap of the full view (1333).
        crop_max_size: long-side cap of crop views (official: MAX_SIZE_TRAIN even at test).
        crop_mode: ``fixed`` | ``fixed8`` | ``random`` | ``none``.
        num_crops: crops per sample (official 1 in training, 4 at test).
        crop_ratio, stride_ratio: crop geometry (0.7 / 0.6).
        cover_gap: widen ratio-0.5 crops of odd sides so two crops leave no 1-px gap (not
            official; see :func:`cropformer.data.views.crop_size`).
        flip_prob: horizontal flip probability in training (0.5).
        lsj: ``None`` or ``{"image_size": 1024, "min_scale": 0.1, "max_scale": 2.0}``: the
            Mask2Former baselines' large-scale jitter instead of the crop mapper (one view:
            random scale of the long side around ``image_size``, random window of at most
            ``image_size`` square; the window is the view's box).
    """

    train: bool
    short_sides: Sequence[int] = TRAIN_SHORT_SIDES
    max_size: int = TRAIN_MAX_SIZE
    crop_max_size: int | None = None
    crop_mode: str = "fixed"
    num_crops: int = NUM_TRAIN_CROPS
    crop_ratio: float = OFFICIAL_TEST_VIEWS.crop_ratio
    stride_ratio: float = OFFICIAL_TEST_VIEWS.stride_ratio
    cover_gap: bool = False
    flip_prob: float = 0.5
    lsj: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if len(self.short_sides) == 0:
            raise ValueError("short_sides must hold at least one size")
        if self.crop_mode == "none":
            self.num_crops = 0

    @property
    def num_views(self) -> int:
        """T = 1 + crops (1 for LSJ)."""
        return 1 if self.lsj else 1 + self.num_crops

    def test_views(self) -> InferenceViews:
        """The evaluation views this sampler draws (``train=False``): ``short_sides[0]``."""
        return InferenceViews(
            short_side=int(self.short_sides[0]),
            max_size=self.max_size,
            num_crops=self.num_crops,
            crop_ratio=self.crop_ratio,
            stride_ratio=self.stride_ratio,
            crop_mode=self.crop_mode,
            crop_max_size=self.crop_max_size,
            cover_gap=self.cover_gap,
        )

    def draw(self, height: int, width: int, rng: np.random.Generator) -> SampleDraw:
        """Draw the views of one (height x width) image."""
        if not self.train:
            # the one view planner of evaluation and prediction (InferenceViews.plan)
            test_views = self.test_views()
            crop_idx, planned = test_views.plan(height, width)
            return SampleDraw(False, test_views.short_side, crop_idx, tuple(planned))
        if self.lsj:
            return self._draw_lsj(height, width, rng)
        flip = bool(rng.random() < self.flip_prob)
        short = int(self.short_sides[int(rng.integers(len(self.short_sides)))])
        boxes: list[Box]
        idx: tuple[int, ...]
        if self.num_crops <= 0:
            boxes, idx = [], ()
        elif self.crop_mode == "random":
            boxes = [
                random_crop_box(height, width, self.crop_ratio, rng, cover_gap=self.cover_gap)
                for _ in range(self.num_crops)
            ]
            idx = tuple(range(self.num_crops))
        else:
            cand = self.test_views().candidate_boxes(height, width)
            # Every sample keeps exactly num_crops crops so batches stack (T fixed); only a
            # degenerate image (a side of a few pixels) has fewer distinct boxes: drawn with
            # replacement then.
            n = len(cand)
            pick = rng.choice(n, size=self.num_crops, replace=self.num_crops > n)
            idx = tuple(int(i) for i in pick)
            boxes = [cand[i] for i in idx]
        views = plan_views(
            height,
            width,
            boxes,
            short_side=short,
            max_size=self.max_size,
            crop_max_size=self.crop_max_size,
        )
        return SampleDraw(flip, short, idx, tuple(views))

    def _draw_lsj(self, height: int, width: int, rng: np.random.Generator) -> SampleDraw:
        assert self.lsj is not None
        size = int(self.lsj.get("image_size", 1024))
        lo, hi = float(self.lsj.get("min_scale", 0.1)), float(self.lsj.get("max_scale", 2.0))
        flip = bool(rng.random() < self.flip_prob)
        s = float(rng.uniform(lo, hi))
        # detectron2 ResizeScale: scale so the image fits (s*size)^2, then a fixed-size window.
        f = min(s * size / height, s * size / width)
        sh, sw = max(int(height * f + 0.5), 1), max(int(width * f + 0.5), 1)
        ch, cw = min(sh, size), min(sw, size)
        oy = int(rng.integers(0, sh - ch + 1))
        ox = int(rng.integers(0, sw - cw + 1))
        x0, y0 = int(ox / f), int(oy / f)
        x1 = min(max(int(round((ox + cw) / f)), x0 + 1), width)
        y1 = min(max(int(round((oy + ch) / f)), y0 + 1), height)
        view = ViewSpec((x0, y0, x1, y1), (ch, cw))
        return SampleDraw(flip, ch, (), (view,))
