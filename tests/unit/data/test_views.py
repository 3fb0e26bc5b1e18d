"""Crop boxes, view planning, PIL-exact nearest resizing, flip and per-view targets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cropformer.data.decode import (
    DenseLabelSource,
    encode_mask,
    label_source_from_counts,
    segmentation_counts,
)
from cropformer.data.view_sampler import ViewSampler
from cropformer.data.views import (
    ViewSpec,
    corner_crop_boxes,
    crop_boxes,
    nearest_indices,
    plan_views,
    render_image_view,
    render_label_view,
    resize_shortest_edge_size,
)

SIZES = [(420, 512), (300, 451), (1536, 2048), (6000, 8000), (7, 5), (1, 1), (999, 1001), (2, 3000)]


def _official_corner_boxes(h: int, w: int, ratio: float, stride: float) -> list[tuple]:
    """The official crop loop (reference §3.2), written out independently of ours."""
    cw, ch = int(ratio * w), int(ratio * h)
    sx, sy = int(stride * w), int(stride * h)

    def starts(size: int, crop: int, step: int) -> list[int]:
        out = [0]
        while out[-1] + crop < size:
            out.append(min(out[-1] + step, size - crop))
        return out

    return [(x, y, x + cw, y + ch) for y in starts(h, ch, sy) for x in starts(w, cw, sx)]


def test_corner_crop_boxes_equal_official_by_default():
    ratios = [round(0.5 + 0.05 * i, 2) for i in range(7)]  # 0.5 .. 0.8
    sizes = [(h, w) for h in range(2, 40) for w in range(2, 40)] + SIZES[:4] + [(999, 1001)]
    for ratio in ratios:
        for h, w in sizes:
            assert corner_crop_boxes(h, w, ratio=ratio) == _official_corner_boxes(
                h, w, ratio, 0.6
            ), (h, w, ratio)


def test_corner_crop_boxes_official_gap_at_half_ratio_odd_side():
    boxes = corner_crop_boxes(9, 11, ratio=0.5)
    assert boxes == [(0, 0, 5, 4), (6, 0, 11, 4), (0, 5, 5, 9), (6, 5, 11, 9)]
    cover = np.zeros((9, 11), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        cover[y0:y1, x0:x1] = True
    assert not cover[:, 5].any() and not cover[4, :].any()  # the official 1-px gaps
    # cover_gap widens to ceil(side / 2): no gap.
    widened = corner_crop_boxes(9, 11, ratio=0.5, cover_gap=True)
    assert widened == [(0, 0, 6, 5), (5, 0, 11, 5), (0, 4, 6, 9), (5, 4, 11, 9)]


@pytest.mark.parametrize(("h", "w"), SIZES)
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.55, 0.7, 0.8, 1.0])
def test_corner_crop_boxes_cover_gap_inside_per_side_ratio_cover(h, w, ratio):
    boxes = corner_crop_boxes(h, w, ratio=ratio, stride_ratio=0.6, cover_gap=True)
    cw, ch = max(int(ratio * w), 1), max(int(ratio * h), 1)
    if ratio >= 0.5:  # no 1-px seam from truncation (ratio 0.5, odd side)
        cw, ch = max(cw, (w + 1) // 2), max(ch, (h + 1) // 2)
    assert boxes
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert (x1 - x0, y1 - y0) == (cw, ch)  # ratio applies per side
    assert len(set(boxes)) == len(boxes)
    if ratio >= 0.5:
        cover = np.zeros((h, w), dtype=bool)
        for x0, y0, x1, y1 in boxes:
            cover[y0:y1, x0:x1] = True
        assert cover.all()


def test_cover_gap_reaches_the_view_sampler_from_the_data_config():
    from cropformer.data.datamodule import EntityDataModule

    dm = EntityDataModule(crop={"ratio": 0.5})
    assert dm.sampler_for("val").draw(9, 11, np.random.default_rng(0)).views[1].box == (0, 0, 5, 4)
    dm = EntityDataModule(crop={"ratio": 0.5, "cover_gap": True})
    assert dm.sampler_for("val").draw(9, 11, np.random.default_rng(0)).views[1].box == (0, 0, 6, 5)


def test_corner_crop_boxes_official_example():
    # parity README §5: 512x420 image -> 358x294 crops at these corners, in this order.
    assert corner_crop_boxes(420, 512) == [
        (0, 0, 358, 294),
        (154, 0, 512, 294),
        (0, 126, 358, 420),
        (154, 126, 512, 420),
    ]


def test_crop_modes():
    assert len(crop_boxes(600, 800, mode="fixed8")) == 8
    assert crop_boxes(600, 800, mode="none") == []
    assert crop_boxes(600, 800, mode="random") == corner_crop_boxes(600, 800)
    with pytest.raises(ValueError, match="unknown crop mode"):
        crop_boxes(600, 800, mode="bogus")
    with pytest.raises(ValueError, match="crop ratio"):
        corner_crop_boxes(600, 800, ratio=1.5)


def test_resize_shortest_edge_rule():
    assert resize_shortest_edge_size(420, 512, 256, 1333) == (256, 312)
    assert resize_shortest_edge_size(300, 451, 256, 1333) == (256, 385)
    assert resize_shortest_edge_size(1000, 4000, 800, 1333) == (333, 1333)
    assert resize_shortest_edge_size(1, 5000, 800, 1333) == (1, 1333)


@pytest.mark.parametrize("seed", range(5))
def test_nearest_indices_match_pil(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n_in, n_out = (int(v) for v in rng.integers(1, 700, 2))
        src = np.arange(n_in, dtype=np.int32)[None, :].repeat(2, 0)
        ref = np.asarray(Image.fromarray(src, "I").resize((n_out, 2), Image.Resampling.NEAREST))
        np.testing.assert_array_equal(nearest_indices(n_out, n_in), ref[0])


def _random_partition(rng, h, w, k):
    lm = rng.integers(0, k, size=(h // 8 + 1, w // 8 + 1))
    lm = np.kron(lm, np.ones((8, 8), dtype=np.int64))[:h, :w]
    lm[rng.random((h, w)) < 0.05] = -1  # some unlabelled pixels
    return lm


def _source(lm, k):
    counts = [segmentation_counts(encode_mask(lm == i), *lm.shape) for i in range(k)]
    return label_source_from_counts(counts, *lm.shape)


@pytest.mark.parametrize("flip", [False, True])
def test_cropped_view_masks_equal_crop_then_resize(flip):
    rng = np.random.default_rng(0)
    h, w, k = 150, 221, 7
    lm = _random_partition(rng, h, w, k)
    src = _source(lm, k)
    assert not src.overlap
    flipped = lm[:, ::-1] if flip else lm
    views = plan_views(h, w, corner_crop_boxes(h, w), short_side=64, max_size=1333)
    for v in views:
        x0, y0, x1, y1 = v.box
        mine = render_label_view(src, v, flip=flip)
        for i in range(k):
            crop = (flipped[y0:y1, x0:x1] == i).astype(np.uint8)
            ref = np.asarray(
                Image.fromarray(crop).resize(v.size[::-1], Image.Resampling.NEAREST)
            ).astype(bool)
            np.testing.assert_array_equal(mine == i, ref)


def test_flip_applied_identically_to_image_and_masks():
    rng = np.random.default_rng(1)
    h, w = 60, 90
    lm = _random_partition(rng, h, w, 3)
    lm[lm < 0] = 0
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    img = Image.fromarray(palette[lm]).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    src = _source(lm, 3)
    v = ViewSpec((10, 5, 70, 50), (45, 60))
    pix = render_image_view(img, (h, w), v)
    lab = render_label_view(src, v, flip=True)
    # nearest image resize of the flipped image = palette of the flipped label view
    pix_nn = np.asarray(img.crop(v.box).resize((60, 45), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(pix_nn, palette[lab])
    assert pix.shape == (45, 60, 3)


def test_label_source_overlap_paints_in_order():
    h, w = 20, 30
    a = np.zeros((h, w), bool)
    a[2:10, 2:20] = True
    b = np.zeros((h, w), bool)
    b[5:15, 10:25] = True
    counts = [segmentation_counts(encode_mask(m), h, w) for m in (a, b)]
    src = label_source_from_counts(counts, h, w)
    assert isinstance(src, DenseLabelSource) and src.overlap
    full = src.full()
    assert (full[b] == 1).all()  # later entity wins
    assert (full[a & ~b] == 0).all()


def test_view_sampler_train_and_eval():
    rng = np.random.default_rng(0)
    train = ViewSampler(train=True, short_sides=(640, 800), num_crops=1)
    seen = set()
    for _ in range(60):
        d = train.draw(3000, 4000, rng)
        assert len(d.views) == 2 and d.short_side in (640, 800)
        assert min(d.views[0].size) == d.short_side
        seen.add(d.crop_indices[0])
        seen.add(("flip", d.flip))
    assert {0, 1, 2, 3, ("flip", True), ("flip", False)} <= seen
    ev = ViewSampler(train=False, short_sides=(800,), num_crops=4)
    d = ev.draw(3000, 4000, rng)
    assert d.crop_indices == (0, 1, 2, 3) and not d.flip
    assert [v.box for v in d.views[1:]] == corner_crop_boxes(3000, 4000)
    none = ViewSampler(train=True, crop_mode="none", num_crops=1)
    assert len(none.draw(300, 400, rng).views) == 1
    rnd = ViewSampler(train=True, crop_mode="random", num_crops=1)
    box = rnd.draw(300, 400, rng).views[1].box
    assert (box[2] - box[0], box[3] - box[1]) == (280, 210)
    lsj = ViewSampler(train=True, lsj={"image_size": 256, "min_scale": 0.5, "max_scale": 2.0})
    d = lsj.draw(300, 400, rng)
    assert len(d.views) == 1 and max(d.views[0].size) <= 256


def test_tiny_images_keep_the_number_of_views():
    rng = np.random.default_rng(0)
    for train in (True, False):
        s = ViewSampler(train=train, short_sides=(32,), num_crops=4 if not train else 2)
        for h, w in [(1, 1), (2, 1), (1, 5)]:
            d = s.draw(h, w, rng)
            assert len(d.views) == s.num_views
            for v in d.views:
                x0, y0, x1, y1 = v.box
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and min(v.size) >= 1
