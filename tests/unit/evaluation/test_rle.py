"""RLE helpers: round trips, id maps, COCO results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cropformer.evaluation.rle import (
    decode_rle,
    encode_mask,
    encode_masks,
    id_map_to_rles,
    prediction_to_coco_results,
    rle_area,
    rles_to_id_map,
)


def test_mask_round_trip_and_area():
    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) > 0.6
    rle = encode_mask(torch.from_numpy(m))
    assert isinstance(rle["counts"], str) and rle["size"] == [37, 53]
    json.dumps(rle)  # JSON-ready
    assert np.array_equal(decode_rle(rle), m)
    assert rle_area(rle) == int(m.sum())
    stack = rng.random((3, 8, 9)) > 0.5
    assert np.array_equal(decode_rle(encode_masks(stack)), stack)
    with pytest.raises(ValueError, match="2-D"):
        encode_mask(stack)
    with pytest.raises(ValueError, match="empty list"):
        decode_rle([])


def test_id_map_round_trip():
    rng = np.random.default_rng(1)
    ids = rng.integers(-1, 5, size=(20, 31)).astype(np.int32)
    ids[ids == 3] = -1  # output 3 empty
    rles = id_map_to_rles(torch.from_numpy(ids), num_outputs=6)
    assert len(rles) == 6
    assert rle_area(rles[3]) == 0 and rle_area(rles[5]) == 0
    for k in range(6):
        assert np.array_equal(decode_rle(rles[k]), ids == k)
    assert torch.equal(rles_to_id_map(rles, 20, 31), torch.from_numpy(ids))


def test_prediction_to_coco_results_skips_empty_masks():
    ids = torch.full((10, 12), -1, dtype=torch.int32)
    ids[:5, :5] = 0
    ids[6:, 6:] = 2
    pred = {
        "id_map": ids,
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "query_indices": torch.tensor([4, 1, 0]),
    }
    res = prediction_to_coco_results(pred, image_id=42)
    assert [r["score"] for r in res] == pytest.approx([0.9, 0.7])
    assert all(r["image_id"] == 42 and r["category_id"] == 1 for r in res)
    assert np.array_equal(decode_rle(res[1]["segmentation"]), (ids == 2).numpy())
    json.dumps(res)
