"""Class-aware tasks end to end: `train.py task=panoptic data=coco_panoptic` on the shared COCO
panoptic sample (2 images, read in place) with a tiny CropFormer: PQ, AP and mIoU reported; the
checkpoint carries the 133 classes; eval.py's AP equals stock pycocotools on its results json."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _integration_helpers import run_script
from helpers.coco_panoptic_sample import build_panoptic_json

from cropformer.cli.eval import evaluate
from cropformer.cli.train import train
from cropformer.run.config import compose_config


def _sample_overrides(paths: dict[str, Path]) -> list[str]:
    png = paths["png_dir"]
    return [
        f"data.image_root={paths['image_root']}",
        "data.image_dirs=null",
        f"data.train_annotations={paths['json']}",
        f"data.val_annotations={paths['json']}",
        f"data.test_annotations={paths['json']}",
        f"data.panoptic_dirs={{train:{png},val:{png},test:{png}}}",
        "data.train_short_sides=[128]",
        "data.train_max_size=192",
        "data.test_short_side=128",
        "data.test_max_size=192",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.pin_memory=false",
        "data.persistent_workers=false",
    ]


@pytest.fixture(scope="module")
def sample(tmp_path_factory, shared_dir) -> dict[str, Path]:
    return build_panoptic_json(shared_dir, tmp_path_factory.mktemp("coco") / "panoptic.json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample):
    tmp = tmp_path_factory.mktemp("fit")
    cfg = compose_config(
        [
            "task=panoptic",
            "data=coco_panoptic",
            "model=cropformer_tiny",
            *_sample_overrides(sample),
            "model.criterion.num_points=256",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "trainer.log_every_n_steps=1",
            "trainer.accelerator=cpu",
            "callbacks.periodic_checkpoint.every_n_train_steps=2",
            "callbacks.overlays.num_images=1",
            "extras.print_config=false",
            f"paths.log_dir={tmp}/logs",
            f"paths.output_dir={tmp}/logs/train/runs/r",
        ],
        config_name="train",
    )
    return tmp, train(cfg)


def test_full_size_preset_composes():
    cfg = compose_config(
        ["task=panoptic", "data=coco_panoptic", "model=cropformer_swint"], config_name="train"
    )
    assert cfg.model.net.decoder.num_classes == 133 == cfg.model.criterion.num_classes
    assert cfg.model.fusion._target_.endswith("ClassAwareFusion") and cfg.data.task == "panoptic"
    assert cfg.optimized_metric == "val/pq"


def test_tiny_panoptic_run_reports_pq_ap_miou(trained):
    _tmp, summary = trained
    for key in ("val_pq", "val_sq", "val_rq", "val_pq_th", "val_pq_st", "val_ap", "val_miou"):
        assert isinstance(summary[key], float) and 0.0 <= summary[key] <= 100.0, key
    assert summary["val_pq_num_images"] == summary["val_ap_num_images"] == 2
    run_dir = Path(summary["run_dir"])
    assert json.loads((run_dir / "metrics.json").read_text())["val_pq"] == summary["val_pq"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    classes = ckpt["classes"]
    assert len(classes) == 133 and sum(c["isthing"] for c in classes) == 80
    assert classes[0] == {"id": 1, "name": "person", "isthing": 1}
    assert ckpt["state_dict"]["net.decoder.class_head.weight"].shape[0] == 134


def test_eval_ap_equals_pycocotools_on_its_results(trained, sample, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from cropformer.data.formats.coco_panoptic import read_coco_panoptic
    from cropformer.data.formats.entityseg import read_categories
    from cropformer.evaluation.class_gt import instance_annotations, record_ground_truth

    _tmp, summary = trained
    cfg = compose_config(
        [
            "data=coco_panoptic",
            *_sample_overrides(sample),
            f"ckpt={summary['last_checkpoint']}",
            f"paths.log_dir={tmp_path}/logs",
            f"paths.output_dir={tmp_path}/logs/eval/runs/r",
            "extras.print_config=false",
        ],
        config_name="eval",
    )
    out = evaluate(cfg)
    assert out["pq"] == pytest.approx(summary["val_pq"], abs=1e-6)
    results = json.loads(Path(out["results_json"]).read_text())
    assert results and {r["category_id"] for r in results} <= set(range(1, 91))  # things only
    cats = read_categories(sample["categories"])
    records = read_coco_panoptic(sample["json"], sample["png_dir"], sample["image_root"])
    anns: list[dict] = []
    for rec in records:
        anns += instance_annotations(
            record_ground_truth(rec, cats), rec.image_id, cats, first_id=len(anns) + 1
        )
    gt = {
        "images": [{"id": r.image_id, "height": r.height, "width": r.width} for r in records],
        "annotations": anns,
        "categories": [{"id": c.id, "name": c.name} for c in cats if c.isthing],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # AP, AP50, AP75, APs/m/l; COCOeval's -1 (no ground truth of that size) is not reported
    for k, key in enumerate(("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")):
        if ev.stats[k] < 0:
            assert key not in out, key
        else:
            assert out[key] == pytest.approx(ev.stats[k] * 100.0, abs=1e-6), key


def test_class_aware_task_on_entity_data_is_one_line(tmp_path):
    proc = run_script("train.py", "task=panoptic", "data=entityseg", f"paths.log_dir={tmp_path}")
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: task=panoptic needs a dataset with classes")


def test_predict_writes_class_ids_and_names(trained, sample, tmp_path):
    from cropformer.cli.predict import predict

    _tmp, summary = trained
    out = tmp_path / "pred"
    cfg = compose_config(
        [
            f"ckpt={summary['last_checkpoint']}",
            f"input={sample['image_root']}",
            f"output={out}",
            "inference.short_side=128",
            "inference.max_size=192",
            # two training steps give no class a probability of 0.8: keep every query
            "inference.fusion.object_mask_threshold=0.0",
            "num_workers=0",
            "device=cpu",
            f"paths.log_dir={tmp_path}/logs",
            f"paths.output_dir={tmp_path}/logs/predict/runs/r",
            "extras.print_config=false",
        ],
        config_name="predict",
    )
    result = predict(cfg)
    assert result["processed"] == 2
    names = {c["id"]: c["name"] for c in json.loads(sample["categories"].read_text())}
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert len(docs) == 2 and all(doc["annotations"] for doc in docs)
    for doc in docs:
        for ann in doc["annotations"]:
            # a panoptic segment: its COCO category id and name (not the entity class 1)
            assert names[ann["category_id"]] == ann["category_name"]


def test_python_api_gives_predicts_classes_and_the_docs_example_runs(trained, sample, tmp_path):
    """docs/class_aware.md's Python example runs as written on the trained panoptic checkpoint
    (paths substituted), and its classes per segment are predict.py's."""
    import textwrap

    from cropformer.cli.predict import predict

    _tmp, summary = trained
    photo = sorted(Path(sample["image_root"]).glob("*.jpg"))[0]
    doc_md = (Path(__file__).resolve().parents[2] / "docs" / "class_aware.md").read_text()
    snippet = doc_md.split("**Python API**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    # two training steps give no class a probability of 0.8: keep every query (both sides)
    ckpt = f"{summary['last_checkpoint']!r}, fusion={{'object_mask_threshold': 0.0}}"
    code = textwrap.dedent(snippet).replace('"last.ckpt"', ckpt)
    scope: dict = {}
    exec(compile(code.replace('"photo.jpg"', repr(str(photo))), "class_aware.md", "exec"), scope)
    ent, seg = scope["ent"], scope["seg"]
    assert seg.task == "panoptic" and len(seg.classes) == 133 and len(ent) > 0
    pan, segments = scope["pan"], scope["segments_info"]
    assert np.array_equal(pan, ent.id_map())
    assert [s["category_id"] for s in segments] == ent.category_ids.tolist()
    out = tmp_path / "pred"
    cfg = compose_config(
        [
            f"ckpt={summary['last_checkpoint']}",
            f"input={photo}",
            f"output={out}",
            "inference.fusion.object_mask_threshold=0.0",
            "num_workers=0",
            "device=cpu",
            f"paths.log_dir={tmp_path}/logs",
            f"paths.output_dir={tmp_path}/logs/predict/runs/r",
            "extras.print_config=false",
        ],
        config_name="predict",
    )
    predict(cfg)
    anns = json.loads((out / f"{photo.stem}.json").read_text())["annotations"]
    kept = [int(a["id"]) - 1 for a in anns]  # predict's json skips empty outputs
    assert kept
    assert [a["category_id"] for a in anns] == [int(ent.category_ids[k]) for k in kept]
    assert [a["category_name"] for a in anns] == [ent.category_names[k] for k in kept]
    assert np.allclose([a["score"] for a in anns], ent.scores[kept])
