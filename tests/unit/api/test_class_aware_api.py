"""The Python API and the checkpoint loader on class-aware checkpoints: the task, class set and
metric options travel with the file (eval.py computes the task's metrics, a mismatching class set
is one line), and ``load_segmenter`` gives class ids / names / scores per entity plus the task's
panoptic, semantic and instance outputs; entity checkpoints say in one line that they have none.

Checkpoints are written here from freshly built tiny models (random weights), so the class ids
are deliberately not 0..C-1: a mix-up of contiguous indices and file ids shows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from cropformer.api import load_segmenter, read_checkpoint
from cropformer.data.categories import CategorySet
from cropformer.run.config import compose_config
from cropformer.training.module import CropFormerModule
from cropformer.utils.errors import UserError

#: file ids with gaps, one stuff class first (as COCO / ADE20K number theirs)
CLASSES = [
    {"id": 7, "name": "sky", "isthing": 0},
    {"id": 20, "name": "cat", "isthing": 1},
    {"id": 31, "name": "dog", "isthing": 1},
    {"id": 42, "name": "cup", "isthing": 1},
    {"id": 53, "name": "car", "isthing": 1},
]
IDS = [c["id"] for c in CLASSES]
NAME = {c["id"]: c["name"] for c in CLASSES}
THINGS = {c["id"] for c in CLASSES if c["isthing"]}
VIEWS = {"short_side": 64, "max_size": 96, "num_crops": 0}
#: random weights give unconfident classes: keep every query for the panoptic output
KEEP_ALL = {"object_mask_threshold": 0.0, "overlap_threshold": 0.0, "instance_score_threshold": 0.0}


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (60, 90, 3), dtype=np.uint8)


def write_checkpoint(path: Path, task: str, *, metric: dict | None = None) -> Path:
    """A checkpoint of this platform as Lightning writes it (weights, hyper-parameters, data
    config, and the class set of a class-aware task), from a tiny model of ``task``."""
    overrides = [f"task={task}", "model=cropformer_tiny", "data.num_classes=5"]
    if metric:
        overrides += [f"model.metric.{k}={v}" for k, v in metric.items()]
    cfg = compose_config(overrides)
    classes = CLASSES if task != "entity" else None
    torch.manual_seed(0)
    module = instantiate(cfg.model, _recursive_=False, classes=classes)
    stored = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "global_step": 3,
        "data_config": {"test_short_side": 64, "test_max_size": 96, "crop": {"num_test": 0}},
    }
    if classes:
        stored["classes"] = CategorySet.from_json(classes).to_json()
    torch.save(stored, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ckpts")
    return {t: write_checkpoint(tmp / f"{t}.ckpt", t) for t in ("panoptic", "instance", "semantic")}


# ------------------------------------------------------------------ the loader (eval.py)
def test_loader_restores_task_classes_and_metric_options(ckpts, tmp_path):
    loaded = read_checkpoint(ckpts["panoptic"])
    assert loaded.task == "panoptic" and [c["id"] for c in loaded.classes] == IDS
    module = CropFormerModule.from_loaded(loaded)
    # the task picks eval.py's metric (PQ / AP / mIoU), not the entity AP of the default
    assert module.task == "panoptic" and module.classes.ids == IDS
    assert module.fusion.category_ids == IDS and module.fusion.category_names == list(NAME.values())
    # the metric options it was trained with (eval.py reports e.g. boundary AP again)
    entity = read_checkpoint(
        write_checkpoint(tmp_path / "e.ckpt", "entity", metric={"boundary": "true"})
    )
    assert entity.task == "entity" and entity.classes is None
    assert CropFormerModule.from_loaded(entity).hparams["metric"]["boundary"] is True


def test_eval_data_with_other_classes_is_one_line(ckpts):
    module = CropFormerModule.from_loaded(read_checkpoint(ckpts["panoptic"]))
    same = SimpleNamespace(task="panoptic", class_set=CategorySet.from_json(CLASSES))
    module._check_data_classes(same)  # the class set it was trained on: fine
    other = [dict(c) for c in CLASSES]
    other[2]["name"] = "wolf"
    with pytest.raises(UserError) as err:
        module._check_data_classes(
            SimpleNamespace(task="panoptic", class_set=CategorySet.from_json(other))
        )
    line = str(err.value)
    assert "\n" not in line and "class index 2: 31 'dog' (thing) vs 31 'wolf' (thing)" in line
    with pytest.raises(UserError, match="5 classes are not the data's 4 classes"):
        module._check_data_classes(
            SimpleNamespace(task="panoptic", class_set=CategorySet.from_json(CLASSES[:4]))
        )


# ------------------------------------------------------------------ load_segmenter
def test_panoptic_checkpoint_gives_classes_per_entity(ckpts):
    seg = load_segmenter(ckpts["panoptic"], device="cpu", fusion=KEEP_ALL, **VIEWS)
    assert seg.task == "panoptic" and seg.classes is not None and seg.classes.ids == IDS
    assert "task panoptic (5 classes: 4 things, 1 stuff)" in seg.describe()
    ent = seg(_image())
    assert ent.has_classes and len(ent) > 0 and "task=panoptic" in repr(ent)
    ids, names, labels = ent.category_ids, ent.category_names, ent.labels
    assert ids.shape == labels.shape == ent.scores.shape == (len(ent),)
    assert [IDS[k] for k in labels] == ids.tolist() and names == [NAME[i] for i in ids]
    assert ent.isthing.tolist() == [i in THINGS for i in ids]
    # the panoptic output: segment k is id k + 1, as in id_map(); COCO segments_info entries
    pan, segments = ent.panoptic()
    assert pan.shape == (60, 90) and np.array_equal(pan, ent.id_map())
    assert [s["id"] for s in segments] == list(range(1, len(ent) + 1))
    assert [s["category_id"] for s in segments] == ids.tolist()
    assert [s["category_name"] for s in segments] == names
    assert np.allclose([s["score"] for s in segments], ent.scores)
    stuff = [s["category_id"] for s in segments if not s["isthing"]]
    assert len(stuff) == len(set(stuff))  # a stuff class is one segment
    # the semantic output covers every pixel with a class, as file ids or contiguous indices
    sem = ent.semantic()
    assert sem.shape == (60, 90) and set(np.unique(sem).tolist()) <= set(IDS)
    assert np.array_equal(np.asarray(IDS)[ent.semantic(category_ids=False)], sem)
    # the instance output (what instance AP scores): things only, most confident first
    inst = ent.instances()
    k = len(inst["scores"])
    assert 0 < k <= 100 and inst["masks"].shape == (k, 60, 90)
    assert set(inst["category_ids"].tolist()) <= THINGS
    assert np.all(np.diff(inst["scores"]) <= 0)
    assert inst["category_names"] == [NAME[i] for i in inst["category_ids"]]
    # the json predict.py writes says the same per entity
    anns = ent.to_json()["annotations"]
    kept = [k for k in range(len(ent)) if (ent.id_map() == k + 1).any()]
    assert [a["category_id"] for a in anns] == [int(ids[k]) for k in kept]
    assert [a["category_name"] for a in anns] == [names[k] for k in kept]


def test_instance_and_semantic_checkpoints(ckpts):
    image = _image(1)
    inst = load_segmenter(ckpts["instance"], device="cpu", fusion=KEEP_ALL, **VIEWS)(image)
    assert inst.task == "instance" and set(inst.category_ids.tolist()) <= set(IDS)
    assert np.all(np.diff(inst.scores) <= 0)  # instances above the threshold, best first
    assert len(inst.instances()["scores"]) == 100  # official top-k, stuff classes included
    with pytest.raises(UserError) as err:
        inst.panoptic()
    assert "task=instance checkpoint has no panoptic output (it gives instances())" in str(
        err.value
    )
    # semantic: one output per class present, its mask the class's pixels
    sem_seg = load_segmenter(ckpts["semantic"], device="cpu", **VIEWS)
    sem = sem_seg(image)
    classes = sem.semantic()
    assert sorted(sem.category_ids.tolist()) == sorted(np.unique(classes).tolist())
    for k, cid in enumerate(sem.category_ids.tolist()):
        assert np.array_equal(sem.id_map() == k + 1, classes == cid)
    with pytest.raises(UserError, match="no instances output"):
        sem.instances()
    # a list of images: the same per image
    both = sem_seg([image, image])
    assert [e.category_names for e in both] == [sem.category_names] * 2


def test_entity_checkpoint_has_no_classes_one_line(tmp_path):
    seg = load_segmenter(write_checkpoint(tmp_path / "e.ckpt", "entity"), device="cpu", **VIEWS)
    assert seg.task == "entity" and seg.classes is None
    ent = seg(_image())
    assert not ent.has_classes and len(ent.scores) == len(ent)
    for what in ("category_ids", "category_names", "labels"):
        with pytest.raises(UserError) as err:
            getattr(ent, what)
        line = str(err.value)
        assert "\n" not in line and line.startswith(f"{what}: this is an entity checkpoint")
    with pytest.raises(UserError, match="entity checkpoint"):
        ent.panoptic()


@pytest.mark.slow  # an ONNX export of the tiny network: ~50 s on the 2-core VM
def test_exported_file_carries_the_classes(ckpts):
    """A class-aware checkpoint run by ONNX Runtime, then its exported file on its own: the same
    classes per entity as eager (the file carries task and class set)."""
    pytest.importorskip("onnxruntime", reason="needs the deploy extra (onnx, onnxruntime)")
    from cropformer.export.files import read_metadata

    image = _image(2)
    eager = load_segmenter(ckpts["semantic"], device="cpu", **VIEWS)(image)
    runtime = load_segmenter(ckpts["semantic"], runtime="onnxruntime", **VIEWS)
    exported = next((ckpts["semantic"].parent / "semantic.ckpt.exported").glob("*.onnx"))
    meta = read_metadata(exported)
    assert meta["task"] == "semantic" and [c["id"] for c in meta["classes"]] == IDS
    alone = load_segmenter(exported)
    assert alone.task == "semantic" and alone.classes == runtime.classes
    for ent in (runtime(image), alone(image)):
        assert ent.category_names == eager.category_names
        assert np.mean(ent.semantic() == eager.semantic()) >= 0.999


# ------------------------------------------------------------------ fusion settings
def test_fusion_overrides_of_a_class_aware_checkpoint(ckpts, tmp_path):
    """eval.py / predict.py / export pass inference.fusion.* to the loader: they replace the
    stored settings of the ClassAwareFusion; the other fusion's settings are one line."""
    loaded = read_checkpoint(ckpts["instance"], fusion={"top_k": 7, "overlap_threshold": None})
    assert loaded.fusion_config["top_k"] == 7 and loaded.fusion_config["overlap_threshold"] == 0.8
    _net, fusion = loaded.build()
    assert fusion.top_k == 7 and fusion.task == "instance"
    with pytest.raises(UserError, match=r"^inference.fusion.double_sigmoid: an entity-fusion"):
        read_checkpoint(ckpts["instance"], fusion={"double_sigmoid": False})
    entity = write_checkpoint(tmp_path / "e.ckpt", "entity")
    with pytest.raises(UserError, match=r"^inference.fusion.top_k: a class-aware setting"):
        read_checkpoint(entity, fusion={"top_k": 5})
    with pytest.raises(UserError) as err:
        read_checkpoint(ckpts["instance"], fusion={"top_k": 0}).build()
    line = str(err.value)
    assert "\n" not in line and line.endswith(
        "fusion settings: fusion top_k=0 must be an integer >= 1"
    )


def test_export_stores_the_overridden_class_aware_settings(ckpts, tmp_path, monkeypatch):
    """The exported file carries the fusion it was made with (overrides included): a file on
    its own segments with them."""
    import cropformer.cli.export as export_cli

    captured: dict = {}

    def fake_export(net, path, *, num_views, metadata, fmt):
        captured.update(metadata)
        path.write_bytes(b"x")

    monkeypatch.setattr(export_cli, "export_network", fake_export)
    cfg = compose_config(
        [
            f"ckpt={ckpts['panoptic']}",
            f"output={tmp_path / 'm.onnx'}",
            "verify=false",
            "inference.fusion.object_mask_threshold=0.25",
            "inference.fusion.segment_pixels=argmax",
        ],
        config_name="export",
    )
    export_cli.export(cfg)
    fusion = captured["fusion"]
    assert fusion["_target_"].endswith("ClassAwareFusion") and fusion["task"] == "panoptic"
    assert fusion["object_mask_threshold"] == 0.25 and fusion["segment_pixels"] == "argmax"
    assert fusion["overlap_threshold"] == 0.8  # stored value kept
    assert captured["task"] == "panoptic" and [c["id"] for c in captured["classes"]] == IDS
    rebuilt = instantiate(fusion)  # what load_exported builds from the file
    assert rebuilt.object_mask_threshold == 0.25
