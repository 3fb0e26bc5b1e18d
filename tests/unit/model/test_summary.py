"""`python -m cropformer.cli.summary`: parameter counts of the official configurations."""

from __future__ import annotations

import json

import pytest

from cropformer.cli.summary import main

# official counts (../shared/reference/official_keys/*.txt headers)
OFFICIAL = {
    "cropformer_r50": (23_454_912, 6_035_904, 14_459_138, 1_578_752, 45_528_706),
    "cropformer_swint": (27_520_698, 5_421_504, 14_459_138, 1_578_752, 48_980_092),
    "cropformer_swinl": (194_998_164, 5_790_144, 14_459_138, 1_578_752, 216_826_198),
    "mask2former_r50": (23_454_912, 6_035_904, 14_459_138, 0, 43_949_954),
    "mask2former_swint": (27_520_698, 5_421_504, 14_459_138, 0, 47_401_340),
    "mask2former_swinl": (194_998_164, 5_790_144, 14_459_138, 0, 215_247_446),
    "cropformer_hornetl": (200_272_512, 5_790_144, 14_510_338, 1_578_752, 222_151_746),
    # issue 13: the CropFormer HorNet-L counts less the association module
    "mask2former_hornetl": (200_272_512, 5_790_144, 14_510_338, 0, 220_572_994),
}
PARTS = ("backbone", "pixel_decoder", "decoder", "association", "total")


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_counts_match_official_within_one_percent(name: str, capsys) -> None:
    counts = main([f"model={name}"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == counts
    assert set(counts) == set(PARTS)
    for part, official in zip(PARTS, OFFICIAL[name]):
        assert abs(counts[part] - official) <= 0.01 * official, (part, counts[part], official)


@pytest.mark.parametrize("name", ["cropformer_hornetl", "mask2former_hornetl"])
def test_hornet_counts_equal_official_exactly(name: str, capsys) -> None:
    main([f"model={name}"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == dict(
        zip(PARTS, OFFICIAL[name])
    )


def test_overrides_are_applied(capsys) -> None:
    small = main(["model=cropformer_tiny", "model.net.decoder.num_queries=10"])
    default = main(["model=cropformer_tiny"])
    out = capsys.readouterr().out
    assert "backbone" in out and "total" in out
    # query_feat and query_pos: 2 x 20 fewer rows of width 64
    assert default["decoder"] - small["decoder"] == 2 * 20 * 64


# Class-aware heads (issue 26): the official Mask2Former configs differ from the entity ones only
# in MODEL.SEM_SEG_HEAD.NUM_CLASSES (class head Linear(256, C + 1)), so their counts are the
# official entity counts above plus 256 * C + C. Checked: Mask2Former COCO panoptic Swin-T
# (configs/coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml, C = 133):
# 47,435,264; transformers' Mask2FormerForUniversalSegmentation built from that config counts
# 47,436,800, the same plus its Swin backbone's final LayerNorm (2 x 768 = 1,536) that detectron2's
# D2SwinTransformer does not have (it counts 47,402,876 = 47,401,340 + 1,536 for C = 1).
CLASS_AWARE = {
    ("mask2former_swint", "coco_panoptic", 133): 47_435_264,
    ("mask2former_swint", "coco_instance", 80): 47_401_340 + 256 * 79 + 79,
    ("mask2former_swinl", "ade20k_panoptic", 150): 215_247_446 + 256 * 149 + 149,
}


@pytest.mark.parametrize(("name", "data", "classes"), sorted(CLASS_AWARE))
def test_class_aware_counts(name: str, data: str, classes: int, capsys) -> None:
    task = "instance" if "instance" in data else "panoptic"
    counts = main([f"model={name}", f"data={data}", f"task={task}"])
    capsys.readouterr()
    official = dict(zip(PARTS, OFFICIAL[name]))
    head = 256 * (classes - 1) + (classes - 1)  # the class head's growth over C = 1
    assert counts["decoder"] - head == main([f"model={name}"])["decoder"]
    if name == "mask2former_swint" and data == "coco_panoptic":
        assert counts["total"] == CLASS_AWARE[(name, data, classes)]  # exact, as the entity count
    else:  # Swin-L counts are within 1 % of official (see above); the class head adds exactly
        assert abs(counts["total"] - CLASS_AWARE[(name, data, classes)]) <= 0.01 * official["total"]
