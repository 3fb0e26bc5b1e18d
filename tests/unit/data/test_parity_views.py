"""Views against the official mapper outputs in ../shared/reference/parity (README §5, §7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cropformer.data.dataset import EntityDataset
from cropformer.data.decode import label_source_for, load_image
from cropformer.data.records import Entity, Record
from cropformer.data.view_sampler import SampleDraw, ViewSampler
from cropformer.data.views import (
    InferenceViews,
    build_eval_views,
    corner_crop_boxes,
    plan_views,
    render_image_view,
    render_label_view,
    to_chw_tensor,
)

PARITY = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference" / "parity"

pytestmark = pytest.mark.skipif(
    not (PARITY / "eval_inputs.pth").is_file(),
    reason=f"parity bundle not found at {PARITY} (CI keeps shared/ beside the checkout)",
)


def _load(name: str) -> dict:
    return torch.load(PARITY / name, weights_only=True)


# the bundle's official config: MIN_SIZE_TEST 256, everything else official
BUNDLE_VIEWS = InferenceViews(short_side=256)


def _eval_path_views(image_path: Path, height: int, width: int) -> dict:
    """The views eval.py evaluates: the data module's ViewSampler(train=False) + EntityDataset."""
    record = Record(
        image_path=str(image_path),
        file_name=image_path.name,
        height=height,
        width=width,
        image_id=1,
    )
    sampler = ViewSampler(train=False, short_sides=(256,), num_crops=4, crop_max_size=1333)
    assert sampler.test_views() == BUNDLE_VIEWS
    sample = EntityDataset([record], sampler, with_targets=False).load(0)
    return {"images": sample["views"], "boxes": sample["boxes"]}


@pytest.mark.parametrize("path", ["predict", "eval"])
def test_eval_views_match_official_mapper(path):
    """predict.py / the API (build_eval_views) and eval.py (ViewSampler) against the official
    EntityCropDatasetMapper(is_train=False) output."""
    ref = _load("eval_inputs.pth")
    out = ref["mapper_output"]
    image_path = PARITY / ref["dataset_dict"]["file_name"]
    image = load_image(image_path)
    assert image.shape == (420, 512, 3)
    if path == "predict":
        views = build_eval_views(image, BUNDLE_VIEWS)
    else:
        views = _eval_path_views(image_path, 420, 512)
    official = [out["image"]] + list(out["image_crop"])
    assert len(views["images"]) == len(official) == 5
    for mine, theirs in zip(views["images"], official):
        assert mine.shape == theirs.shape
        mad = (mine.float() - theirs.float()).abs().mean().item()
        assert mad <= 1.0, mad
        assert torch.equal(mine, theirs)  # in fact bit-exact: same PIL bilinear on a PNG
    assert torch.equal(views["boxes"][1:].long(), out["crop_region"].long())
    assert views["boxes"][0].tolist() == [0, 0, 512, 420]
    sizes = [list(v.shape[1:]) for v in views["images"]]
    assert sizes == [list(s) for s in ref["image_sizes"]]


def _record(dd: dict) -> Record:
    ents = [
        Entity(segmentation=a["segmentation"], iscrowd=bool(a["iscrowd"]), ann_id=i)
        for i, a in enumerate(dd["annotations"])
    ]
    return Record(
        image_path=str(PARITY / dd["file_name"]),
        file_name=dd["file_name"],
        height=dd["height"],
        width=dd["width"],
        image_id=dd["image_id"],
        entities=ents,
    )


@pytest.mark.parametrize("index", [0, 1])
def test_train_views_and_masks_match_official_mapper(index):
    ref = _load("train_inputs.pth")
    dd, out = ref["dataset_dicts"][index], ref["mapper_outputs"][index]
    rec = _record(dd)
    flip = index == 0  # README §7: A flipped (draw 0.9136 >= 0.5), B not
    crop_idx = out["crop_indexes"][0]
    boxes = corner_crop_boxes(rec.height, rec.width)
    assert list(boxes[crop_idx]) == out["crop_region"][0].tolist()
    views = plan_views(rec.height, rec.width, [boxes[crop_idx]], short_side=256, max_size=1333)
    draw = SampleDraw(flip, 256, (crop_idx,), tuple(views))
    pil = Image.fromarray(load_image(rec.image_path))
    if flip:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    source = label_source_for(rec, rec.non_crowd())
    official_imgs = [out["image"], out["image_crop"][0]]
    official_inst = [out["instances"], out["instances_crop"][0]]
    for t, v in enumerate(draw.views):
        img = to_chw_tensor(render_image_view(pil, (rec.height, rec.width), v))
        assert img.shape == official_imgs[t].shape
        assert torch.equal(img, official_imgs[t])  # full decode: bit-exact PIL bilinear
        lm = render_label_view(source, v, flip=flip)
        theirs = official_inst[t]["gt_masks_id_map"].numpy().astype(np.int32)
        np.testing.assert_array_equal(lm, theirs)  # PIL-nearest emulation is exact
        valid = np.bincount(lm.ravel() + 1, minlength=source.num_entities + 1)[1:] > 0
        np.testing.assert_array_equal(valid, official_inst[t]["gt_boxes_valid"].numpy() == 1)
