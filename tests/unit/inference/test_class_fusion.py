"""ClassAwareFusion: batch-level class probabilities with the entity fusion's mask probabilities,
then Mask2Former's class-aware inference (crops off = Mask2Former exactly)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cropformer.inference.class_fusion import ClassAwareFusion
from cropformer.inference.postprocess import (
    instance_inference,
    panoptic_inference,
    semantic_inference,
)

C, Q = 4, 6
ISTHING = [True, False, True, False]


def _batch(T: int, H: int = 40, W: int = 56) -> dict:
    boxes = [[0, 0, W, H]] + [[0, 0, 28, 20]] * (T - 1)
    sizes = [[H, W]] + [[20, 28]] * (T - 1)
    return {
        "images": torch.zeros(T, 3, 64, 64),
        "view_sizes": torch.tensor(sizes),
        "boxes": torch.tensor([boxes], dtype=torch.float32),
        "orig_sizes": torch.tensor([[H, W]]),
    }


def _logits(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(Q, C + 1, generator=g)
    cls[torch.arange(4), torch.tensor([0, 1, 2, 3])] += 8.0
    return cls


def test_single_view_is_mask2former_inference():
    g = torch.Generator().manual_seed(1)
    masks = 4 * torch.randn(1, Q, 16, 16, generator=g)
    cls = _logits()
    batch = _batch(1)
    fusion = ClassAwareFusion(task="panoptic", isthing=ISTHING)
    (out,) = fusion({"image_level": {"pred_logits": cls[None], "pred_masks": masks}}, batch)
    # official sem_seg_postprocess: to the padded size, cut the padding, to the original size
    up = F.interpolate(masks, size=(64, 64), mode="bilinear", align_corners=False)[:, :, :40, :56]
    probs = up[0].sigmoid()
    assert torch.equal(out["semantic"], semantic_inference(cls, probs).argmax(0))
    pan, segs = panoptic_inference(cls, probs, isthing=ISTHING)
    assert torch.equal(out["panoptic"], pan) and out["segments"] == segs
    inst = instance_inference(cls, probs, isthing=ISTHING)
    for key in ("masks", "scores", "labels"):
        assert torch.equal(out["instances"][key], inst[key])
    assert set(out["instances"]["labels"].tolist()) <= {0, 2}  # panoptic model: things only
    # the writers' view: one output per segment, its class
    assert out["labels"].tolist() == [s["category"] for s in segs]
    assert torch.equal(out["id_map"], pan - 1)


def test_views_are_averaged_and_classes_come_from_the_batch_level_pass():
    T = 2
    cls_image = torch.full((T, Q, C + 1), -5.0)
    cls_image[:, :, -1] = 5.0  # the image-level pass says no-object everywhere
    cls_batch = _logits()[None]
    masks = torch.zeros(1, Q, T, 16, 16)
    masks[:, :, 0] = 2.0  # full view: every query on everywhere
    masks[:, :, 1] = -2.0  # crop view (top-left 28 x 20): off
    outputs = {
        "image_level": {"pred_logits": cls_image, "pred_masks": torch.zeros(T, Q, 16, 16)},
        "batch_level": {"pred_logits": cls_batch, "pred_masks": masks},
    }
    fusion = ClassAwareFusion(task="semantic", isthing=ISTHING)
    probs = fusion.fused_probabilities(
        [
            (masks[0, :, t], s, b)
            for t, (s, b) in enumerate(zip([[40, 56], [20, 28]], _batch(T)["boxes"][0].tolist()))
        ],
        (64, 64),
        (40, 56),
    )
    s2 = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(probs[:, 30, 40], torch.full((Q,), float(s2)))  # full view only
    torch.testing.assert_close(probs[:, 5, 5], torch.full((Q,), 0.5))  # (s(2) + s(-2)) / 2
    (out,) = fusion(outputs, _batch(T))
    assert torch.equal(out["semantic"], semantic_inference(cls_batch[0], probs).argmax(0))
    # I-O: the full view's image-level classes (no-object everywhere here) -> no segment at all
    (io,) = ClassAwareFusion(task="panoptic", isthing=ISTHING, decoder="I-O")(outputs, _batch(T))
    (boc,) = ClassAwareFusion(task="panoptic", isthing=ISTHING)(outputs, _batch(T))
    assert io["segments"] == [] and len(boc["segments"]) > 0
    assert out["category_ids"] == out["labels"].tolist()  # default ids 0..C-1


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="not one of"):
        ClassAwareFusion(task="entity")
    fusion = ClassAwareFusion(task="panoptic")
    outputs = {
        "image_level": {"pred_logits": _logits()[None], "pred_masks": torch.zeros(1, Q, 16, 16)}
    }
    with pytest.raises(ValueError, match="has no classes"):
        fusion(outputs, _batch(1))
    fusion.set_classes([True, False])
    with pytest.raises(ValueError, match="gives 4 classes but the data has 2"):
        fusion(outputs, _batch(1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"object_mask_threshold": 1.5}, r"object_mask_threshold=1.5 must lie in \[0, 1\]"),
        ({"overlap_threshold": "high"}, r"overlap_threshold='high' must lie in \[0, 1\]"),
        ({"instance_score_threshold": -0.1}, r"instance_score_threshold=-0.1 must lie"),
        ({"top_k": 0}, r"top_k=0 must be an integer >= 1"),
        ({"top_k": 2.5}, r"top_k=2.5 must be an integer >= 1"),
        ({"segment_pixels": "max"}, r"segment_pixels='max' is not one of"),
        # the view merge is entity-only: its crops-only fallback would fuse the wrong views
        ({"decoder": "I-OC-merge"}, r"decoder='I-OC-merge' merges entity outputs only"),
    ],
)
def test_bad_settings_are_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        ClassAwareFusion(task="panoptic", isthing=ISTHING, **kwargs)
    assert "\n" not in str(err.value)


def test_settings_of_the_other_fusion_are_named():
    from cropformer.inference.class_fusion import check_fusion_options
    from cropformer.utils.errors import UserError

    class_aware = {
        "_target_": "cropformer.inference.class_fusion.ClassAwareFusion",
        "task": "instance",
    }
    entity = {"_target_": "cropformer.inference.fusion.MultiViewFusion"}
    check_fusion_options(class_aware, ["decoder", "top_k", "segment_pixels"])
    check_fusion_options(entity, ["decoder", "double_sigmoid", "merge_metric"])
    with pytest.raises(UserError, match=r"^inference.fusion.top_k: a class-aware setting"):
        check_fusion_options(entity, ["decoder", "top_k"])
    with pytest.raises(UserError, match=r"^x.double_sigmoid: an entity-fusion setting.*instance"):
        check_fusion_options(class_aware, ["double_sigmoid"], prefix="x")
