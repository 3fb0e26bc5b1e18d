"""Helpers that turn predictions and label maps into pictures (evaluation.viz)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cropformer.evaluation.viz import (
    entity_boundaries,
    fuse_with_decoder,
    highlight,
    label_iou,
    label_map_in_frame,
    masks_to_id_map,
    match_entities,
    network_outputs,
    view_entities,
)
from cropformer.inference.fusion import DECODER_CHOICES, MultiViewFusion


def test_masks_to_id_map_later_mask_wins_and_boundaries():
    m = np.zeros((3, 4, 5), bool)
    m[0, :2] = True
    m[1, :, :2] = True
    ids = masks_to_id_map(torch.from_numpy(m))
    assert ids.dtype == np.int32 and ids.shape == (4, 5)
    assert ids[0, 0] == 1 and ids[0, 4] == 0 and ids[3, 4] == -1 and (ids != 2).all()
    edge = entity_boundaries(ids)
    assert edge[0, 1] and not edge[0, 3] and edge[1, 4]  # 0 -> -1 below (1, 4)
    with pytest.raises(ValueError, match=r"\(K, h, w\)"):
        masks_to_id_map(np.zeros((4, 5), bool))


def test_label_map_in_frame_round_trip_and_iou():
    H, W = 40, 60
    truth = np.full((H, W), -1, np.int32)
    truth[5:35, 10:50] = 0  # large entity
    truth[20, :] = 1  # 1-px line: lost when the view halves the resolution
    box = (0, 0, W, H)
    half = truth[::2, ::2]  # a view at half resolution (rows 0, 2, ...: the line survives)
    back = label_map_in_frame(half, box, (H, W))
    iou = label_iou(truth, back)
    assert iou.shape == (2,) and iou[0] > 0.85 and 0.3 < iou[1] < 0.6  # line doubled in width
    crop = label_map_in_frame(truth[10:30, 20:40], (20, 10, 40, 30), (H, W))
    assert (crop[:10] == -1).all() and np.array_equal(crop[10:30, 20:40], truth[10:30, 20:40])
    region = crop >= -1
    region[:] = False
    region[10:30, 20:40] = True
    assert label_iou(truth, crop, 2, region=region).tolist() == [1.0, 1.0]
    assert np.isnan(label_iou(truth, truth, 3)[2])  # absent label
    with pytest.raises(ValueError, match="inside"):
        label_map_in_frame(half, (0, 0, W + 1, H), (H, W))


def test_match_entities_pairs_and_differences():
    a = np.full((10, 10), -1)
    a[:5] = 0
    a[5:, :5] = 1
    a[5:, 5:] = 2
    b = np.full((10, 10), -1)
    b[:5] = 3  # same as a's 0 under another id
    b[5:] = 0  # a's 1 and 2 merged
    m = match_entities(a, torch.from_numpy(b))
    assert m.pairs == [(0, 3)] and m.ious == [1.0]
    assert m.only_a == [1, 2] and m.only_b == [0]  # b's ids 1, 2 are empty: ignored
    lenient = match_entities(a, b, iou_threshold=0.4)
    assert sorted(lenient.pairs) == [(0, 3), (1, 0)]  # IoU 0.5 each; greedy keeps one
    assert match_entities(a, a).only_a == [] and len(match_entities(a, a).pairs) == 3
    with pytest.raises(ValueError, match="differ in size"):
        match_entities(a, b[:5])


def test_highlight_colours_only_chosen_entities():
    img = np.full((6, 8, 3), 200, np.uint8)
    ids = np.full((6, 8), -1)
    ids[:, :4] = 0
    ids[:, 4:6] = 1
    out = highlight(img, ids, [1], boundaries=False)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[:, :4] == 70).all() and (out[:, 6:] == 70).all()  # dimmed to 35 %
    assert not (out[:, 4:6] == 70).all()
    assert (highlight(img, ids, [1])[:, 3] == 255).all()  # boundary 0 | 1
    with pytest.raises(ValueError, match="differ in size"):
        highlight(img[:3], ids)


def _outputs(B=1, T=3, Q=4, h=8, w=8):
    torch.manual_seed(0)
    return {
        "image_level": {
            "pred_logits": torch.randn(B * T, Q, 2),
            "pred_masks": torch.randn(B * T, Q, h, w) * 4,
        },
        "batch_level": {
            "pred_logits": torch.randn(B, Q, 2),
            "pred_masks": torch.randn(B, Q, T, h, w) * 4,
        },
    }


def _batch(B=1, T=3):
    boxes = torch.tensor([[0, 0, 40, 30], [0, 0, 28, 21], [12, 9, 40, 30]], dtype=torch.float32)
    return {
        "images": torch.zeros(B * T, 3, 32, 32, dtype=torch.uint8),
        "view_sizes": torch.tensor([[30, 32]] * (B * T)),
        "boxes": boxes[:T].expand(B, T, 4).clone(),
        "orig_sizes": torch.tensor([[30, 40]] * B),
    }


def test_view_entities_single_view_equals_full_view_fusion():
    outputs, batch = _outputs(), _batch()
    fusion = MultiViewFusion()
    per_view = view_entities(outputs, batch, fusion, level="batch")
    assert len(per_view) == 3 and per_view[0]["id_map"].shape == (30, 40)
    b_o = fuse_with_decoder(fusion, outputs, batch, "B-O")[0]  # batch-level, full view only
    assert torch.equal(per_view[0]["id_map"], b_o["id_map"])
    assert (per_view[2]["id_map"][:9] == -1).all()  # outside the bottom-right crop
    img_level = view_entities(outputs, batch, fusion, level="image")
    i_o = fuse_with_decoder(fusion, outputs, batch, "I-O")[0]
    assert torch.equal(img_level[0]["id_map"], i_o["id_map"])
    assert fusion.decoder == "B-OC"  # the caller's fusion is unchanged
    modes = {d: fuse_with_decoder(fusion, outputs, batch, d)[0] for d in DECODER_CHOICES}
    assert torch.equal(modes["B-OC"]["id_map"], fusion(outputs, batch)[0]["id_map"])
    with pytest.raises(ValueError, match="not one of"):
        fuse_with_decoder(fusion, outputs, batch, "X")
    with pytest.raises(ValueError, match="Mask2Former mode"):
        view_entities({"image_level": outputs["image_level"]}, batch, fusion, level="batch")
    with pytest.raises(ValueError, match="out of range"):
        view_entities(outputs, batch, fusion, image=1)


def test_network_outputs_fuse_to_the_predictors_result():
    from hydra.utils import instantiate

    from cropformer.inference.predictor import EntityPredictor
    from cropformer.run.config import compose_config

    torch.manual_seed(0)
    net = instantiate(compose_config(["model=cropformer_tiny"]).model.net)
    fusion = MultiViewFusion()
    predictor = EntityPredictor(net, fusion, short_side=64, max_size=96, num_crops=4)
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    outputs, batch = network_outputs(predictor, [image])
    assert batch["boxes"].shape == (1, 5, 4) and outputs["batch_level"]["pred_masks"].shape[2] == 5
    fused = fusion(outputs, batch)[0]
    assert torch.equal(fused["id_map"], predictor.predict(image)["id_map"])
    assert len(view_entities(outputs, batch, fusion)) == 5
