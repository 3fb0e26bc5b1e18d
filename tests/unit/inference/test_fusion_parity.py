"""Official parity: our fusion on the official batch-level outputs reproduces the official result.

Uses ../shared/reference/parity (README §6): eval_outputs.pth holds the official 3D pass outputs of
image A (5 views) and the official final id map, scores and output order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.shared import require_shared

from cropformer.inference.fusion import MultiViewFusion

PARITY = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference" / "parity"


@pytest.fixture(scope="module")
def official():
    require_shared(PARITY / "eval_outputs.pth")
    out = torch.load(PARITY / "eval_outputs.pth", weights_only=True)
    inp = torch.load(PARITY / "eval_inputs.pth", weights_only=True)
    return out, inp


def _outputs_and_batch(out, inp):
    mo = inp["mapper_output"]
    H, W = int(mo["height"]), int(mo["width"])
    boxes = torch.cat([torch.tensor([[0, 0, W, H]]), mo["crop_region"]]).float()[None]
    outputs = {
        "image_level": {
            "pred_logits": out["outputs_2d"]["pred_logits"],
            "pred_masks": out["outputs_2d"]["pred_masks"],
            "aux_outputs": [],
        },
        "batch_level": {
            "pred_logits": out["outputs_3d"]["pred_logits"],
            "pred_masks": out["outputs_3d"]["pred_masks"],
            "aux_outputs": [],
        },
    }
    batch = {
        "images": inp["images_tensor"],
        "view_sizes": torch.tensor(inp["image_sizes"]),
        "boxes": boxes,
        "orig_sizes": torch.tensor([[H, W]]),
        "image_ids": torch.tensor([int(mo["image_id"])]),
    }
    return outputs, batch


@pytest.mark.parametrize("chunk", [None, 7])
def test_official_fusion_reproduces_official_result(official, chunk):
    out, inp = official
    outputs, batch = _outputs_and_batch(out, inp)
    final = out["final"]
    pred = MultiViewFusion(query_chunk_size=chunk)(outputs, batch)[0]  # official flags = defaults
    ref_map = final["pred_masks_id_map"].to(torch.int32)
    assert pred["id_map"].shape == ref_map.shape == (420, 512)
    differing = int((pred["id_map"] != ref_map).sum())
    assert differing <= 0.0001 * ref_map.numel()  # acceptance: at most 0.01 % of pixels
    torch.testing.assert_close(pred["scores"], final["scores"], atol=1e-4, rtol=0)
    assert torch.equal(pred["query_indices"], final["query_order"])  # official output order
    areas = torch.bincount(pred["id_map"][pred["id_map"] >= 0].long(), minlength=20)
    assert torch.equal(areas, final["pred_mask_areas"])


def test_fixed_flags_keep_masks_and_change_scores_and_order(official):
    out, inp = official
    outputs, batch = _outputs_and_batch(out, inp)
    final = out["final"]
    pred = MultiViewFusion(double_sigmoid=False, order="score", drop_empty=True)(outputs, batch)[0]
    assert (pred["scores"][:-1] >= pred["scores"][1:]).all()
    assert int(pred["scores"].numel()) == int((final["pred_mask_areas"] > 0).sum())
    ref_map = final["pred_masks_id_map"].long()
    order = final["query_order"].tolist()
    for k, q in enumerate(pred["query_indices"].tolist()):
        assert torch.equal(pred["id_map"] == k, ref_map == order.index(q))
