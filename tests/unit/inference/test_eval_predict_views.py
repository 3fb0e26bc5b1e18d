"""eval.py and predict.py build identical views of every image, degenerate sizes included.

eval.py evaluates through the data module (``EntityDataModule.sampler_for("val")``, a
``ViewSampler(train=False)``, with ``inference.*`` mapped onto the data config by
``run.inference_settings.apply_to_data``); predict.py and the API build an ``EntityPredictor``
from the settings stored with the checkpoint (``api.settings.views_from_data_config`` of the
same data config, ``inference.*`` as overrides, ``run.inference_settings.view_settings``).
Both plan with ``InferenceViews.plan``: same boxes, same sizes, same pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from cropformer.api.settings import test_settings as merge_test_settings
from cropformer.api.settings import views_from_data_config
from cropformer.data.datamodule import EntityDataModule
from cropformer.data.dataset import EntityDataset
from cropformer.data.records import Record
from cropformer.data.views import OFFICIAL_TEST_VIEWS, InferenceViews
from cropformer.inference.predictor import EntityPredictor
from cropformer.run.inference_settings import apply_to_data, view_settings

# data configs as a checkpoint stores them (EntityDataModule arguments), and inference.* values
CASES = {
    "official": ({}, {}),
    "small sizes": ({"test_short_side": 32, "test_max_size": 64}, {}),
    "inference.* overrides": (
        {},
        {"short_side": 40, "max_size": 90, "num_crops": 2, "crop_ratio": 0.5},
    ),
    "crop views capped by train_max_size": (
        {"test_short_side": 48, "test_max_size": 200, "train_max_size": 60},
        {},
    ),
    "crop_max_size set": ({"test_short_side": 48, "crop_max_size": 50}, {}),
    "more crops than the mode has": ({"test_short_side": 32, "crop": {"num_test": 6}}, {}),
    "fixed8": ({"test_short_side": 32, "crop": {"mode": "fixed8", "num_test": 8}}, {}),
    "random mode evaluates the fixed crops": ({"crop": {"mode": "random"}}, {}),
    "no crops": ({"crop": {"num_test": 0}}, {}),
    "mode none": ({"crop": {"mode": "none"}}, {}),
    "cover_gap": ({"test_short_side": 32, "crop": {"ratio": 0.5, "cover_gap": True}}, {}),
    "other stride": ({"test_short_side": 32, "crop": {"ratio": 0.4, "stride_ratio": 0.3}}, {}),
}
# (H, W): degenerate (1 px sides, 2-3 px sides where crops coincide), panoramas, ordinary
SIZES = [
    (1, 1),
    (1, 2),
    (2, 1),
    (1, 5),
    (5, 1),
    (2, 2),
    (2, 3),
    (3, 3),
    (3, 7),
    (4, 4),
    (7, 3),
    (1, 5000),
    (5000, 1),
    (13, 9),
    (37, 53),
    (100, 17),
    (420, 512),
    (3000, 4000),
    (15000, 800),
]


def _eval_views(data: dict, given: dict):
    cfg = OmegaConf.create({"data": data, "inference": given})
    apply_to_data(cfg, training=False)  # what eval.py does
    module = EntityDataModule(**OmegaConf.to_container(cfg.data))  # type: ignore[arg-type]
    return module.sampler_for("val")


def _predictor(data: dict, given: dict) -> EntityPredictor:
    overrides = view_settings(OmegaConf.create({"inference": given}))  # what predict.py does
    settings = merge_test_settings(views_from_data_config(data), **overrides)
    return EntityPredictor(nn.Identity(), lambda outputs, batch: [], **settings)


@pytest.mark.parametrize("case", sorted(CASES))
def test_eval_and_predict_plan_the_same_views_for_every_size(case):
    data, test = CASES[case]
    sampler = _eval_views(data, test)
    predictor = _predictor(data, test)
    assert sampler.test_views() == predictor.test_views or (
        # a crop-less sampler keeps its (ignored) mode name; the views are what matters
        sampler.test_views().num_views == predictor.test_views.num_views == 1
    )
    rng = np.random.default_rng(0)
    for h, w in SIZES:
        draw = sampler.draw(h, w, rng)
        _, planned = predictor.test_views.plan(h, w)
        assert [(v.box, v.size) for v in draw.views] == [(v.box, v.size) for v in planned], (h, w)
        assert len(draw.views) == predictor.test_views.num_views  # T is fixed for every image


@pytest.mark.parametrize("case", ["official", "small sizes", "more crops than the mode has"])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (3, 3), (1, 40), (37, 53), (64, 48)])
def test_eval_and_predict_samples_are_identical_pixels_included(tmp_path, case, size):
    data, test = CASES[case]
    h, w = size
    pixels = np.random.default_rng(h * 100 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = tmp_path / "image.png"  # lossless: both paths decode the same pixels
    Image.fromarray(pixels).save(path)
    record = Record(image_path=str(path), file_name="image.png", height=h, width=w, image_id=7)
    dataset = EntityDataset([record], _eval_views(data, test), with_targets=False)
    ours = dataset[0]
    theirs = _predictor(data, test).views(pixels)
    assert torch.equal(ours["boxes"], theirs["boxes"])
    assert len(ours["views"]) == len(theirs["views"])
    for a, b in zip(ours["views"], theirs["views"]):
        assert torch.equal(a, b)


def test_the_official_views_are_one_frozen_object():
    assert InferenceViews() == OFFICIAL_TEST_VIEWS
    assert (OFFICIAL_TEST_VIEWS.short_side, OFFICIAL_TEST_VIEWS.max_size) == (800, 1333)
    assert (OFFICIAL_TEST_VIEWS.num_crops, OFFICIAL_TEST_VIEWS.crop_mode) == (4, "fixed")
    assert (OFFICIAL_TEST_VIEWS.crop_ratio, OFFICIAL_TEST_VIEWS.stride_ratio) == (0.7, 0.6)
    assert OFFICIAL_TEST_VIEWS.crop_max_size == 1333  # MAX_SIZE_TRAIN caps crops at test
    with pytest.raises(AttributeError):
        OFFICIAL_TEST_VIEWS.short_side = 640  # type: ignore[misc]
    # what the data module, the predictor and the API default to
    assert EntityDataModule().sampler_for("val").test_views() == OFFICIAL_TEST_VIEWS
    predictor = EntityPredictor(nn.Identity(), lambda outputs, batch: [])
    assert predictor.test_views == InferenceViews(crop_max_size=None)  # None = max_size = 1333
    assert _predictor({}, {}).test_views == OFFICIAL_TEST_VIEWS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_crops": -1}, "num_crops=-1 must be >= 0"),
        ({"crop_ratio": 1.5}, r"crop_ratio=1.5 must lie in \(0, 1\]"),
        ({"stride_ratio": 0.0}, "stride_ratio=0.0 must be > 0"),
        ({"crop_mode": "corners"}, "unknown crop mode 'corners'"),
        ({"short_side": 0}, "short_side >= 1"),
    ],
)
def test_bad_view_settings_are_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InferenceViews(**kwargs)


def test_fewer_boxes_than_crops_repeat_in_order():
    """Official: crops 0..num_crops-1 in fixed order; a 1-px-wide image has 2 fixed boxes, which
    repeat so T stays 1 + num_crops (the official mapper asserts here)."""
    idx, boxes = OFFICIAL_TEST_VIEWS.crops(40, 1)
    assert idx == (0, 1, 0, 1)
    assert boxes == [(0, 0, 1, 28), (0, 12, 1, 40), (0, 0, 1, 28), (0, 12, 1, 40)]
    assert OFFICIAL_TEST_VIEWS.crops(1, 1) == ((0, 0, 0, 0), [(0, 0, 1, 1)] * 4)
