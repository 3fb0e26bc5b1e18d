"""Class-aware metrics: PQ against the COCO panopticapi algorithm on the shared COCO panoptic
sample and against torchmetrics' ``PanopticQuality`` (an installed peer; where the two rules
agree), mIoU against torchmetrics' Jaccard index, instance AP against pycocotools' COCOeval.

panopticapi is not on PyPI (and not installed here), so ``_panopticapi_pq`` below re-states its
``pq_compute_single_core`` and ``PQStat.pq_average`` (commit 7bb4655) line by line on the
in-memory PNG ids and jsons: uint64 ``gt * 256^3 + pred`` pairs, ground-truth areas from the json,
crowd per category (the last one wins), the 0.5 VOID+crowd rule for false positives.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import torch
from helpers.coco_panoptic_sample import build_panoptic_json, png_ids

from cropformer.data.formats.coco_panoptic import read_coco_panoptic
from cropformer.data.formats.entityseg import read_categories
from cropformer.evaluation.class_gt import instance_annotations, record_ground_truth
from cropformer.evaluation.instance_ap import InstanceAPMetric
from cropformer.evaluation.panoptic_quality import PanopticQualityMetric
from cropformer.evaluation.semantic_iou import IGNORE, SemanticIoUMetric

OFFSET = 256 * 256 * 256
VOID = 0


# ------------------------------------------------------------------ panopticapi, re-stated
def _pq_single_image(pan_gt, gt_ann, pan_pred, pred_ann, categories, pq_stat):
    gt_segms = {el["id"]: dict(el) for el in gt_ann["segments_info"]}
    pred_segms = {el["id"]: dict(el) for el in pred_ann["segments_info"]}
    pred_labels_set = {el["id"] for el in pred_ann["segments_info"]}
    labels, labels_cnt = np.unique(pan_pred, return_counts=True)
    for label, label_cnt in zip(labels, labels_cnt):
        if label not in pred_segms:
            if label == VOID:
                continue
            raise KeyError(f"segment {label} in PNG and not in JSON")
        pred_segms[label]["area"] = label_cnt
        pred_labels_set.remove(label)
        if pred_segms[label]["category_id"] not in categories:
            raise KeyError("unknown category")
    if len(pred_labels_set) != 0:
        raise KeyError("segments in JSON and not in PNG")
    pan_gt_pred = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
    gt_pred_map = {}
    labels, labels_cnt = np.unique(pan_gt_pred, return_counts=True)
    for label, intersection in zip(labels, labels_cnt):
        gt_id = label // OFFSET
        pred_id = label % OFFSET
        gt_pred_map[(gt_id, pred_id)] = intersection
    gt_matched, pred_matched = set(), set()
    for label_tuple, intersection in gt_pred_map.items():
        gt_label, pred_label = label_tuple
        if gt_label not in gt_segms or pred_label not in pred_segms:
            continue
        if gt_segms[gt_label]["iscrowd"] == 1:
            continue
        if gt_segms[gt_label]["category_id"] != pred_segms[pred_label]["category_id"]:
            continue
        union = (
            pred_segms[pred_label]["area"]
            + gt_segms[gt_label]["area"]
            - intersection
            - gt_pred_map.get((VOID, pred_label), 0)
        )
        iou = intersection / union
        if iou > 0.5:
            pq_stat[gt_segms[gt_label]["category_id"]]["tp"] += 1
            pq_stat[gt_segms[gt_label]["category_id"]]["iou"] += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)
    crowd_labels_dict = {}
    for gt_label, gt_info in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt_info["iscrowd"] == 1:
            crowd_labels_dict[gt_info["category_id"]] = gt_label
            continue
        pq_stat[gt_info["category_id"]]["fn"] += 1
    for pred_label, pred_info in pred_segms.items():
        if pred_label in pred_matched:
            continue
        intersection = gt_pred_map.get((VOID, pred_label), 0)
        if pred_info["category_id"] in crowd_labels_dict:
            intersection += gt_pred_map.get(
                (crowd_labels_dict[pred_info["category_id"]], pred_label), 0
            )
        if intersection / pred_info["area"] > 0.5:
            continue
        pq_stat[pred_info["category_id"]]["fp"] += 1


def _pq_average(pq_stat, categories, isthing):
    pq, sq, rq, n = 0.0, 0.0, 0.0, 0
    for label, label_info in categories.items():
        if isthing is not None and label_info["isthing"] != isthing:
            continue
        iou, tp, fp, fn = (pq_stat[label][k] for k in ("iou", "tp", "fp", "fn"))
        if tp + fp + fn == 0:
            continue
        n += 1
        pq += iou / (tp + 0.5 * fp + 0.5 * fn)
        sq += iou / tp if tp != 0 else 0
        rq += tp / (tp + 0.5 * fp + 0.5 * fn)
    return {"pq": pq / n * 100, "sq": sq / n * 100, "rq": rq / n * 100} if n else None


def _panopticapi_pq(gt_json, gt_maps, pred_json, pred_maps, categories):
    pq_stat = defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
    preds = {a["image_id"]: a for a in pred_json["annotations"]}
    for gt_ann in gt_json["annotations"]:
        image_id = gt_ann["image_id"]
        _pq_single_image(
            gt_maps[image_id], gt_ann, pred_maps[image_id], preds[image_id], categories, pq_stat
        )
    out = {}
    for name, isthing in (("", None), ("_th", 1), ("_st", 0)):
        res = _pq_average(pq_stat, categories, isthing)
        for k, v in res.items():
            out[f"{k}{name}"] = v
    return out


# ------------------------------------------------------------------ a prediction to score
def _perturbed(gt_map, segments, cats, rng):
    """A panoptic prediction from the ground truth: kept, dropped, relabelled, shifted and
    eroded segments, crowd regions predicted as their class, and a segment on VOID."""
    ids = [c["id"] for c in cats]
    pred = np.zeros_like(gt_map)
    info = []
    for i, s in enumerate(segments):
        mask = gt_map == s["id"]
        action = rng.choice(["keep", "keep", "drop", "relabel", "shift", "erode"])
        cat = s["category_id"]
        if action == "drop":
            continue
        if action == "relabel":
            cat = int(rng.choice(ids))
        if action == "shift":
            mask = np.roll(mask, int(rng.integers(3, 40)), axis=1)
        if action == "erode":
            ys, xs = np.nonzero(mask)
            mask = mask & (np.arange(mask.shape[0])[:, None] < np.median(ys))
        mask &= pred == 0
        if not mask.any():
            continue
        pred[mask] = 1000 + i
        info.append({"id": 1000 + i, "category_id": cat})
    void = (gt_map == 0) & (pred == 0)
    if void.any():
        pred[void] = 999
        info.append({"id": 999, "category_id": int(rng.choice(ids))})
    return pred, info


@pytest.fixture(scope="module")
def sample(tmp_path_factory, shared_dir):
    paths = build_panoptic_json(shared_dir, tmp_path_factory.mktemp("pan") / "panoptic.json")
    gt_json = json.loads(paths["json"].read_text())
    gt_maps = {
        a["image_id"]: png_ids(paths["png_dir"] / a["file_name"]) for a in gt_json["annotations"]
    }
    records = read_coco_panoptic(paths["json"], paths["png_dir"], paths["image_root"])
    return paths, gt_json, gt_maps, records, read_categories(paths["categories"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pq_equals_panopticapi_on_the_coco_sample(sample, seed):
    _paths, gt_json, gt_maps, records, cats = sample
    rng = np.random.default_rng(seed)
    pred_json, pred_maps = {"annotations": []}, {}
    for a in gt_json["annotations"]:
        pred, info = _perturbed(
            gt_maps[a["image_id"]], a["segments_info"], gt_json["categories"], rng
        )
        pred_maps[a["image_id"]] = pred
        pred_json["annotations"].append({"image_id": a["image_id"], "segments_info": info})
    categories = {c["id"]: c for c in gt_json["categories"]}
    ref = _panopticapi_pq(gt_json, gt_maps, pred_json, pred_maps, categories)

    metric = PanopticQualityMetric(cats.isthing)
    metric_from_records = PanopticQualityMetric(cats.isthing)
    for a, rec in zip(pred_json["annotations"], records):
        pred_segments = [
            {"id": s["id"], "category": cats.contiguous(s["category_id"])}
            for s in a["segments_info"]
        ]
        gt_ann = next(g for g in gt_json["annotations"] if g["image_id"] == a["image_id"])
        gt_segments = [
            {"id": s["id"], "category": cats.contiguous(s["category_id"]), "iscrowd": s["iscrowd"]}
            for s in gt_ann["segments_info"]
        ]
        pred = torch.from_numpy(pred_maps[a["image_id"]])
        metric.update(
            a["image_id"],
            pred,
            pred_segments,
            torch.from_numpy(gt_maps[a["image_id"]]),
            gt_segments,
        )
        # the same ground truth decoded from the reader's records (segment ids renumbered)
        gt = record_ground_truth(rec, cats)
        metric_from_records.update(
            a["image_id"], pred, pred_segments, torch.from_numpy(gt.panoptic), gt.segments
        )
    ours = metric.compute()
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
        assert metric_from_records.compute()[key] == pytest.approx(value, abs=1e-9), key
    assert ours["pq_num_images"] == 2
    assert 0 < ours["pq"] < 100  # the perturbations cost something, not everything


def _no_void_prediction(gt_map, segments, isthing_of, rng):
    """A prediction on which panopticapi's and torchmetrics' PQ rules coincide: every pixel
    predicted (torchmetrics also forgives a ground-truth segment mostly on predicted VOID, which
    panopticapi counts as a false negative) and one segment per stuff class (torchmetrics merges
    a stuff class's segments). Things are kept, shifted, eroded, split or given another thing
    class; stuff is kept or shifted; what is left takes a stuff class."""
    things = [c for c, t in isthing_of.items() if t]
    stuff = [c for c, t in isthing_of.items() if not t]
    pred = np.zeros_like(gt_map)
    info: dict[int, int] = {}  # segment id -> category
    stuff_id: dict[int, int] = {}
    for i, s in enumerate(segments):
        mask = (gt_map == s["id"]) & (pred == 0)
        cat, seg_id = s["category_id"], 1000 + i
        thing = isthing_of[cat]
        action = rng.choice(
            ["keep", "shift", "erode", "split", "relabel"] if thing else ["keep"] * 2 + ["shift"]
        )
        if action == "shift":
            mask = np.roll(gt_map == s["id"], int(rng.integers(3, 40)), axis=1) & (pred == 0)
        if action == "erode" and mask.any():
            mask &= np.arange(mask.shape[0])[:, None] < np.median(np.nonzero(mask)[0])
        if action == "relabel":
            cat = int(rng.choice(things))
        if not thing:
            seg_id = stuff_id.setdefault(cat, seg_id)
        if not mask.any():
            continue
        if action == "split":
            top = mask & (np.arange(mask.shape[0])[:, None] < np.median(np.nonzero(mask)[0]))
            pred[top], info[2000 + i] = 2000 + i, cat
            mask &= ~top
        pred[mask], info[seg_id] = seg_id, cat
    rest = pred == 0
    if rest.any():
        cat = int(rng.choice(stuff))
        seg_id = stuff_id.setdefault(cat, 999)
        pred[rest], info[seg_id] = seg_id, cat
    return pred, [{"id": k, "category_id": v} for k, v in info.items() if (pred == k).any()]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pq_equals_torchmetrics_panoptic_quality(sample, seed):
    from torchmetrics.detection import PanopticQuality

    _paths, gt_json, gt_maps, _records, cats = sample
    isthing_of = {c.id: c.isthing for c in cats}
    peer = PanopticQuality(
        things={c.id for c in cats if c.isthing},
        stuffs={c.id for c in cats if not c.isthing},
        return_sq_and_rq=True,
    )
    ours = PanopticQualityMetric(cats.isthing)
    rng = np.random.default_rng(seed)
    for ann in gt_json["annotations"]:
        # torchmetrics has no crowd: crowd regions become VOID in the ground truth of both
        gt_map = gt_maps[ann["image_id"]].copy()
        segments = [s for s in ann["segments_info"] if not s["iscrowd"]]
        gt_map[~np.isin(gt_map, [s["id"] for s in segments])] = VOID
        pred, pred_info = _no_void_prediction(gt_map, segments, isthing_of, rng)
        ours.update(
            ann["image_id"],
            torch.from_numpy(pred),
            [{"id": s["id"], "category": cats.contiguous(s["category_id"])} for s in pred_info],
            torch.from_numpy(gt_map),
            [
                {"id": s["id"], "category": cats.contiguous(s["category_id"]), "iscrowd": 0}
                for s in segments
            ],
        )

        def pairs(id_map, infos):  # (H, W, 2) (category id, segment id); VOID: category 0
            lut = {s["id"]: s["category_id"] for s in infos}
            cat = np.vectorize(lambda i: lut.get(int(i), 0))(id_map)
            return torch.from_numpy(np.stack([cat, id_map], -1).astype(np.int64))[None]

        peer.update(pairs(pred, pred_info), pairs(gt_map, segments))
    pq, sq, rq = (float(v) * 100.0 for v in peer.compute())
    out = ours.compute()
    # torchmetrics computes IoUs and the per-class ratios in float32 (ours: float64)
    for key, value in (("pq", pq), ("sq", sq), ("rq", rq)):
        assert out[key] == pytest.approx(value, rel=1e-6), key
    assert 0 < out["pq"] < 100  # the perturbations cost something, not everything


def test_pq_perfect_and_each_image_once(sample):
    _paths, gt_json, gt_maps, records, cats = sample
    metric = PanopticQualityMetric(cats.isthing)
    for rec in records + records[:1]:  # a padded sampler repeats an image: counted once
        gt = record_ground_truth(rec, cats)
        pred_segments = [s for s in gt.segments if not s["iscrowd"]]
        pred = torch.from_numpy(
            np.where(np.isin(gt.panoptic, [s["id"] for s in pred_segments]), gt.panoptic, 0)
        )
        metric.update(rec.image_id, pred, pred_segments, torch.from_numpy(gt.panoptic), gt.segments)
    out = metric.compute()
    assert out["pq"] == pytest.approx(100.0) and out["pq_num_images"] == 2
    with pytest.raises(ValueError, match="have an entry but no pixels"):
        metric.update(1, torch.zeros(4, 4), [{"id": 3, "category": 0}], torch.zeros(4, 4), [])


def test_semantic_miou_matches_torchmetrics_jaccard(sample):
    from torchmetrics.classification import MulticlassJaccardIndex

    _paths, _gt_json, _gt_maps, records, cats = sample
    rng = np.random.default_rng(0)
    metric = SemanticIoUMetric(len(cats))
    ref = MulticlassJaccardIndex(num_classes=len(cats), average="none", ignore_index=IGNORE)
    present = torch.zeros(len(cats), dtype=torch.bool)
    for rec in records + records[:1]:
        gt = torch.from_numpy(record_ground_truth(rec, cats).semantic)
        pred = gt.clone()
        pred[pred == IGNORE] = 0
        noise = torch.from_numpy(rng.random(gt.shape) < 0.2)
        pred[noise] = torch.from_numpy(rng.integers(0, len(cats), gt.shape))[noise]
        metric.update(rec.image_id, pred, gt)
        if rec is not records[0] or not present.any():
            ref.update(pred[None], gt[None])
            present |= torch.bincount(gt[gt != IGNORE].flatten(), minlength=len(cats)) > 0
    out = metric.compute()
    iou = ref.compute()
    assert out["miou"] == pytest.approx(100.0 * float(iou[present].mean()), abs=1e-4)  # fp32 there
    assert out["sem_num_images"] == 2 and 0 < out["miou"] < 100


def test_instance_ap_equals_pycocotools(sample):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _paths, _gt_json, _gt_maps, records, cats = sample
    rng = np.random.default_rng(1)
    images, anns, dets, preds = [], [], [], {}
    for rec in records:
        gt = record_ground_truth(rec, cats)
        images.append({"id": rec.image_id, "height": rec.height, "width": rec.width})
        anns += instance_annotations(gt, rec.image_id, cats, first_id=len(anns) + 1)
        masks, scores, labels = [], [], []
        for s in gt.segments:
            if not s["isthing"] or rng.random() < 0.2:
                continue
            m = gt.panoptic == s["id"]
            if rng.random() < 0.3:
                m = np.roll(m, 15, axis=0)
            label = s["category"] if rng.random() < 0.8 else 0
            masks.append(m)
            scores.append(float(rng.random()))
            labels.append(label)
            from cropformer.evaluation.rle import encode_mask

            dets.append(
                {
                    "image_id": rec.image_id,
                    "category_id": cats.ids[label],
                    "segmentation": encode_mask(m),
                    "score": scores[-1],
                }
            )
        preds[rec.image_id] = {
            "masks": torch.from_numpy(np.stack(masks)),
            "scores": torch.tensor(scores),
            "labels": torch.tensor(labels),
        }
    gt_dict = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c.id, "name": c.name} for c in cats if c.isthing],
    }
    coco = COCO()
    coco.dataset = json.loads(json.dumps(gt_dict))
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(dets))), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    for backend in ("pycocotools", "faster_coco_eval"):
        metric = InstanceAPMetric(lambda: gt_dict, cats.ids, backend=backend)
        for image_id, p in preds.items():
            metric.update([p], [image_id])
        out = metric.compute()
        assert out["ap"] == pytest.approx(100.0 * ev.stats[0], abs=1e-6)
        assert out["ap50"] == pytest.approx(100.0 * ev.stats[1], abs=1e-6)
        assert 0 < out["ap"] < 100
