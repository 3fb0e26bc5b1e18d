"""predict.py writers: overlay, 16-bit id map, RLE json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cropformer.evaluation.rle import decode_rle
from cropformer.evaluation.writers import (
    colorize,
    entity_colors,
    filter_prediction,
    overlay,
    read_id_map_png,
    write_id_map_png,
    write_overlay,
    write_rle_json,
)


def _pred(h=30, w=40, n=5):
    ids = torch.full((h, w), -1, dtype=torch.int32)
    for k in range(n - 1):  # output n-1 stays empty
        ids[k * 5 : k * 5 + 4, k * 6 : k * 6 + 9] = k
    return {
        "id_map": ids,
        "scores": torch.linspace(0.9, 0.1, n),
        "query_indices": torch.arange(n) + 10,
    }


def test_colors_unlimited_and_distinct():
    c = entity_colors(1000)
    assert c.shape == (1000, 3) and c.dtype == np.uint8
    assert len({tuple(x) for x in c[:300]}) == 300  # no palette overflow / repeats early on
    ids = np.array([[-1, 0], [999, 5]])
    rgb = colorize(ids)
    assert rgb.shape == (2, 2, 3) and (rgb[0, 0] == 0).all() and (rgb[1, 0] == c[999]).all()


def test_overlay_side_by_side(tmp_path):
    img = np.full((30, 40, 3), 200, dtype=np.uint8)
    pred = _pred()
    out = overlay(img, pred)
    assert out.shape == (30, 80, 3)
    assert (out[:, :40] == img).all()
    path = write_overlay(tmp_path / "a" / "x.png", img, pred)
    assert np.array_equal(np.asarray(Image.open(path)), out)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(img[:10], pred)
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, pred, alpha=1.5)
    # entity pixels are blended towards their colour, background is darkened
    right = out[:, 40:].astype(int)
    assert (right[pred["id_map"] < 0] < 200).all()
    k0 = pred["id_map"] == 0
    assert not np.array_equal(right[k0][0], img[k0][0])


def test_id_map_png_is_16_bit_round_trip(tmp_path):
    ids = torch.full((7, 9), -1, dtype=torch.int32)
    ids[0, 0], ids[3, 4], ids[6, 8] = 0, 300, 65533
    pred = {"id_map": ids, "scores": torch.zeros(65534), "query_indices": torch.zeros(65534)}
    path = write_id_map_png(tmp_path / "ids.png", pred)
    im = Image.open(path)
    assert im.mode in ("I;16", "I")
    assert np.array_equal(read_id_map_png(path), ids.numpy())
    ids[0, 1] = 70000
    with pytest.raises(ValueError, match="16-bit"):
        write_id_map_png(tmp_path / "big.png", dict(pred, id_map=ids))


def test_rle_json_matches_id_map(tmp_path):
    pred = _pred()
    path = write_rle_json(tmp_path / "x.json", pred, file_name="x.jpg", image_id=3)
    doc = json.loads(path.read_text())
    assert doc["height"] == 30 and doc["width"] == 40 and doc["file_name"] == "x.jpg"
    anns = doc["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3, 4]  # output 4 is empty: skipped
    for a in anns:
        assert np.array_equal(decode_rle(a["segmentation"]), pred["id_map"].numpy() == a["id"] - 1)
        assert a["query_index"] == a["id"] - 1 + 10
        assert a["score"] == pytest.approx(float(pred["scores"][a["id"] - 1]))


def test_filter_prediction_renumbers():
    pred = _pred()
    f = filter_prediction(pred, score_threshold=0.45)
    assert f["scores"].tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert f["query_indices"].tolist() == [10, 11, 12]
    assert set(torch.unique(f["id_map"]).tolist()) == {-1, 0, 1, 2}
    assert torch.equal(f["id_map"] == 2, pred["id_map"] == 2)
    g = filter_prediction(pred)  # drops the empty output only
    assert g["scores"].numel() == 4
