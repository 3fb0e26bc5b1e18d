"""Entity AP metric: known values, category collapsing, agreement with stock pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import torch
from _eval_synthetic import SHARED_GT, make_gt, perfect_prediction, perturbed_results
from helpers.shared import require_shared
from scipy import ndimage

from cropformer.cli.entity_ap import main
from cropformer.evaluation.entity_ap import evaluate_entity_results, load_gt
from cropformer.evaluation.metric import EntityAPMetric
from cropformer.evaluation.rle import encode_mask

BACKENDS = ["faster_coco_eval", "pycocotools"]


@pytest.fixture
def gt_file(tmp_path):
    gt, maps = make_gt(num_images=4, seed=0, sizes=((120, 160), (90, 70)))
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path, gt, maps


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_predictions_give_100(gt_file, backend):
    path, _, maps = gt_file
    metric = EntityAPMetric(str(path), backend=backend, boundary=True)
    ids = sorted(maps)
    metric.update([perfect_prediction(maps[i]) for i in ids[:2]], torch.tensor(ids[:2]))
    metric.update([perfect_prediction(maps[i]) for i in ids[2:]], ids[2:])
    out = metric.compute()
    for key in ("entity_ap", "entity_ap50", "entity_ap75", "entity_ar100", "boundary_ap"):
        assert out[key] == pytest.approx(100.0, abs=1e-9), key
    assert out["entity_num_images"] == 4
    results = metric.results()
    assert len(results) == sum(int(m.max()) + 1 for m in maps.values())
    assert all(
        r["category_id"] == 1 and isinstance(r["segmentation"]["counts"], str) for r in results
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_predictions_give_0(gt_file, backend):
    path, _, maps = gt_file
    metric = EntityAPMetric(str(path), backend=backend)
    for i, ids in maps.items():
        empty = {
            "id_map": torch.full(ids.shape, -1, dtype=torch.int32),
            "scores": torch.zeros(3),
            "query_indices": torch.arange(3),
        }
        metric.update([empty], [i])
    assert metric.results() == []
    out = metric.compute()
    assert out["entity_ap"] == 0.0 and out["entity_ap50"] == 0.0 and out["entity_ar100"] == 0.0


def test_many_categories_score_like_single_category(gt_file):
    path, gt, maps = gt_file
    rng = np.random.default_rng(1)
    results = []
    for image_id, ids in maps.items():
        for k in range(int(ids.max()) + 1):
            m = ndimage.binary_dilation(ids == k, iterations=int(rng.integers(0, 3)))
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 7,
                    "score": float(rng.random()),
                    "segmentation": encode_mask(m),
                }
            )
    single = copy.deepcopy(gt)
    for a in single["annotations"]:
        a["category_id"] = 1
    single["categories"] = [{"id": 1, "name": "thing"}]
    a = evaluate_entity_results(gt, results)
    b = evaluate_entity_results(single, results)
    assert a == b
    assert 0 < a["AP"] < 100
    assert load_gt(gt)["categories"] == [{"id": 1, "name": "entity", "supercategory": "entity"}]
    assert (
        gt["annotations"][0]["category_id"] != 1
        or len({x["category_id"] for x in gt["annotations"]}) > 1
    )  # untouched


def _stock_pycocotools(gt: dict, results: list[dict]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = copy.deepcopy(gt)
    gt["categories"] = [{"id": 1, "name": "thing"}]
    for a in gt["annotations"]:
        a["category_id"] = 1
    dets = copy.deepcopy(results)
    for d in dets:
        d["category_id"] = 1
        d.pop("bbox", None)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", ["shared", "labelme", "synthetic"])
def test_equals_stock_pycocotools_with_collapsed_categories(backend, source, gt_file):
    if source in SHARED_GT:
        require_shared(SHARED_GT[source])
        gt = json.loads(SHARED_GT[source].read_text())
    else:
        gt = gt_file[1]
    for seed in (0, 1):
        results = perturbed_results(gt, seed)
        with (
            pytest.warns(UserWarning, match="annotation id 0")
            if (backend == "faster_coco_eval" and source != "synthetic")
            else contextlib.nullcontext()
        ):  # the shared json has an annotation id 0
            ours = evaluate_entity_results(gt, results, backend=backend)
        stock = _stock_pycocotools(gt, results)
        keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"]
        for i, key in enumerate(keys):
            want = stock[i] * 100 if stock[i] >= 0 else math.nan
            if math.isnan(want):
                assert math.isnan(ours[key]), key
            else:
                assert ours[key] == pytest.approx(want, abs=1e-9), key
        assert 5 < ours["AP"] < 95


def test_only_seen_images_are_evaluated(gt_file):
    path, _, maps = gt_file
    ids = sorted(maps)
    metric = EntityAPMetric(str(path))
    metric.update([perfect_prediction(maps[ids[0]])], [ids[0]])
    assert metric.compute()["entity_ap"] == pytest.approx(100.0)  # other images not counted
    metric.reset()
    metric.update([perfect_prediction(maps[ids[1]])], [ids[1]])
    metric.update([perfect_prediction(maps[ids[1]])], [ids[1]])  # duplicate: counted once
    assert metric.num_images == 1
    assert len(metric.results()) == int(maps[ids[1]].max()) + 1


def test_ar100_at_iou_50(gt_file):
    path, gt, maps = gt_file
    # predictions with IoU in (0.5, 0.75) for every entity: AR@100 (IoU .5) = 100, AP75 = 0
    results = []
    for image_id, ids in maps.items():
        for k in range(int(ids.max()) + 1):
            m = ids == k
            grown = m | np.roll(m, 1, axis=1) | np.roll(m, -1, axis=1)
            shrunk = ndimage.binary_erosion(m, iterations=1)
            cand = grown if (m.sum() / grown.sum()) > 0.5 else shrunk
            iou = (m & cand).sum() / (m | cand).sum()
            assert iou > 0.5
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "score": 0.5,
                    "segmentation": encode_mask(cand),
                }
            )
    out = evaluate_entity_results(str(path), results)
    assert out["AR100_50"] == pytest.approx(100.0)
    assert out["AR100"] < 100.0


def test_bad_inputs_raise(tmp_path, gt_file):
    path, gt, maps = gt_file
    with pytest.raises(FileNotFoundError, match="nope.json"):
        EntityAPMetric(str(tmp_path / "nope.json"))
    with pytest.raises(ValueError, match="backend"):
        EntityAPMetric(str(path), backend="detectron2")
    metric = EntityAPMetric(str(path))
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()
    with pytest.raises(ValueError, match="image ids"):
        metric.update([perfect_prediction(maps[100])], [100, 101])
    metric.update([perfect_prediction(maps[100])], [999])
    with pytest.raises(ValueError, match="not in the ground truth"):
        metric.compute()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations"):
        load_gt(bad)
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_entity_results(gt, [{"image_id": 100, "bbox": [0, 0, 1, 1], "score": 1.0}])


def test_cli_prints_table_and_json_last_line(gt_file, tmp_path, capsys):
    path, gt, maps = gt_file
    results = []
    for image_id, ids in maps.items():
        for k in range(int(ids.max()) + 1):
            # official results carry a zero bbox and category 0: must be ignored
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 0,
                    "bbox": [0.0, 0.0, 0.0, 0.0],
                    "score": 0.9,
                    "segmentation": encode_mask(ids == k),
                }
            )
    res_path = tmp_path / "coco_instances_results.json"
    res_path.write_text(json.dumps(results))
    main(["--gt", str(path), "--results", str(res_path), "--boundary"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "AP50" in lines[0] or any("AP50" in x for x in lines[:-1])
    last = json.loads(lines[-1])
    assert set(last) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "boundary_AP"}
    assert last["AP"] == pytest.approx(100.0) and last["boundary_AP"] == pytest.approx(100.0)
    main(["--gt", str(path), "--results", str(res_path), "--backend", "pycocotools"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["boundary_AP"] is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_annotation_id_zero_quirk_and_renumbering(gt_file, backend):
    _, gt, maps = gt_file
    gt = copy.deepcopy(gt)
    gt["annotations"][0]["id"] = 0  # stock COCOeval can never match an annotation with id 0
    results = [
        {
            "image_id": a["image_id"],
            "category_id": 1,
            "score": 0.5,
            "segmentation": a["segmentation"],
        }
        for a in gt["annotations"]
    ]
    ctx = (
        pytest.warns(UserWarning, match="id 0")
        if backend == "faster_coco_eval"
        else contextlib.nullcontext()
    )
    with ctx:
        stock = evaluate_entity_results(gt, results, backend=backend)
    assert stock["AP"] < 100.0
    assert stock["AP"] == pytest.approx(_stock_pycocotools(gt, results)[0] * 100, abs=1e-9)
    fixed = evaluate_entity_results(
        gt, results, backend=backend, renumber_ann_ids=True, boundary=True
    )
    assert fixed["AP"] == pytest.approx(100.0) and fixed["boundary_AP"] == pytest.approx(100.0)
