"""RLE decoding, label sources and robust image loading (bad input policy)."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from cropformer.data.collate import collate
from cropformer.data.dataset import EntityDataset
from cropformer.data.decode import (
    SampleError,
    decode_rle_string,
    encode_mask,
    label_source_for,
    load_image,
    open_image,
    segmentation_counts,
)
from cropformer.data.formats.entityseg import read_entityseg
from cropformer.data.records import Entity, Record
from cropformer.data.view_sampler import ViewSampler


def _mask(h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), bool)
    m[5:30, 7:40] = True
    m[rng.random((h, w)) < 0.1] ^= True
    return m


@pytest.mark.parametrize("seed", range(4))
def test_decode_rle_string_matches_pycocotools(seed):
    m = _mask(seed=seed)
    rle = encode_mask(m)
    counts = decode_rle_string(rle["counts"])
    assert counts.sum() == m.size
    un = mask_util.frPyObjects({"size": list(m.shape), "counts": counts.tolist()}, *m.shape)
    np.testing.assert_array_equal(mask_util.decode(un).astype(bool), m)


def test_long_runs_and_large_images():
    m = np.zeros((3000, 4000), bool)
    m[100:2900, 2000:3000] = True
    counts = decode_rle_string(encode_mask(m)["counts"])
    assert counts.sum() == m.size and counts[0] == 2000 * 3000 + 100


def test_polygon_rle_uncompressed_give_same_entities():
    h, w = 40, 60
    poly = [[10.0, 5.0, 50.0, 5.0, 50.0, 30.0, 10.0, 30.0]]
    m = mask_util.decode(mask_util.merge(mask_util.frPyObjects(poly, h, w))).astype(bool)
    compressed = encode_mask(m)
    uncompressed = {
        "size": [h, w],
        "counts": decode_rle_string(compressed["counts"]).tolist(),
    }
    outs = [segmentation_counts(s, h, w) for s in (poly, compressed, uncompressed)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize(
    ("seg", "match"),
    [
        ({"size": [10, 10], "counts": "0"}, "runs cover"),
        ({"size": [10, 11], "counts": "0"}, "differs from the image size"),
        ({"size": [10, 10], "counts": "~~~"}, "outside"),
        ({"size": [10, 10], "counts": [50, 60]}, "runs cover"),
        ({"size": [10, 10], "counts": [-5, 105]}, "negative"),
        ({"counts": "0"}, "needs 'size'"),
        (42, "unsupported segmentation"),
    ],
)
def test_invalid_segmentations_raise_with_location(seg, match):
    with pytest.raises(ValueError, match=match) as e:
        segmentation_counts(seg, 10, 10, where="a.json: image x.jpg, annotation 7")
    assert "annotation 7" in str(e.value)


def test_out_of_range_polygon_is_clipped():
    counts = segmentation_counts([[-10, -10, 100, -10, 100, 100, -10, 100]], 10, 10)
    assert counts.sum() == 100 and counts[0] == 0  # whole image


# ------------------------------------------------------------------------------ images


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_image_modes_convert_to_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    gray = load_image(_save(base.convert("L"), tmp_path / "g.png"))
    assert gray.shape == (20, 30, 3) and (gray[..., 0] == gray[..., 2]).all()
    rgba = load_image(_save(base.convert("RGBA"), tmp_path / "a.png"))
    np.testing.assert_array_equal(rgba, rgb)
    cmyk = load_image(_save(base.convert("CMYK"), tmp_path / "c.jpg", quality=100))
    assert cmyk.shape == (20, 30, 3) and cmyk.dtype == np.uint8
    assert np.abs(cmyk.astype(int) - rgb).mean() < 12
    v16 = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    p16 = tmp_path / "d.png"
    Image.fromarray(v16).save(p16)
    out = load_image(p16)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], np.round(v16 / 257.0).astype(np.uint8))
    pal = load_image(_save(base.convert("P"), tmp_path / "p.png"))
    assert pal.shape == (20, 30, 3)


def test_exif_rotation_applied(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "r.jpg"
    Image.fromarray(img).save(p, exif=exif, quality=95)
    out = load_image(p)
    assert out.shape == (40, 20, 3)
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # white half now on top
    _, full = open_image(p, expected_size=(40, 20))
    assert full == (40, 20)
    with pytest.raises(SampleError, match="swapped"):
        open_image(p, expected_size=(20, 40))


def test_missing_empty_truncated_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(SampleError, match="zero.jpg.*|empty"):
        load_image(tmp_path / "zero.jpg")
    buf = io.BytesIO()
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(buf, format="JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(SampleError, match="trunc.jpg"):
        load_image(tmp_path / "trunc.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(SampleError, match="junk.jpg"):
        load_image(tmp_path / "junk.jpg")


def test_size_mismatch(tmp_path):
    p = _save(Image.new("RGB", (30, 20)), tmp_path / "s.png")
    with pytest.raises(SampleError, match="annotation file says 31x20"):
        open_image(p, expected_size=(20, 31))


def test_draft_decodes_reduced_scale(tmp_path):
    p = _save(Image.new("RGB", (4000, 3000), (10, 200, 30)), tmp_path / "big.jpg")
    im, full = open_image(p, min_size=(700, 900))
    assert full == (3000, 4000)
    assert im.size == (1000, 750)  # 1/4 scale still covers 900x700
    im2, _ = open_image(p, min_size=(700, 900), draft=False)
    assert im2.size == (4000, 3000)


@pytest.mark.slow
def test_huge_image_20000x15000(tmp_path):
    p = tmp_path / "huge.jpg"
    Image.new("L", (20000, 15000), 128).save(p, quality=50)
    im, full = open_image(p, min_size=(800, 1067))
    assert full == (15000, 20000) and im.size[0] <= 4000


# ------------------------------------------------------------------------------ dataset policy


def _write_dataset(tmp_path, entries):
    """entries: list of (file_name, (h, w), image or None, masks)."""
    images, anns = [], []
    for i, (name, (h, w), img, masks) in enumerate(entries):
        if img is not None:
            img.save(tmp_path / name)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for m in masks:
            seg = m if isinstance(m, (dict, list)) else encode_mask(m)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "segmentation": seg, "iscrowd": 0})
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    return read_entityseg(path, tmp_path)


def _sampler(train=False):
    return ViewSampler(train=train, short_sides=(32,), max_size=64, num_crops=1 if train else 4)


def test_bad_sample_raises_naming_file_or_is_skipped(tmp_path):
    m = np.zeros((40, 60), bool)
    m[5:20, 5:30] = True
    good = Image.new("RGB", (60, 40), (1, 2, 3))
    records = _write_dataset(
        tmp_path,
        [("missing.jpg", (40, 60), None, [m]), ("good.png", (40, 60), good, [m])],
    )
    ds = EntityDataset(records, _sampler())
    with pytest.raises(SampleError, match="missing.jpg"):
        ds[0]
    skip = EntityDataset(records, _sampler(), skip_bad_samples=True)
    with pytest.warns(UserWarning, match="missing.jpg"):
        s = skip[0]
    assert s["file_name"] == "good.png" and skip.num_skipped == 1
    assert skip[0]["file_name"] == "good.png" and skip.num_skipped == 1  # no second warning


def test_empty_image_and_empty_mask_entity(tmp_path):
    empty = np.zeros((40, 60), bool)
    img = Image.new("RGB", (60, 40))
    records = _write_dataset(
        tmp_path, [("a.png", (40, 60), img, []), ("b.png", (40, 60), img, [empty])]
    )
    ds = EntityDataset(records, _sampler())
    batch = collate([ds[0], ds[1]])
    t0, t1 = batch["targets"]
    assert t0["masks"].shape[:2] == (0, 5) and t0["valid"].shape == (0, 5)
    # official: an entity with an empty mask stays in the list, invalid in every view
    assert t1["masks"].shape[:2] == (1, 5) and not t1["valid"].any()


def test_worker_error_names_file(tmp_path):
    from torch.utils.data import DataLoader

    m = np.ones((40, 60), bool)
    records = _write_dataset(tmp_path, [("gone.jpg", (40, 60), None, [m])])
    loader = DataLoader(EntityDataset(records, _sampler()), num_workers=1, collate_fn=collate)
    it = iter(loader)
    try:
        with pytest.raises(Exception, match="gone.jpg"):
            next(it)
    finally:
        it._shutdown_workers()  # don't wait for the worker's 5 s status timeout


def test_crowd_excluded_from_targets(tmp_path):
    m = np.zeros((40, 60), bool)
    m[:20] = True
    records = _write_dataset(tmp_path, [("c.png", (40, 60), Image.new("RGB", (60, 40)), [m, ~m])])
    records[0].entities[1].iscrowd = True
    ds = EntityDataset(records, _sampler())
    assert ds[0]["num_entities"] == 1


def test_id_map_source(tmp_path):
    ids = np.zeros((10, 12, 3), np.uint8)
    ids[:5, :, 0] = 7
    ids[5:, 6:, 1] = 1  # id 256
    p = tmp_path / "pan.png"
    Image.fromarray(ids).save(p)
    rec = Record(
        image_path="x",
        file_name="x",
        height=10,
        width=12,
        image_id=1,
        entities=[Entity(segment_id=256), Entity(segment_id=7)],
        id_map_path=str(p),
        id_map_encoding="coco_panoptic",
    )
    full = label_source_for(rec, rec.entities).full()
    assert (full[:5] == 1).all() and (full[5:, 6:] == 0).all() and (full[5:, :6] == -1).all()


def test_no_warning_for_good_samples(tmp_path):
    m = np.zeros((40, 60), bool)
    m[3:9, 4:50] = True
    records = _write_dataset(tmp_path, [("g.png", (40, 60), Image.new("RGB", (60, 40)), [m])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = EntityDataset(records, _sampler(train=True), seed=1)[0]
    assert len(s["views"]) == 2


def test_exif_rotation_with_reduced_scale_decode(tmp_path):
    img = np.zeros((400, 800, 3), np.uint8)
    img[:, :400] = 255  # left half white (stored orientation)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "big_r.jpg"
    Image.fromarray(img).save(p, exif=exif, quality=95)
    im, full = open_image(p, min_size=(200, 100), expected_size=(800, 400))
    assert full == (800, 400)
    assert im.size == (100, 200)  # 1/4 scale, then rotated to the displayed orientation
    arr = np.asarray(im)
    assert arr[:90].mean() > 200 and arr[110:].mean() < 50
