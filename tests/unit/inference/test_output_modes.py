"""Output modes: the official demo's id map, score/area filters, uint8 and uint16 ids."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from helpers.official_demo import demo_restated
from PIL import Image

from cropformer.evaluation.writers import write_id_map_png
from cropformer.inference.output_modes import OutputMode, output_areas
from cropformer.schema import EntityPrediction
from cropformer.utils.errors import UserError


def _prediction(seed: int, M: int = 12, H: int = 40, W: int = 50, empty: int = 3):
    """Non-overlapping outputs (the fusion's contract) with some empty ones and score 0 for them
    (as the official fusion gives), ordered by an entity probability unrelated to the score."""
    g = torch.Generator().manual_seed(seed)
    id_map = torch.randint(-1, M - empty, (H, W), generator=g, dtype=torch.int32)
    scores = torch.rand(M, generator=g)
    scores[M - empty :] = 0.0
    return EntityPrediction(
        id_map=id_map, scores=scores, query_indices=torch.randperm(M, generator=g)
    )


def _masks(pred: EntityPrediction) -> np.ndarray:
    ids = pred["id_map"].numpy()
    return ids[None] == np.arange(len(pred["scores"]))[:, None, None]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.0, 1.0])
def test_official_demo_equals_the_demo_restated(seed, threshold):
    pred = _prediction(seed)
    mode = OutputMode("official_demo", score_threshold=threshold)
    ours = mode.id_map(pred)
    ref = demo_restated(_masks(pred), pred["scores"].numpy(), threshold)
    assert ours.dtype == np.uint16 and ours.shape == (40, 50)
    assert np.array_equal(ours.astype(np.int64), ref)
    if threshold == 0.0:  # empty outputs (score 0) are selected and take a number, as in the demo
        assert int(ours.max()) <= 9 and len(mode.kept(pred)) == 12


def test_official_demo_default_threshold_is_the_demos():
    pred = _prediction(4)
    assert OutputMode("official_demo").threshold == 0.5
    ref = demo_restated(_masks(pred), pred["scores"].numpy(), 0.5)
    assert np.array_equal(OutputMode("official_demo").id_map(pred).astype(np.int64), ref)


def test_fused_without_filters_is_the_written_id_map_byte_for_byte(tmp_path):
    pred = _prediction(5)
    mode = OutputMode()
    assert not mode.filters and mode.select(pred) is pred
    write_id_map_png(tmp_path / "a.png", pred)
    buf = io.BytesIO()
    Image.fromarray(mode.id_map(pred)).save(buf, format="PNG", compress_level=3)
    assert buf.getvalue() == (tmp_path / "a.png").read_bytes()


@pytest.mark.parametrize("fmt", ["fused", "official_demo"])
def test_min_area_and_score_threshold_filter_as_documented(fmt):
    ids = torch.full((10, 10), -1, dtype=torch.int32)
    ids[:5, :5] = 0  # 25 px, score 0.9
    ids[5:, :2] = 1  # 10 px, score 0.8
    ids[5:, 5:] = 2  # 25 px, score 0.3
    ids[0, 9] = 3  # 1 px, score 0.95
    pred = EntityPrediction(
        id_map=ids,
        scores=torch.tensor([0.9, 0.8, 0.3, 0.95, 0.0]),  # output 4 is empty
        query_indices=torch.arange(5),
    )
    assert output_areas(pred).tolist() == [25, 10, 25, 1, 0]
    both = OutputMode(fmt, score_threshold=0.5, min_area=10).id_map(pred)
    # kept: outputs 0 and 1, renumbered 1, 2 in output order; 2 (score) and 3 (area) dropped
    expected = np.zeros((10, 10), np.uint16)
    expected[:5, :5], expected[5:, :2] = 1, 2
    assert np.array_equal(both, expected)
    area_only = OutputMode(fmt, score_threshold=0.0, min_area=2).id_map(pred)
    assert sorted(np.unique(area_only).tolist()) == [0, 1, 2, 3]  # 0, 1, 2 kept; 3, 4 too small
    assert int(area_only[7, 7]) == 3
    score_only = OutputMode(fmt, score_threshold=0.85).id_map(pred)
    assert sorted(np.unique(score_only).tolist()) == [0, 1, 2]  # outputs 0 and 3
    assert int(score_only[0, 9]) == 2 and int(score_only[0, 0]) == 1


def test_uint8_refuses_more_than_255_entities_and_uint16_takes_them():
    H, W, M = 20, 20, 300
    ids = torch.arange(H * W, dtype=torch.int32).view(H, W) % M
    pred = EntityPrediction(id_map=ids, scores=torch.full((M,), 0.9), query_indices=torch.arange(M))
    with pytest.raises(UserError, match=r"frame\.jpg: 300 entities do not fit id_dtype=uint8"):
        OutputMode("official_demo", id_dtype="uint8").id_map(pred, where="frame.jpg")
    wide = OutputMode("official_demo").id_map(pred)
    assert wide.dtype == np.uint16 and int(wide.max()) == 300
    few = OutputMode("official_demo", id_dtype="uint8", min_area=2).id_map(pred)
    assert few.dtype == np.uint8 and int(few.max()) == 100  # 100 outputs have 2 pixels
    assert np.array_equal(few, OutputMode("official_demo", min_area=2).id_map(pred))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"format": "demo"}, "output_format='demo'"),
        ({"score_threshold": "high"}, "score_threshold='high'"),
        ({"score_threshold": 50}, "score_threshold=50"),
        ({"score_threshold": float("nan")}, "score_threshold=nan"),
        ({"min_area": -1}, "min_area=-1"),
        ({"min_area": 2.5}, "min_area=2.5"),
        ({"id_dtype": "int8"}, "id_dtype='int8'"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(UserError, match=match):
        OutputMode(**kwargs)


def test_of_accepts_names_dicts_and_refuses_unknown_keys():
    assert OutputMode.of("official_demo").threshold == 0.5
    assert OutputMode.of(None) == OutputMode()
    assert OutputMode.of({"format": "fused", "min_area": 4, "score_threshold": None}).min_area == 4
    with pytest.raises(UserError, match="min_ares"):
        OutputMode.of({"min_ares": 4})


def test_filters_keep_the_classes_of_a_class_aware_prediction():
    ids = torch.tensor([[0, 0, 1], [2, 2, -1]], dtype=torch.int32)
    pred = EntityPrediction(
        id_map=ids, scores=torch.tensor([0.9, 0.2, 0.7]), query_indices=torch.arange(3)
    )
    extra = {"labels": torch.tensor([4, 5, 6]), "category_ids": [40, 50, 60]}
    extra["category_names"] = ["sky", "cat", "road"]
    chosen = OutputMode(score_threshold=0.5).select({**pred, **extra})  # type: ignore[typeddict-item]
    assert chosen["id_map"].tolist() == [[0, 0, -1], [1, 1, -1]]
    assert chosen["labels"].tolist() == [4, 6]  # type: ignore[typeddict-item]
    assert chosen["category_ids"] == [40, 60]  # type: ignore[typeddict-item]
    assert chosen["category_names"] == ["sky", "road"]  # type: ignore[typeddict-item]
