"""ADE20K readers (both layouts) and the COCO panoptic reader on tiny generated fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cropformer.data.convert import ConversionReport, records_to_entityseg
from cropformer.data.decode import label_source_for
from cropformer.data.formats.ade20k import read_ade20k_challenge, read_ade20k_full
from cropformer.data.formats.coco_panoptic import read_coco_panoptic


def _full(rec):
    return label_source_for(rec, rec.entities).full()


def test_ade_challenge_instances_plus_stuff(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for d in ("images/validation", "annotations_instance/validation", "annotations/validation"):
        (root / d).mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(root / "images/validation/ADE_val_00000001.jpg")
    inst = np.zeros((6, 8, 3), np.uint8)
    inst[0:2, 0:3] = (12, 1, 0)  # class 12, instance 1
    inst[3:5, 4:8] = (20, 2, 0)  # class 20, instance 2
    Image.fromarray(inst).save(root / "annotations_instance/validation/ADE_val_00000001.png")
    sem = np.full((6, 8), 3, np.uint8)  # wall everywhere...
    sem[5] = 0  # ...except an unlabeled bottom row
    Image.fromarray(sem).save(root / "annotations/validation/ADE_val_00000001.png")
    (rec,) = read_ade20k_challenge(root, "validation")
    assert rec.file_name == "validation/ADE_val_00000001.jpg" and (rec.height, rec.width) == (6, 8)
    assert len(rec.entities) == 3  # 2 instances + 1 stuff (wall)
    full = _full(rec)
    assert (full[5] == -1).all()
    assert len(np.unique(full[full >= 0])) == 3
    (only_inst,) = read_ade20k_challenge(root, "validation", with_stuff=False)
    assert len(only_inst.entities) == 2


def test_ade_full_layout(tmp_path):
    d = tmp_path / "ADE20K" / "training" / "cultural" / "a"
    d.mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(d / "ADE_frame_1.jpg")
    seg = np.zeros((6, 8, 3), np.uint8)
    seg[:3, :, 0], seg[:3, :, 1], seg[:3, :, 2] = 10, 5, 1  # class 1*256+5, instance 1
    seg[3:, 2:, 0], seg[3:, 2:, 1], seg[3:, 2:, 2] = 20, 7, 2
    Image.fromarray(seg).save(d / "ADE_frame_1_seg.png")
    Image.fromarray(seg).save(d / "instance_000_ADE_frame_1.png")  # amodal: must be ignored
    (rec,) = read_ade20k_full(tmp_path / "ADE20K")
    assert rec.file_name == "training/cultural/a/ADE_frame_1.jpg"
    assert len(rec.entities) == 2
    data = records_to_entityseg([rec], ConversionReport())
    assert sorted(a["area"] for a in data["annotations"]) == [18, 24]
    assert data["annotations"][0]["bbox"] == [0.0, 0.0, 8.0, 3.0]


def test_ade_full_missing_jpg(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x_seg.png")
    with pytest.raises(FileNotFoundError, match="x.jpg"):
        read_ade20k_full(tmp_path)


def test_coco_panoptic_crowd_and_void(tmp_path):
    ids = np.zeros((4, 6, 3), np.uint8)
    ids[:2, :, 0] = 5
    ids[2:, :3, 1] = 1  # id 256
    Image.fromarray(ids).save(tmp_path / "p.png")
    Image.new("RGB", (6, 4)).save(tmp_path / "p.jpg")
    js = {
        "images": [{"id": 1, "file_name": "p.jpg", "height": 4, "width": 6}],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "p.png",
                "segments_info": [{"id": 5, "iscrowd": 0}, {"id": 256, "iscrowd": 1}],
            }
        ],
    }
    (tmp_path / "pan.json").write_text(json.dumps(js))
    (rec,) = read_coco_panoptic(tmp_path / "pan.json", tmp_path, tmp_path, file_prefix="")
    assert [e.iscrowd for e in rec.entities] == [False, True]
    full = _full(rec)
    assert (full[:2] == 0).all() and (full[2:, :3] == 1).all() and (full[2:, 3:] == -1).all()
    assert [e.segment_id for e in rec.non_crowd()] == [5]
