"""Class-aware post-processing against transformers' Mask2FormerImageProcessor (in-run peer).

Both run on the same logits. transformers first resizes the mask logits to 384 x 384 (bilinear);
the logits here are already that size, so that resize is the identity and the comparison is of
the post-processing itself.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cropformer.inference.postprocess import (
    instance_inference,
    panoptic_inference,
    semantic_inference,
)

transformers = pytest.importorskip("transformers")
Q, C, S = 24, 7, 384
ISTHING = [True, True, True, False, True, False, False]
# Classes of the confident queries: things repeat, each stuff class (3, 5, 6) once. transformers
# resets its running segment id to the fused one after fusing a stuff class, so the next segment
# reuses an id already given; where no stuff class repeats the two number segments alike. The
# merging itself is checked against the official rule below.
STUFF_ONCE = [0, 3, 1, 5, 2, 2, 6, 0, 4, 1]


@pytest.fixture(scope="module")
def processor():
    from transformers import Mask2FormerImageProcessor

    return Mask2FormerImageProcessor()


def _logits(seed: int, confident: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(2, Q, C + 1, generator=g)
    if confident:  # ten queries clearly above the 0.8 object threshold, three of them stuff
        for b in range(2):
            for q, c in enumerate(STUFF_ONCE):
                cls[b, 2 * q, c] += 9.0
    # the confident queries share out an 8x8 layout (smooth borders where they overlap, as real
    # mask logits do); the others are noise
    low = torch.randn(2, Q, 8, 8, generator=g) * 1.5 - 3.0
    owner = torch.randint(0, 10, (2, 8, 8), generator=g)
    for j in range(10):
        low[:, 2 * j] += 7.0 * (owner == j).float()
    masks = torch.nn.functional.interpolate(low, size=(S, S), mode="bilinear", align_corners=False)
    return cls, masks


def _out(cls: torch.Tensor, masks: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(class_queries_logits=cls, masks_queries_logits=masks)


@pytest.mark.parametrize("seed", [0, 1])
def test_semantic_equals_transformers(processor, seed):
    cls, masks = _logits(seed)
    ref = processor.post_process_semantic_segmentation(_out(cls, masks))
    for b in range(2):
        ours = semantic_inference(cls[b], masks[b].sigmoid())
        assert ours.shape == (C, S, S)
        assert torch.equal(ours.argmax(0), ref[b])


@pytest.mark.parametrize("seed", [0, 1])
def test_instance_equals_transformers(processor, seed):
    cls, masks = _logits(seed)
    ref = processor.post_process_instance_segmentation(
        _out(cls, masks), threshold=0.0, return_binary_maps=True
    )
    for b in range(2):
        ours = instance_inference(cls[b], masks[b].sigmoid(), top_k=Q)
        nonempty = ours["masks"].flatten(1).any(1)  # transformers drops empty masks
        info = ref[b]["segments_info"]
        assert [s["label_id"] for s in info] == ours["labels"][nonempty].tolist()
        assert [s["score"] for s in info] == [round(float(v), 6) for v in ours["scores"][nonempty]]
        assert torch.equal(ref[b]["segmentation"].bool(), ours["masks"][nonempty])
    # the official panoptic model keeps things only in its instance output
    things = instance_inference(cls[0], masks[0].sigmoid(), top_k=Q, isthing=ISTHING)
    assert all(ISTHING[k] for k in things["labels"].tolist()) and len(things["labels"]) < Q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_panoptic_equals_transformers_with_its_flags(processor, seed):
    cls, masks = _logits(seed)
    stuff = {k for k, t in enumerate(ISTHING) if not t}
    ref = processor.post_process_panoptic_segmentation(
        _out(cls, masks), threshold=0.8, label_ids_to_fuse=stuff
    )
    differs = False
    for b in range(2):
        probs = masks[b].sigmoid()
        pan, segs = panoptic_inference(
            cls[b], probs, isthing=ISTHING, segment_pixels="argmax", overlap_strict=True
        )
        assert len(segs) >= 3
        # transformers: 0 = "no segment" and ids from 1 (its map starts at 0, not -1)
        assert torch.equal(pan, ref[b]["segmentation"].to(torch.int32))
        # transformers lists a fused stuff segment once per query: compare the distinct ones
        theirs = {(s["id"], s["label_id"]) for s in ref[b]["segments_info"]}
        assert theirs == {(s["id"], s["category"]) for s in segs}
        first_score = {}
        for s in ref[b]["segments_info"]:
            first_score.setdefault(s["id"], s["score"])
        assert [first_score[s["id"]] for s in segs] == [round(s["score"], 6) for s in segs]
        # the official rule leaves pixels below the mask threshold void: a subset of the above
        official, _ = panoptic_inference(cls[b], probs, isthing=ISTHING)
        assert bool(((official == 0) | (official == pan)).all())
        differs |= bool((official != pan).any())
    assert differs  # the flags matter on these logits


def test_panoptic_merges_each_stuff_class_into_one_segment():
    probs = torch.zeros(4, 6, 6)
    probs[0, :, :2] = 0.9  # stuff class 3
    probs[1, :, 2:4] = 0.9  # thing class 0
    probs[2, :, 4:] = 0.9  # stuff class 3 again: same segment as query 0
    probs[3, :3, :] = 0.2  # below the mask threshold everywhere: never a segment
    cls = torch.full((4, C + 1), -5.0)
    for q, c in enumerate([3, 0, 3, 1]):
        cls[q, c] = 5.0
    pan, segs = panoptic_inference(cls, probs, isthing=ISTHING)
    assert [(s["id"], s["category"], s["isthing"], s["query"]) for s in segs] == [
        (1, 3, False, 0),
        (2, 0, True, 1),
    ]
    assert (pan[:, :2] == 1).all() and (pan[:, 2:4] == 2).all() and (pan[:, 4:] == 1).all()


def test_panoptic_without_confident_queries_is_void():
    cls = torch.zeros(5, C + 1)
    cls[:, -1] = 5.0  # every query says no-object
    pan, segs = panoptic_inference(cls, torch.rand(5, 8, 8), isthing=ISTHING)
    assert segs == [] and not pan.any()
    with pytest.raises(ValueError, match="isthing has 2 flags for 7 classes"):
        panoptic_inference(cls, torch.rand(5, 8, 8), isthing=[True, False])
