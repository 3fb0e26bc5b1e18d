"""The fast class-aware inference gives exactly the outputs of the straightforward algorithm.

``_reference`` below is the previous implementation written compactly (full (Q, H, W)
probabilities, then Mask2Former's instance / panoptic post-processing on per-pair float copies
with a per-segment loop over full-resolution masks); ``ClassAwareFusion`` must reproduce its
ids, masks and labels exactly and its scores to 1e-6 on seeded inputs: odd sizes, crops, several
Q and C, thing / stuff mixes, exact ties, no kept segment.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from cropformer.inference.class_fusion import ClassAwareFusion
from cropformer.inference.postprocess import semantic_inference
from cropformer.inference.regions import int_box


def _ref_instance(logits: Tensor, probs: Tensor, top_k: int, isthing: Any) -> dict[str, Tensor]:
    Q, C = logits.shape[0], logits.shape[1] - 1
    scores = logits.softmax(-1)[:, :-1]
    labels = torch.arange(C).repeat(Q)
    s, flat = scores.flatten().topk(min(top_k, scores.numel()), sorted=False)
    lab, query = labels[flat], flat // C
    if isthing is not None:
        keep = torch.tensor(isthing)[lab]
        s, lab, query = s[keep], lab[keep], query[keep]
    p = probs[query]
    masks = p > 0.5
    binary = masks.flatten(1).float()
    mask_scores = (p.flatten(1) * binary).sum(1) / (binary.sum(1) + 1e-6)
    return {"masks": masks, "scores": s * mask_scores, "labels": lab, "query_indices": query}


def _ref_panoptic(
    logits: Tensor, probs: Tensor, isthing: list[bool], f: ClassAwareFusion
) -> tuple[Tensor, list[dict[str, Any]]]:
    scores, labels = logits.softmax(-1).max(-1)
    queries = torch.nonzero(labels.ne(logits.shape[1] - 1) & (scores > f.object_mask_threshold))
    queries = queries.flatten()
    pan = torch.zeros(probs.shape[-2:], dtype=torch.int32)
    segments: list[dict[str, Any]] = []
    if queries.numel() == 0:
        return pan, segments
    cur_scores, cur_masks = scores[queries], probs[queries]
    mask_ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    stuff: dict[int, int] = {}
    for k in range(int(queries.numel())):
        cls = int(labels[queries[k]])
        won, own = mask_ids == k, cur_masks[k] >= 0.5
        mask = won & own if f.segment_pixels == "official" else won
        if int(won.sum()) == 0 or int(own.sum()) == 0 or not bool(mask.any()):
            continue
        ratio = int(won.sum()) / int(own.sum())
        if ratio < f.overlap_threshold or (f.overlap_strict and ratio == f.overlap_threshold):
            continue
        if not isthing[cls]:
            if cls in stuff:
                pan[mask] = stuff[cls]
                continue
            stuff[cls] = len(segments) + 1
        pan[mask] = len(segments) + 1
        segments.append(
            {
                "id": len(segments) + 1,
                "category": cls,
                "isthing": isthing[cls],
                "score": float(cur_scores[k]),
                "query": int(queries[k]),
            }
        )
    return pan, segments


def _ref_probs(f: ClassAwareFusion, views: list, padded_hw: Any, hw: Any) -> Tensor:
    H, W = hw
    boxes = [int_box(box, H, W) for _, _, box in views]
    full_ids = [i for i, box in enumerate(boxes) if box == (0, 0, W, H)]
    Q = int(views[0][0].shape[0])
    canvas = f._fused_canvas(
        views, boxes, full_ids, torch.arange(Q), padded_hw, hw, torch.device("cpu"),
        apply_sigmoid=True,
    )  # fmt: skip
    coverage = torch.full((H, W), 1e-16)
    for x0, y0, x1, y1 in boxes:
        coverage[y0:y1, x0:x1] += 1.0
    return canvas if len(views) == 1 and boxes[0] == (0, 0, W, H) else canvas / coverage


def _reference(f: ClassAwareFusion, outputs: dict, batch: dict) -> list[dict[str, Any]]:
    """The previous ClassAwareFusion.__call__ (B-OC / I-O), CPU."""
    B, T = batch["boxes"].shape[:2]
    padded = tuple(batch["images"].shape[-2:])
    results = []
    for b in range(B):
        if "batch_level" in outputs and f.decoder == "B-OC":
            logits = outputs["batch_level"]["pred_logits"][b]
            m = outputs["batch_level"]["pred_masks"][b]
            views = [
                (m[:, t], batch["view_sizes"][b * T + t].tolist(), batch["boxes"][b][t].tolist())
                for t in range(T)
            ]
        else:
            logits = outputs["image_level"]["pred_logits"][b * T]
            views = [
                (
                    outputs["image_level"]["pred_masks"][b * T],
                    batch["view_sizes"][b * T].tolist(),
                    batch["boxes"][b][0].tolist(),
                )
            ]
        hw = tuple(batch["orig_sizes"][b].tolist())
        probs = _ref_probs(f, views, padded, hw)
        thing = f.isthing
        assert thing is not None
        out: dict[str, Any] = {}
        if f.task in ("panoptic", "semantic"):
            out["semantic"] = semantic_inference(logits, probs).argmax(0)
        if f.task in ("panoptic", "instance"):
            out["instances"] = _ref_instance(
                logits, probs, f.top_k, thing if f.task == "panoptic" else None
            )
        if f.task == "panoptic":
            out["panoptic"], out["segments"] = _ref_panoptic(logits, probs, thing, f)
            out["id_map"] = out["panoptic"] - 1
        elif f.task == "instance":
            inst = out["instances"]
            keep = (inst["scores"] >= f.instance_score_threshold).nonzero().flatten()
            keep = keep[inst["scores"][keep].argsort(descending=True, stable=True)]
            id_map = torch.full(hw, -1, dtype=torch.int32)
            for k in reversed(range(int(keep.numel()))):
                id_map[inst["masks"][keep[k]]] = k
            out["id_map"] = id_map
            out["labels"] = inst["labels"][keep]
            out["query_indices"] = inst["query_indices"][keep]
        results.append(out)
    return results


def _case(seed: int, H: int, W: int, T: int, Q: int, C: int, ties: bool, none_kept: bool):
    """Outputs and batch of B=2 images: region-like mask logits, some confident queries."""
    g = torch.Generator().manual_seed(seed)
    B, ph, pw, h, w = 2, 48, 64, 12, 16
    regions = torch.randint(0, Q, (B, T, 4, 5), generator=g)
    onehot = F.one_hot(regions, Q).permute(0, 4, 1, 2, 3).float()  # (B, Q, T, 4, 5)
    low = 12 * onehot - 6 + 2 * torch.randn(onehot.shape, generator=g)
    masks = F.interpolate(low.flatten(1, 2), size=(h, w), mode="bilinear").view(B, Q, T, h, w)
    cls = torch.randn(B, Q, C + 1, generator=g)
    confident = torch.randperm(Q, generator=g)[: Q // 2]
    cls[:, confident, torch.randint(0, C, (len(confident),), generator=g)] += 7.0
    if ties:  # exact per-pixel ties: query 1 repeats query 0 (masks and classes)
        masks[:, 1], cls[:, 1] = masks[:, 0], cls[:, 0]
        masks[:, :3] = masks[:, :3].clamp(min=-30) * 10  # saturated sigmoids: probs 0 or 1
    if none_kept:
        cls[..., -1] += 20.0
    boxes, sizes, hws = [], [], [[H, W], [H - 3, W + 2]]
    for ih, iw in hws:
        bx = [[0.0, 0.0, float(iw), float(ih)]]
        for _ in range(T - 1):
            x0 = int(torch.randint(0, iw // 2, (1,), generator=g))
            y0 = int(torch.randint(0, ih // 2, (1,), generator=g))
            bx.append([x0, y0, x0 + iw // 2 + 1, y0 + ih // 2 + 1])
        boxes.append(bx)
        sizes += [[int(torch.randint(30, ph + 1, (1,), generator=g)), pw - 3] for _ in range(T)]
    batch = {
        "images": torch.zeros(B * T, 3, ph, pw),
        "view_sizes": torch.tensor(sizes),
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "orig_sizes": torch.tensor(hws),
    }
    outputs = {
        "image_level": {
            "pred_logits": cls.repeat_interleave(T, 0),
            "pred_masks": masks.transpose(1, 2).flatten(0, 1),
        },
        "batch_level": {"pred_logits": cls, "pred_masks": masks},
    }
    return outputs, batch


CASES = [
    # seed, H, W, T, Q, C, ties, none kept
    (0, 37, 53, 3, 10, 4, False, False),
    (1, 64, 48, 1, 12, 3, True, False),
    (2, 31, 45, 5, 20, 6, True, False),
    (3, 40, 40, 2, 7, 1, False, False),
    (4, 33, 61, 3, 9, 5, False, True),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_fast_class_aware_inference_equals_reference(case: tuple, task: str) -> None:
    seed, *_, C = case[:6]
    outputs, batch = _case(*case)
    isthing = [bool((seed + c) % 3) for c in range(C)]
    settings: list[dict[str, Any]] = [{}]
    if task == "panoptic":
        settings += [
            {"overlap_threshold": 0.3, "segment_pixels": "argmax", "overlap_strict": True},
            {"decoder": "I-O", "overlap_threshold": 0.0, "object_mask_threshold": 0.3, "top_k": 7},
        ]
    if task == "instance":
        settings += [{"top_k": 5, "instance_score_threshold": 0.0, "query_chunk_size": 3}]
    for kw in settings:
        f = ClassAwareFusion(task=task, isthing=isthing, **kw)
        for new, ref in zip(f(outputs, batch), _reference(f, outputs, batch)):
            for key in ("semantic", "panoptic", "id_map", "labels", "query_indices"):
                if key in ref:
                    assert torch.equal(new[key], ref[key].to(new[key].dtype)), (kw, key)
            if "segments" in ref:
                assert len(new["segments"]) == len(ref["segments"])
                for a, b in zip(new["segments"], ref["segments"]):
                    assert a == b, kw
            if "instances" in ref:
                for key in ("masks", "labels", "query_indices"):
                    assert torch.equal(new["instances"][key], ref["instances"][key]), (kw, key)
                torch.testing.assert_close(
                    new["instances"]["scores"], ref["instances"]["scores"], rtol=0, atol=1e-6
                )


def test_cases_cover_kept_and_merged_segments() -> None:
    """The seeded cases are not trivial: segments are kept, stuff merges, some image has none."""
    counts = []
    for case in CASES:
        outputs, batch = _case(*case)
        isthing = [bool((case[0] + c) % 3) for c in range(case[5])]
        f = ClassAwareFusion(task="panoptic", isthing=isthing, overlap_threshold=0.3)
        counts += [len(r["segments"]) for r in _reference(f, outputs, batch)]
    assert min(counts) == 0 and max(counts) >= 3
