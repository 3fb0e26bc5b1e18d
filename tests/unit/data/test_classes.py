"""Class-aware data: class sets, readers keeping category_id/isthing, targets, synthetic kinds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.coco_panoptic_sample import build_panoptic_json

from cropformer.data.categories import Category, CategorySet, category_isthing
from cropformer.data.formats.coco_panoptic import read_ade20k_panoptic, read_coco_panoptic
from cropformer.data.formats.entityseg import read_categories, read_entityseg
from cropformer.data.records import Entity
from cropformer.data.target_classes import TargetClasses


def test_category_set_maps_ids_both_ways_and_reads_both_thing_conventions():
    cs = CategorySet.from_json(
        [
            {"id": 7, "name": "cat", "isthing": 1},
            {"id": 3, "name": "sky", "isthing": 0},
            {"id": 0, "name": "unknown", "type": "stuff"},
            {"id": 9, "name": "box", "type": "thing"},
            {"id": 11, "name": "plain"},  # instance json: no flag -> thing
        ]
    )
    assert cs.ids == [7, 3, 0, 9, 11] and cs.names[1] == "sky"
    assert cs.isthing == [True, False, False, True, True]
    assert (cs.num_things, cs.num_stuff) == (3, 2)
    assert cs.contiguous(3) == 1 and cs.contiguous(11) == 4
    with pytest.raises(ValueError, match="category_id 5 is not in the class set"):
        cs.contiguous(5)
    with pytest.raises(ValueError, match="unique"):
        CategorySet([Category(1, "a"), Category(1, "b")])
    with pytest.raises(ValueError, match="expected 'thing' or 'stuff'"):
        category_isthing({"id": 1, "type": "both"})
    assert CategorySet.from_json(cs.to_json()) == cs


def test_coco_panoptic_reader_keeps_category_and_isthing(shared_dir, tmp_path):
    paths = build_panoptic_json(shared_dir, tmp_path / "panoptic.json")
    records = read_coco_panoptic(paths["json"], paths["png_dir"], paths["image_root"])
    det = json.loads(
        (
            shared_dir / "data/coco-panoptic-sample/sample_data/panoptic_coco_detection_format.json"
        ).read_text()
    )
    cats = read_categories(paths["categories"])
    assert len(cats) == 133 and cats.num_things == 80
    assert [len(r.entities) for r in records] == [18, 32]  # SOURCE.md: 18 and 32 segments
    for r in records:
        own = [a for a in det["annotations"] if a["image_id"] == r.image_id]
        src = sorted((a["category_id"], a["iscrowd"]) for a in own)
        assert sorted((e.category_id, int(e.iscrowd)) for e in r.entities) == src
        for e in r.entities:
            assert e.isthing == cats.thing_stuff(e.category_id)
    assert sum(e.iscrowd for r in records for e in r.entities) == 3
    # thing/stuff counts of SOURCE.md: 15 + 3 and 28 + 4 (crowd segments are things)
    assert [sum(bool(e.isthing) for e in r.entities) for r in records] == [15, 28]


def test_panoptic_reader_takes_thing_flags_from_a_categories_file(shared_dir, tmp_path):
    paths = build_panoptic_json(shared_dir, tmp_path / "panoptic.json")
    data = json.loads(paths["json"].read_text())
    del data["categories"]
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(data))
    no_flags = read_coco_panoptic(bare, paths["png_dir"], paths["image_root"])
    assert all(e.isthing is None and e.category_id is not None for e in no_flags[0].entities)
    flagged = read_coco_panoptic(
        bare, paths["png_dir"], paths["image_root"], categories=paths["categories"]
    )
    assert sum(bool(e.isthing) for e in flagged[1].entities) == 28
    data["annotations"][0]["segments_info"][0]["category_id"] = 999
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="category_id 999 is not in the class set"):
        read_coco_panoptic(
            bad, paths["png_dir"], paths["image_root"], categories=paths["categories"]
        )


def test_ade20k_panoptic_official_format(tmp_path):
    # Mask2Former's prepare_ade20k_pan_seg.py output: COCO panoptic json + PNGs, 150 classes
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "pan").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "ADE_val_00000001.jpg")
    ids = np.zeros((6, 8, 3), dtype=np.uint8)
    ids[:3, :, 0] = 5  # segment 5: wall (stuff)
    ids[3:, :4, 0] = 9  # segment 9: bed (thing)
    Image.fromarray(ids).save(tmp_path / "pan" / "ADE_val_00000001.png")
    cats = [{"id": k, "name": f"c{k}", "isthing": int(k >= 50)} for k in range(150)]
    cats[0]["name"], cats[7]["name"] = "wall", "bed"
    cats[7]["isthing"] = 1
    data = {
        "images": [{"id": 1, "file_name": "ADE_val_00000001.jpg", "height": 6, "width": 8}],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "ADE_val_00000001.png",
                "segments_info": [
                    {"id": 5, "category_id": 0, "iscrowd": 0},
                    {"id": 9, "category_id": 7, "iscrowd": 0},
                ],
            }
        ],
        "categories": cats,
    }
    (tmp_path / "ade20k_panoptic_val.json").write_text(json.dumps(data))
    (rec,) = read_ade20k_panoptic(
        tmp_path / "ade20k_panoptic_val.json", tmp_path / "pan", tmp_path / "images"
    )
    assert [(e.segment_id, e.category_id, e.isthing) for e in rec.entities] == [
        (5, 0, False),
        (9, 7, True),
    ]
    assert len(read_categories(tmp_path / "ade20k_panoptic_val.json")) == 150


def test_custom_coco_json_with_categories_labelme_sample(shared_dir):
    root = shared_dir / "data/labelme-voc/instance_segmentation/data_dataset_coco"
    records = read_entityseg(root / "annotations.json", root)
    cats = read_categories(root / "annotations.json")
    raw = json.loads((root / "annotations.json").read_text())
    assert [e.category_id for r in records for e in r.entities] == [
        a["category_id"]
        for img in raw["images"]
        for a in raw["annotations"]
        if a["image_id"] == img["id"]
    ]
    assert all(e.isthing for r in records for e in r.entities)  # no flags: things
    assert "person" in cats.names


def test_entityclass_json_type_field(tmp_path):
    # EntitySeg EntityClass: 644 categories with type thing/stuff, id 0 = unknown
    cats = [
        {"id": 0, "name": "unknown", "type": "stuff"},
        {"id": 1, "name": "tree", "type": "thing"},
    ]
    rle = {"size": [2, 2], "counts": [0, 4]}
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 2}],
        "annotations": [{"id": 1, "image_id": 1, "segmentation": rle, "category_id": 0}],
        "categories": cats,
    }
    (tmp_path / "ec.json").write_text(json.dumps(data))
    (rec,) = read_entityseg(tmp_path / "ec.json", tmp_path)
    assert (rec.entities[0].category_id, rec.entities[0].isthing) == (0, False)


def _ents(cats: list[int]) -> list[Entity]:
    return [Entity(ann_id=i, category_id=c) for i, c in enumerate(cats)]


def test_target_classes_per_task():
    cs = CategorySet.from_json(
        [{"id": 1, "name": "band", "isthing": 0}, {"id": 2, "name": "blob", "isthing": 1}]
    )
    ents = _ents([1, 2, 1, 2, 2])
    kept, labels, group = TargetClasses(cs, "instance").select(ents)
    assert [e.ann_id for e in kept] == [1, 3, 4] and labels.tolist() == [1, 1, 1] and group is None
    kept, labels, group = TargetClasses(cs, "panoptic").select(ents)
    assert len(kept) == 5 and labels.tolist() == [0, 1, 0, 1, 1]
    # panoptic: one stuff segment per class (the two bands merge), things stay apart
    assert group is not None and group.tolist() == [0, 1, 0, 2, 3]
    kept, labels, group = TargetClasses(cs, "semantic").select(ents)
    assert group is not None and group.tolist() == [0, 1, 0, 1, 1]
    with pytest.raises(ValueError, match="no category_id"):
        TargetClasses(cs, "panoptic").select([Entity(ann_id=3)], where="x.json")
    with pytest.raises(ValueError, match="not one of"):
        TargetClasses(cs, "entity")


# ------------------------------------------------------------------ the embedded class-aware task
def test_synthetic_kinds_are_additive(tmp_path):
    from cropformer.data.synthetic import SYNTHETIC_CATEGORIES, SyntheticSpec
    from cropformer.data.synthetic_store import (
        class_annotations_path,
        ensure_class_annotations,
        prepare_synthetic,
        write_class_annotations,
    )

    # the cache key of the embedded benchmark (with its 100-scene test split) is unchanged by
    # the class-aware addition
    assert SyntheticSpec().key() == "98582fdc9adb"
    spec = SyntheticSpec(num_train=3, num_val=2, num_test=2, image_size=(256, 192))
    folder = prepare_synthetic(tmp_path, spec, processes=1)
    for split in ("train", "val", "test"):
        plain = json.loads((folder / f"{split}.json").read_text())
        classes = json.loads(class_annotations_path(folder / f"{split}.json").read_text())
        assert classes["images"] == plain["images"]
        assert len(classes["annotations"]) == len(plain["annotations"])
        for a, b in zip(plain["annotations"], classes["annotations"]):
            assert {k: v for k, v in a.items() if k != "category_id"} == {
                k: v for k, v in b.items() if k != "category_id"
            }
            assert a["category_id"] == 1 and b["category_id"] in {1, 2, 3, 4, 5}
        assert classes["categories"] == [dict(c) for c in SYNTHETIC_CATEGORIES]
        # bands first (stuff ids 0..n-1 in the generator), objects after
        per_image = [
            [a["category_id"] for a in classes["annotations"] if a["image_id"] == img["id"]]
            for img in classes["images"]
        ]
        for cats in per_image:
            n_band = cats.count(1)
            assert n_band >= 1 and cats[:n_band] == [1] * n_band
    # an older cache without the files gets them back, identical, without touching the rest
    first = class_annotations_path(folder / "val.json").read_bytes()
    stamp = (folder / "val.json").stat().st_mtime_ns
    class_annotations_path(folder / "val.json").unlink()
    ensure_class_annotations(folder, spec)
    assert class_annotations_path(folder / "val.json").read_bytes() == first
    assert (folder / "val.json").stat().st_mtime_ns == stamp
    # another spec cannot reproduce the entities: a clear error, not wrong classes
    other = SyntheticSpec(num_train=3, num_val=2, image_size=(256, 192), seed=5)
    with pytest.raises(ValueError, match="does not reproduce its entities"):
        write_class_annotations(other, folder / "val.json")


def test_datamodule_class_aware_targets(tmp_path):
    from numpy.random import default_rng as rng

    from cropformer.data.collate import collate
    from cropformer.data.datamodule import EntityDataModule

    def dm(task: str) -> EntityDataModule:
        return EntityDataModule(
            synthetic=dict(
                root=str(tmp_path / "syn"), num_train=2, num_val=1, image_size=[256, 192]
            ),
            train_short_sides=[96],
            train_max_size=160,
            test_short_side=96,
            test_max_size=160,
            batch_size=2,
            flip_prob=0.0,
            task=task,
            num_classes=5,
        )

    out = {}
    for task in ("entity", "instance", "panoptic", "semantic"):
        d = dm(task)
        d.prepare_data()
        d.setup("fit")
        ds = d.datasets["train"]
        # same images and views for every task (the loader would shuffle)
        out[task] = collate([ds.load(i, draw=ds.sampler.draw(192, 256, rng(i))) for i in range(2)])[
            "targets"
        ]
    assert all("labels" not in t for t in out["entity"])
    for b in range(2):
        k_entity = out["entity"][b]["masks"].shape[0]
        inst, pan, sem = out["instance"][b], out["panoptic"][b], out["semantic"][b]
        assert inst["labels"].shape == (inst["masks"].shape[0],)
        assert set(inst["labels"].tolist()) <= {1, 2, 3, 4}  # no band (stuff) in instance
        assert 0 in pan["labels"].tolist()
        assert pan["labels"].tolist().count(0) == 1  # the bands merged into one stuff segment
        assert pan["masks"].shape[0] == inst["masks"].shape[0] + 1  # things + one band segment
        assert k_entity > pan["masks"].shape[0]  # images have 2-4 bands
        assert sorted(sem["labels"].tolist()) == sorted(set(pan["labels"].tolist()))
        # the union of the masks is the same whatever the task (semantic/panoptic cover all)
        assert (sem["masks"].any(0) == out["entity"][b]["masks"].any(0)).all()
        assert int(sem["masks"].sum(0).max()) <= 1
    assert dm("panoptic").class_set.names == ["band", "blob", "ring", "bar", "disc"]
    bad = EntityDataModule(
        synthetic=dict(root=str(tmp_path / "syn"), num_train=2, num_val=1, image_size=[256, 192]),
        task="panoptic",
        num_classes=133,
    )
    bad.prepare_data()
    with pytest.raises(ValueError, match="data.num_classes=133 but .* has 5 categories"):
        _ = bad.class_set
