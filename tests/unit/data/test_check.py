"""check_dataset finds every kind of problem; convert resolves overlaps (tiny fixtures)."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from cropformer.data.check import check_dataset
from cropformer.data.convert import ConversionReport, records_to_entityseg
from cropformer.data.decode import encode_mask
from cropformer.data.formats.entityseg import read_entityseg


def _ann(i, image_id, seg):
    return {"id": i, "image_id": image_id, "segmentation": seg, "iscrowd": 0, "category_id": 3}


def test_check_reports_all_problem_kinds(tmp_path):
    h, w = 20, 30
    Image.new("RGB", (w, h)).save(tmp_path / "ok.png")
    Image.new("RGB", (w + 1, h)).save(tmp_path / "wrong_size.png")
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (9, 9, 9)).save(buf, format="JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[:40])
    a = np.zeros((h, w), bool)
    a[:10] = True
    b = np.zeros((h, w), bool)
    b[5:15] = True
    images = [
        {"id": 1, "file_name": "ok.png", "height": h, "width": w},
        {"id": 2, "file_name": "missing.png", "height": h, "width": w},
        {"id": 3, "file_name": "wrong_size.png", "height": h, "width": w},
        {"id": 4, "file_name": "trunc.jpg", "height": h, "width": w},
    ]
    anns = [
        _ann(1, 1, encode_mask(a)),
        _ann(2, 1, encode_mask(b)),  # overlaps a
        _ann(3, 1, encode_mask(np.zeros((h, w), bool))),  # empty
        _ann(4, 1, {"size": [h, w], "counts": "abc"}),  # invalid RLE
        _ann(5, 99, encode_mask(a)),  # refers to no image
    ]
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    rep = check_dataset(tmp_path, path)
    text = "\n".join(rep.lines())
    assert rep.images == 4 and rep.entities == 4
    for needle in (
        "missing.png: image file missing",
        "wrong_size.png",
        "trunc.jpg",
        "masks overlap (150 pixels",
        "annotation 3: empty mask",
        "annotation 4: invalid RLE",
        "1 annotations refer to no image",
    ):
        assert needle in text, needle
    assert "entities per image: min 0, mean 1.0, max 4" in text


def test_convert_resolves_overlap_by_painting_order(tmp_path):
    h, w = 20, 30
    a = np.zeros((h, w), bool)
    a[:10] = True
    b = np.zeros((h, w), bool)
    b[5:15] = True
    c = np.zeros((h, w), bool)
    c[6:8] = True  # fully covered by b -> dropped
    images = [{"id": 1, "file_name": "x.png", "height": h, "width": w}]
    anns = [_ann(1, 1, encode_mask(a)), _ann(2, 1, encode_mask(c)), _ann(3, 1, encode_mask(b))]
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    report = ConversionReport()
    data = records_to_entityseg(read_entityseg(path, tmp_path), report)
    assert report.images_with_overlap == 1 and report.dropped_empty == 1
    assert [x["area"] for x in data["annotations"]] == [150, 300]
    assert data["annotations"][0]["bbox"] == [0.0, 0.0, 30.0, 5.0]


def test_missing_image_size_read_from_file(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "x.png")
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png"}], "annotations": []}))
    (rec,) = read_entityseg(path, tmp_path)
    assert (rec.height, rec.width) == (20, 30)
