"""Boundary IoU / boundary AP on known cases."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from _eval_synthetic import SHARED_GT, make_gt, perturbed_results
from helpers.shared import require_shared
from scipy import ndimage

from cropformer.evaluation.boundary_ap import (
    boundary_iou,
    boundary_width,
    mask_to_boundary,
    rle_to_boundary_rle,
)
from cropformer.evaluation.cocoeval import run_cocoeval
from cropformer.evaluation.entity_ap import evaluate_entity_results
from cropformer.evaluation.rle import decode_rle, encode_mask


def test_boundary_width_is_two_percent_of_diagonal():
    assert boundary_width(100, 100) == 3  # 0.02 * 141.4 = 2.83
    assert boundary_width(3000, 4000) == 100
    assert boundary_width(10, 10) == 1  # at least one pixel
    with pytest.raises(ValueError, match="dilation_ratio"):
        boundary_width(10, 10, 0.0)


def test_square_boundary_is_a_ring_of_width_d():
    m = np.zeros((100, 100), dtype=bool)
    m[40:50, 40:50] = True  # 10 x 10, d = 3 -> inner 4 x 4 survives erosion
    b = mask_to_boundary(m)
    assert b.sum() == 100 - 16
    assert not b[43:47, 43:47].any() and b[40:50, 40:50].sum() == 84 and not b[~m].any()


def test_mask_cut_by_image_border_has_boundary_there():
    m = np.ones((50, 50), dtype=bool)  # d = 1: the outermost ring only
    b = mask_to_boundary(m)
    assert b.sum() == 50 * 4 - 4
    assert b[0].all() and b[-1].all() and b[:, 0].all() and b[:, -1].all()
    assert not mask_to_boundary(np.zeros((8, 9), dtype=bool)).any()


def test_matches_iterated_3x3_erosion_reference():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for h, w, ratio in [(64, 80, 0.02), (120, 90, 0.05), (33, 200, 0.02)]:
        m = ndimage.binary_opening(rng.random((h, w)) > 0.35, iterations=1)
        # boundary-iou API definition: pad 1, erode d times with a 3x3 kernel, subtract
        d = boundary_width(h, w, ratio)
        padded = cv2.copyMakeBorder(m.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
        ref = m.astype(np.uint8) - eroded
        assert np.array_equal(mask_to_boundary(m, ratio), ref.astype(bool))


def test_rle_boundary_round_trip_and_boundary_iou():
    m = np.zeros((60, 70), dtype=bool)
    m[10:40, 5:50] = True
    rle_b = rle_to_boundary_rle(encode_mask(m))
    assert isinstance(rle_b["counts"], str)
    assert np.array_equal(decode_rle(rle_b), mask_to_boundary(m))
    assert boundary_iou(m, m) == 1.0
    shifted = np.roll(m, 2, axis=1)
    assert 0 < boundary_iou(m, shifted) < 1
    assert boundary_iou(np.zeros_like(m), np.zeros_like(m)) == 1.0
    with pytest.raises(ValueError, match="differ in size"):
        boundary_iou(m, m[:-1])


def _eroded_results(gt: dict, iterations: int) -> list[dict]:
    rng = np.random.default_rng(5)
    out = []
    for a in gt["annotations"]:
        m = decode_rle(a["segmentation"])
        if iterations > 0:  # scipy erodes to nothing for iterations=0
            m = ndimage.binary_erosion(m, iterations=iterations)
        out.append(
            {
                "image_id": a["image_id"],
                "category_id": 1,
                "score": float(rng.random()),
                "segmentation": encode_mask(m),
            }
        )
    return out


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_boundary_ap_perfect_and_eroded(backend):
    gt, _ = make_gt(num_images=3, seed=2, sizes=((150, 200),))
    perfect = evaluate_entity_results(gt, _eroded_results(gt, 0), backend=backend, boundary=True)
    assert perfect["boundary_AP"] == pytest.approx(100.0)
    eroded = evaluate_entity_results(gt, _eroded_results(gt, 1), backend=backend, boundary=True)
    assert eroded["boundary_AP"] <= eroded["AP"]
    assert eroded["boundary_AP"] < 100.0


def test_boundary_ap_equals_faster_coco_eval_builtin():
    fce = pytest.importorskip("faster_coco_eval")
    gt, _ = make_gt(num_images=3, seed=4, sizes=((150, 200), (97, 131)))
    results = _eroded_results(gt, 1)
    ours = evaluate_entity_results(gt, results, boundary=True)
    g = copy.deepcopy(gt)
    g["categories"] = [{"id": 1, "name": "thing"}]
    for a in g["annotations"]:
        a["category_id"] = 1
    coco = fce.COCO(g)
    ev = fce.COCOeval_faster(coco, coco.loadRes(json.loads(json.dumps(results))), "boundary")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    # every summary number, also those of pairs whose boundaries are skipped (mask IoU < 0.5)
    for key, i in (("AP", 0), ("AP50", 1), ("AP75", 2)):
        assert ours[f"boundary_{key}"] == pytest.approx(ev.stats[i] * 100, abs=1e-9), key
    ids = [im["id"] for im in g["images"]]
    summary = run_cocoeval(g, json.loads(json.dumps(results)), ids, iou_type="boundary")
    for key, i in (("APs", 3), ("APm", 4), ("APl", 5), ("AR1", 6), ("AR10", 7), ("AR100", 8)):
        if ev.stats[i] >= 0:
            assert summary[key] == pytest.approx(ev.stats[i] * 100, abs=1e-9), key


@pytest.mark.parametrize("source", ["shared", "labelme"])
def test_boundary_ap_equals_faster_coco_eval_builtin_on_real_annotations(source):
    fce = pytest.importorskip("faster_coco_eval")
    require_shared(SHARED_GT[source])
    gt = json.loads(SHARED_GT[source].read_text())
    results = perturbed_results(gt, seed=0)
    with pytest.warns(UserWarning, match="annotation id 0"):
        ours = evaluate_entity_results(gt, results, boundary=True)
    g = copy.deepcopy(gt)
    g["categories"] = [{"id": 1, "name": "thing"}]
    for a in g["annotations"]:
        a["category_id"] = 1
    dets = [
        {**{k: v for k, v in r.items() if k != "bbox"}, "category_id": 1}
        for r in copy.deepcopy(results)
    ]
    with pytest.warns(UserWarning, match="annotation id 0"):
        coco = fce.COCO(g)
    ev = fce.COCOeval_faster(coco, coco.loadRes(dets), "boundary")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ours["boundary_AP"] == pytest.approx(ev.stats[0] * 100, abs=1e-9)
    assert ours["boundary_AP"] < ours["AP"]
