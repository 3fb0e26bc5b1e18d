"""predict_files / expand_inputs: outputs per image, unreadable files skipped and counted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cropformer.evaluation.writers import read_id_map_png
from cropformer.inference.files import expand_inputs, predict_files


class HalfPredictor:
    """Left half = output 0 (score .9), right half = output 1 (score .2), output 2 empty."""

    def predict(self, image):
        h, w = image.shape[:2]
        ids = torch.zeros((h, w), dtype=torch.int32)
        ids[:, w // 2 :] = 1
        return {
            "id_map": ids,
            "scores": torch.tensor([0.9, 0.2, 0.0]),
            "query_indices": torch.tensor([3, 1, 0]),
        }


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(d / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 10, 4), dtype=np.uint8), "RGBA").save(d / "b.png")
    (d / "broken.png").write_bytes(b"not an image")
    (d / "notes.txt").write_text("ignored")
    return d


def test_expand_inputs(images):
    names = [p.name for p in expand_inputs(images)]
    assert names == ["a.jpg", "b.png", "broken.png"]
    assert [p.name for p in expand_inputs(str(images / "*.png"))] == ["b.png", "broken.png"]
    assert [p.name for p in expand_inputs([images / "a.jpg", images / "b.png"])] == [
        "a.jpg",
        "b.png",
    ]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_inputs(images / "*.tif")
    empty = images / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        expand_inputs(empty)


def test_predict_files_writes_outputs_and_skips_bad_files(images, tmp_path):
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="broken.png"):
        summary = predict_files(
            HalfPredictor(), expand_inputs(images), out, progress=False, score_threshold=0.5
        )
    assert summary.num_ok == 2 and summary.num_skipped == 1
    overlay = np.asarray(Image.open(out / "a_overlay.png"))
    assert overlay.shape == (30, 80, 3)
    ids = read_id_map_png(out / "b_ids.png")
    assert ids.shape == (20, 10)
    assert (ids[:, :5] == 0).all() and (ids[:, 5:] == -1).all()  # output 1 below threshold
    doc = json.loads((out / "b.json").read_text())
    assert [a["id"] for a in doc["annotations"]] == [1]
    assert doc["annotations"][0]["query_index"] == 3 and doc["annotations"][0]["area"] == 100


def test_same_stem_gets_a_suffix(images, tmp_path):
    (images / "a.png").write_bytes((images / "b.png").read_bytes())
    summary = predict_files(
        HalfPredictor(),
        [images / "a.jpg", images / "a.png"],
        tmp_path / "o",
        progress=False,
        overlay=False,
        rle_json=False,
    )
    assert summary.num_ok == 2
    assert (tmp_path / "o" / "a_ids.png").is_file() and (tmp_path / "o" / "a_1_ids.png").is_file()
