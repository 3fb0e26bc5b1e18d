"""The Mask2Former test-time multi-view control: eval.py on a Mask2Former checkpoint with the
five CropFormer test views merged by ``fusion.decoder=I-OC-merge``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _integration_helpers import tiny_cfg

from cropformer.cli.eval import evaluate
from cropformer.cli.train import train


@pytest.fixture(scope="module")
def mask2former(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("m2f")
    summary = train(tiny_cfg(tmp, "model=mask2former_tiny", "data/crop=none"))
    return tmp, summary


def _eval(tmp: Path, ckpt: str, *extra: str) -> tuple[dict, list[dict]]:
    result = evaluate(tiny_cfg(tmp, f"ckpt={ckpt}", *extra, name="eval", data_dir=tmp / "data"))
    return result, json.loads(Path(result["results_json"]).read_text())


def test_mask2former_eval_with_merged_test_views(mask2former, recwarn):
    tmp, summary = mask2former
    ckpt = summary["last_checkpoint"]
    plain, plain_dets = _eval(tmp, ckpt, "data/crop=none")
    # the stored fusion of a Mask2Former run (image-level pass, full view) is what training saw
    assert plain["entity_ap"] == pytest.approx(summary["val_entity_ap"], abs=1e-6)
    merged, merged_dets = _eval(
        tmp, ckpt, "data/crop=fixed4", "inference.fusion.decoder=I-OC-merge"
    )
    assert merged["entity_num_images"] == plain["entity_num_images"] == 2
    # the merge got the full view and the 4 crops (with one view it warns)
    assert not [w for w in recwarn if "one view per image" in str(w.message)]
    assert merged_dets and all("counts" in d["segmentation"] for d in merged_dets)
    # at most 100 per image, and other predictions than the full view's alone
    per_image: dict[int, int] = {}
    for d in merged_dets:
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
    assert max(per_image.values()) <= 100
    scores = {
        name: sorted(round(d["score"], 6) for d in dets)
        for name, dets in (("plain", plain_dets), ("merged", merged_dets))
    }
    assert scores["plain"] != scores["merged"]
