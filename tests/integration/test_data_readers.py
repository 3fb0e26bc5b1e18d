"""Readers and conversion scripts on the real images in ../shared/data."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cropformer.data.convert import ConversionReport, records_to_entityseg, write_json
from cropformer.data.dataset import EntityDataset
from cropformer.data.decode import label_source_for
from cropformer.data.formats.coco_json import read_coco_json
from cropformer.data.formats.coco_panoptic import read_coco_panoptic
from cropformer.data.formats.entityseg import read_entityseg
from cropformer.data.view_sampler import ViewSampler

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared" / "data"
PAN = SHARED / "coco-panoptic-sample" / "sample_data"
VOC = SHARED / "labelme-voc" / "instance_segmentation" / "data_dataset_coco"

pytestmark = pytest.mark.skipif(
    not PAN.is_dir() or not VOC.is_dir(),
    reason=f"shared sample data not found at {SHARED} (CI keeps shared/ beside the checkout)",
)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _entity_maps(records):
    out = {}
    for rec in records:
        src = label_source_for(rec, rec.entities)
        full = src.full()
        masks = [full == k for k in range(len(rec.entities))]
        out[rec.image_id] = (masks, [e.iscrowd for e in rec.entities])
    return out


def test_panoptic_png_and_rle_json_give_identical_entities():
    png = _entity_maps(
        read_coco_panoptic(PAN / "panoptic_examples.json", PAN / "panoptic_examples", PAN)
    )
    rle = _entity_maps(read_entityseg(PAN / "panoptic_coco_detection_format.json", PAN))
    assert png.keys() == rle.keys()
    total = 0
    for image_id, (pmasks, pcrowd) in png.items():
        rmasks, rcrowd = rle[image_id]
        assert len(pmasks) == len(rmasks)
        assert sorted(pcrowd) == sorted(rcrowd)
        for pm in pmasks:
            ious = [np.logical_and(pm, rm).sum() / np.logical_or(pm, rm).sum() for rm in rmasks]
            assert max(ious) == 1.0
            total += 1
    assert total == 50


def test_labelme_voc_polygons_load_into_views():
    records = read_coco_json(VOC / "annotations.json", VOC)
    assert len(records) == 3 and sum(len(r.entities) for r in records) == 12
    ds = EntityDataset(records, ViewSampler(train=False, short_sides=(128,), num_crops=4))
    for i in range(len(ds)):
        s = ds[i]
        assert len(s["views"]) == 5 and s["num_entities"] == len(records[i].entities)
        assert s["valid"][:, 0].all()  # every polygon is visible in the full view


def test_convert_and_check_scripts(tmp_path, capsys):
    convert = _script("convert_to_entity")
    check = _script("check_dataset")
    out = tmp_path / "pan_entity.json"
    rc = convert.main(
        [
            "coco-panoptic",
            "--panoptic-json",
            str(PAN / "panoptic_examples.json"),
            "--panoptic-dir",
            str(PAN / "panoptic_examples"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert len(data["annotations"]) == 50
    assert sum(a["iscrowd"] for a in data["annotations"]) == 3
    assert all(
        a["category_id"] == 1 and isinstance(a["segmentation"]["counts"], str)
        for a in data["annotations"]
    )
    assert check.main(["--images", str(PAN / "input_images"), "--annotations", str(out)]) == 0
    assert "problems: 0" in capsys.readouterr().out
    # COCO instances with overlapping polygons: the raw json fails the check, the converted passes
    voc_out = tmp_path / "voc_entity.json"
    assert (
        convert.main(
            ["coco", "--annotations", str(VOC / "annotations.json"), "--out", str(voc_out)]
        )
        == 0
    )
    assert check.main(["--images", str(VOC), "--annotations", str(VOC / "annotations.json")]) == 1
    assert "masks overlap" in capsys.readouterr().out
    assert check.main(["--images", str(VOC), "--annotations", str(voc_out)]) == 0


def test_converted_json_roundtrip_equals_source(tmp_path):
    records = read_coco_panoptic(PAN / "panoptic_examples.json", PAN / "panoptic_examples", PAN)
    report = ConversionReport()
    data = records_to_entityseg(records, report)
    assert report.entities == 50 and report.images_with_overlap == 0
    src = _entity_maps(records)
    path = write_json(data, tmp_path / "x.json")
    back = _entity_maps(read_entityseg(path, PAN))
    for image_id, (masks, _) in src.items():
        for a, b in zip(masks, back[image_id][0]):
            assert np.array_equal(a, b)
