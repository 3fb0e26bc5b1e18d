"""Greedy multi-view merge (``I-OC-merge``): the documented rule, against a literal re-statement."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from cropformer.inference.fusion import MultiViewFusion
from cropformer.inference.view_merge import (
    GreedyViewMerge,
    ViewOutput,
    _Candidate,
    canvas_shape,
    greedy_groups,
    ios,
    overlap,
)

# a small image with the official geometry: full view + 4 corner crops of 0.7 per side
H, W = 48, 64
PADDED = (32, 44)
VIEW = (32, 43)  # every view resized to this (unpadded) size, as the eval views are
CH, CW = int(0.7 * H), int(0.7 * W)
BOXES = [
    (0, 0, W, H),
    (0, 0, CW, CH),
    (W - CW, 0, W, CH),
    (0, H - CH, CW, H),
    (W - CW, H - CH, W, H),
]
FAR = -12.0  # mask logit far below the threshold


def _random_views(seed: int, Q: int = 6, boxes=BOXES) -> list[ViewOutput]:
    g = torch.Generator().manual_seed(seed)
    h, w = PADDED[0] // 4, PADDED[1] // 4
    return [
        ViewOutput(torch.randn(Q, 2, generator=g), 3 * torch.randn(Q, h, w, generator=g), VIEW, b)
        for b in boxes
    ]


def _logits_of(entity: torch.Tensor, box) -> torch.Tensor:
    """Stride-4 mask logits with which a view of ``box`` predicts ``entity`` (orig-frame bool).

    Shape: entity (H, W) -> (h, w) at stride 4 of PADDED (padding: far below the threshold).
    """
    x0, y0, x1, y1 = box
    part = entity[y0:y1, x0:x1].float()[None, None]
    view = F.interpolate(part, size=VIEW, mode="area")
    padded = torch.zeros(1, 1, *PADDED)
    padded[..., : VIEW[0], : VIEW[1]] = view
    cells = F.avg_pool2d(padded, 4)[0, 0]
    return torch.where(cells > 0.5, 12.0, FAR) + 0.0 * cells


def _view(entities: list[torch.Tensor], probs: list[float], box, Q: int = 4) -> ViewOutput:
    """A view whose first queries predict ``entities`` with entity probabilities ``probs``."""
    h, w = PADDED[0] // 4, PADDED[1] // 4
    masks = torch.full((Q, h, w), FAR)
    logits = torch.zeros(Q, 2)
    logits[:, 1] = 4.0  # the other queries: no-object
    for q, (ent, p) in enumerate(zip(entities, probs, strict=True)):
        masks[q] = _logits_of(ent, box)
        logits[q] = torch.tensor([torch.logit(torch.tensor(p)).item(), 0.0])
    return ViewOutput(logits, masks, VIEW, box)


def _rect(x0, y0, x1, y1) -> torch.Tensor:
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def _merge(views, **kw):
    return GreedyViewMerge(**kw).merge_image(views, padded_hw=PADDED, orig_size=(H, W))


def _same(a, b):
    assert torch.equal(a["id_map"], b["id_map"])
    assert torch.equal(a["scores"], b["scores"])
    assert torch.equal(a["query_indices"], b["query_indices"])


# --------------------------------------------------------------------------- the contract
def test_output_type_shape_and_order_contract():
    pred = _merge(_random_views(0), top_k=4, max_outputs=5)
    assert set(pred) == {"id_map", "scores", "query_indices"}
    M = pred["scores"].numel()
    assert 1 <= M <= 5
    assert pred["id_map"].shape == (H, W) and pred["id_map"].dtype == torch.int32
    assert pred["scores"].dtype == torch.float32 and pred["query_indices"].dtype == torch.int64
    assert pred["query_indices"].shape == (M,)
    assert int(pred["id_map"].min()) >= -1 and int(pred["id_map"].max()) < M
    assert pred["id_map"].device.type == "cpu"
    s = pred["scores"]
    nonempty = torch.bincount(pred["id_map"].flatten() + 1, minlength=M + 1)[1:] > 0
    assert torch.all(s[nonempty] > 0) and torch.all(s[~nonempty] == 0)
    # groups come out by score; only outputs emptied by better ones drop to 0 and break it
    kept = s[nonempty]
    assert torch.all(kept[:-1] >= kept[1:])


def test_drop_empty_removes_outputs_without_pixels():
    # b lies half in a, half in c: below the match threshold with either, and painted over
    a, b, c = _rect(0, 8, 24, 40), _rect(14, 16, 34, 32), _rect(24, 8, 48, 40)
    views = [_view([a, b, c], [0.9, 0.5, 0.8], BOXES[0])]
    keep = _merge(views, match_threshold=0.9)
    drop = _merge(views, match_threshold=0.9, drop_empty=True)
    assert keep["query_indices"].tolist() == [0, 2, 1] and float(keep["scores"][2]) == 0.0
    assert drop["query_indices"].tolist() == [0, 2] and torch.all(drop["scores"] > 0)
    assert torch.equal(drop["scores"], keep["scores"][:2])
    assert torch.equal(drop["id_map"], keep["id_map"])  # ids 0 and 1 keep their pixels


def test_top_k_per_view_and_max_outputs():
    views = _random_views(4, Q=6)
    all_q = _merge(views, top_k=None, max_outputs=None)
    assert _merge(views, top_k=None, max_outputs=3)["scores"].numel() == 3
    one = _merge(views, top_k=1, max_outputs=None)
    assert one["scores"].numel() <= len(views)
    assert one["scores"].numel() < all_q["scores"].numel()
    # top_k=1 keeps each view's most probable query only
    best = {int(v.pred_logits.softmax(-1)[:, 0].argmax()) for v in views}
    assert set(one["query_indices"].tolist()) <= best


# --------------------------------------------------------------------------- the behaviour
@pytest.mark.parametrize("copies", [2, 5])
def test_identical_views_give_the_single_view_result(copies):
    single = _random_views(1, boxes=[BOXES[0]])
    _same(_merge(single), _merge(single * copies))


def test_duplicated_view_set_gives_the_same_result():
    views = _random_views(2)
    _same(_merge(views), _merge([v for v in views for _ in range(2)]))


def test_crop_only_entity_is_kept():
    small = _rect(6, 5, 12, 11)  # inside the top-left crop only, too small for the full view
    empty = torch.zeros(H, W, dtype=torch.bool)
    views = [_view([empty], [0.9], BOXES[0])]
    views += [_view([small if t == 1 else empty], [0.9], BOXES[t]) for t in range(1, 5)]
    pred = _merge(views)
    assert pred["scores"].numel() == 1 and float(pred["scores"][0]) > 0.5
    mask = pred["id_map"] == 0
    iou = (mask & small).sum() / (mask | small).sum()
    assert iou > 0.6
    x0, y0, x1, y1 = BOXES[1]
    assert not mask[y1:].any() and not mask[:, x1:].any()  # never outside the crop


def test_entity_in_full_view_and_crops_is_one_group():
    ent = _rect(20, 12, 44, 30)  # in the full view and in all four crops
    other = _rect(46, 34, 62, 47)  # only in the full view and the bottom-right crop
    views = [_view([ent, other], [0.9, 0.8], BOXES[0])]
    views += [
        _view([ent, other] if t == 4 else [ent], [0.7, 0.6] if t == 4 else [0.7], BOXES[t])
        for t in range(1, 5)
    ]
    pred = _merge(views)
    assert pred["scores"].numel() == 2  # not 5 + 2 duplicates
    assert pred["query_indices"].tolist() == [0, 1]  # the full view's queries lead
    # `other` (16 x 13 px) spans 2-3 stride-4 cells of a view: a coarse but right mask
    for k, (truth, least) in enumerate([(ent, 0.8), (other, 0.6)]):
        mask = pred["id_map"] == k
        assert (mask & truth).sum() / (mask | truth).sum() > least


def test_merged_probability_is_the_mean_over_covering_members():
    # the full view predicts the entity weakly (0.6), the top-left crop strongly: inside the crop
    # the group's probability is their mean, outside the full view's alone
    ent = _rect(20, 12, 44, 30)
    full = _view([ent], [0.9], BOXES[0])
    crop = _view([ent], [0.8], BOXES[1])
    full.mask_logits[0] = torch.where(full.mask_logits[0] > 0, 0.4, FAR)
    one = _merge([full])
    both = _merge([full, crop])
    assert one["scores"].numel() == 1 and both["scores"].numel() == 1
    x0, y0, x1, y1 = BOXES[1]
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    # the mean of 0.6 and ~1 is above 0.5 where both see it; outside the crop it is unchanged
    assert torch.equal((both["id_map"] == 0) & ~inside, (one["id_map"] == 0) & ~inside)
    assert ((both["id_map"] == 0) & inside).sum() >= ((one["id_map"] == 0) & inside).sum()


def _cand(score, box, rect, view=0) -> _Candidate:
    """A candidate of ``view`` on a 40 x 40 canvas whose mask is the rectangle ``rect``."""
    x0, y0, x1, y1 = rect
    mask = torch.ones(y1 - y0, x1 - x0, dtype=torch.bool)
    return _Candidate(view, 0, score, box, mask, rect, int(mask.sum()))


FULL = (0, 0, 40, 40)


def test_ios_and_iou_thresholds_are_inclusive():
    a = _cand(0.9, FULL, (0, 0, 10, 10), view=0)  # area 100
    b = _cand(0.8, FULL, (5, 0, 13, 10), view=1)  # area 80, 50 of it inside a
    assert ios(a, b) == pytest.approx(50 / 80)
    assert overlap(a, b, "iou") == pytest.approx(50 / 130)
    assert greedy_groups([a, b], 0.625, "ios") == [[0, 1]]  # >= merges
    assert greedy_groups([a, b], 0.63, "ios") == [[0], [1]]
    assert greedy_groups([a, b], 50 / 130, "iou") == [[0, 1]]
    assert greedy_groups([a, b], 0.39, "iou") == [[0], [1]]
    c = _cand(0.7, FULL, (20, 20, 30, 30), view=2)  # disjoint
    assert ios(a, c) == 0.0 and greedy_groups([a, c], 0.01, "ios") == [[0], [1]]


def test_overlap_counts_only_where_both_views_see():
    # an entity straddles two overlapping crops: each sees its own part plus the shared columns
    left, right = (0, 0, 28, 40), (12, 0, 40, 40)
    a = _cand(0.9, left, (4, 10, 28, 20), view=1)  # 240 px, 160 of them in the shared columns
    b = _cand(0.8, right, (12, 10, 36, 20), view=2)  # 240 px, 160 shared
    # over the whole masks IOS would be 160 / 240 and IoU 160 / 320; inside both boxes both are 1
    assert ios(a, b) == pytest.approx(1.0) and overlap(a, b, "iou") == pytest.approx(1.0)
    assert greedy_groups([a, b], 0.9, "iou") == [[0, 1]]
    # a full-view mask reaching outside a crop is compared inside the crop only
    full = _cand(0.9, FULL, (0, 10, 40, 20), view=0)  # 400 px
    crop = _cand(0.8, (20, 0, 40, 40), (20, 10, 40, 20), view=1)  # 200 px, all inside full
    assert ios(full, crop) == pytest.approx(1.0) and overlap(full, crop, "iou") == 1.0


def test_iou_keeps_an_entity_nested_in_a_larger_one_apart():
    # an object inside a large region of another view: IOS 1 would merge (and lose) it
    region = _cand(0.9, FULL, (0, 0, 40, 40), view=0)
    thing = _cand(0.8, FULL, (10, 10, 20, 20), view=1)
    assert greedy_groups([region, thing], 0.5, "ios") == [[0, 1]]
    assert greedy_groups([region, thing], 0.5, "iou") == [[0], [1]]


def test_one_candidate_per_view_and_group():
    # two queries of one view with the same mask are two entities of that view
    a = _cand(0.9, FULL, (0, 0, 10, 10), view=0)
    b = _cand(0.8, FULL, (0, 0, 10, 10), view=0)
    c = _cand(0.7, FULL, (0, 0, 10, 10), view=1)
    assert greedy_groups([a, b, c], 0.5, "iou", one_per_view=True) == [[0, 2], [1]]
    assert greedy_groups([a, b, c], 0.5, "iou", one_per_view=False) == [[0, 1, 2]]


def test_candidate_joins_the_first_matching_group_by_leader():
    # a overlaps b and c; b and c do not match each other: both join a (the first group)
    a = _cand(0.9, FULL, (0, 0, 20, 10), view=0)
    b = _cand(0.8, FULL, (0, 0, 10, 10), view=1)
    c = _cand(0.7, FULL, (10, 0, 20, 10), view=2)
    assert greedy_groups([a, b, c], 0.5, "ios") == [[0, 1, 2]]
    # a candidate matching only a non-leader member starts its own group (no chaining)
    d = _cand(0.9, FULL, (0, 0, 10, 10), view=0)
    e = _cand(0.8, FULL, (0, 0, 16, 10), view=1)  # 100/160 >= 0.5 of d: joins d
    f = _cand(0.7, FULL, (12, 0, 22, 10), view=2)  # overlaps e only (40/100), d not at all
    assert greedy_groups([d, e, f], 0.3, "ios") == [[0, 1], [2]]


# --------------------------------------------------------------------------- bounded vs literal
def _literal_merge(
    views, *, thr=0.5, match=0.5, top_k=100, max_out=100, double=False, metric="iou", opv=True
):
    """The rule written out at full resolution with every candidate held at once."""
    cands = []
    for t, v in enumerate(views):
        prob = v.pred_logits.softmax(-1)[:, 0]
        order = torch.sort(prob, descending=True, stable=True).indices[:top_k]
        x0, y0, x1, y1 = v.box
        up = F.interpolate(v.mask_logits[None], size=PADDED, mode="bilinear", align_corners=False)
        up = up[:, :, : v.view_size[0], : v.view_size[1]]
        reg = F.interpolate(up, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0]
        for q in order.tolist():
            logit = torch.full((H, W), float("-inf"))
            logit[y0:y1, x0:x1] = reg[q]
            m = logit > torch.logit(torch.tensor(thr))
            if not m.any():
                continue
            p = logit.sigmoid()
            val = p.sigmoid() if double else p
            score = float(prob[q].double() * (val.double() * m).sum() / (m.sum() + 1e-6))
            inside = _rect(x0, y0, x1, y1)
            cands.append((score, t, q, m, p, inside))
    cands.sort(key=lambda c: -c[0])
    groups: list[list[int]] = []
    for i, (_, t, _, m, _, inside) in enumerate(cands):
        for g in groups:
            if opv and t in {cands[j][1] for j in g}:
                continue
            lm, lin = cands[g[0]][3], cands[g[0]][5]
            both = inside & lin
            a, b = (m & both).sum(), (lm & both).sum()
            inter = (m & lm).sum()
            denom = min(a, b) if metric == "ios" else a + b - inter
            if inter > 0 and inter / denom >= match:
                g.append(i)
                break
        else:
            groups.append([i])
    groups = groups[:max_out]
    id_map = torch.full((H, W), -1, dtype=torch.int32)
    for k in range(len(groups) - 1, -1, -1):
        total = sum(cands[i][4].double() * cands[i][5] for i in groups[k])
        count = sum(cands[i][5].double() for i in groups[k])
        id_map[total > count * thr] = k
    scores = torch.tensor([cands[g[0]][0] for g in groups], dtype=torch.float32)
    area = torch.bincount(id_map.flatten() + 1, minlength=len(groups) + 1)[1:]
    scores[area == 0] = 0
    queries = torch.tensor([cands[g[0]][2] for g in groups])
    return id_map, scores, queries


@pytest.mark.parametrize(
    ("seed", "double", "thr", "metric", "opv"),
    [
        (5, False, 0.5, "iou", True),
        (6, True, 0.5, "ios", True),
        (7, False, 0.4, "iou", False),
        (8, False, 0.5, "ios", False),
    ],
)
def test_bounded_path_equals_the_literal_rule(seed, double, thr, metric, opv):
    views = _random_views(seed, Q=5)
    # canvas = the image (no downscaling); one candidate per resize chunk
    merger = GreedyViewMerge(
        double_sigmoid=double,
        mask_threshold=thr,
        max_outputs=8,
        match_metric=metric,
        match_threshold=0.3,
        one_per_view=opv,
        chunk_memory_mb=1e-3,
    )
    pred = merger.merge_image(views, padded_hw=PADDED, orig_size=(H, W))
    ref_map, ref_scores, ref_q = _literal_merge(
        views, thr=thr, match=0.3, max_out=8, double=double, metric=metric, opv=opv
    )
    assert torch.equal(pred["id_map"], ref_map)
    torch.testing.assert_close(pred["scores"], ref_scores, atol=1e-6, rtol=0)
    assert torch.equal(pred["query_indices"], ref_q)


def test_downscaled_canvas_keeps_the_structured_result():
    ent, other = _rect(20, 12, 44, 30), _rect(46, 34, 62, 47)
    views = [_view([ent, other], [0.9, 0.8], BOXES[0])]
    views += [_view([ent], [0.7], BOXES[t]) for t in range(1, 5)]
    full = _merge(views)
    small = _merge(views, canvas_size=32)  # canvas 24 x 32: half the image
    assert canvas_shape(H, W, 32) == (24, 32) and canvas_shape(H, W, 4096) == (H, W)
    assert torch.equal(full["query_indices"], small["query_indices"])
    assert torch.equal(full["id_map"], small["id_map"])  # painting is at full resolution
    # the scores are means over the masks sampled at a quarter of the pixels
    torch.testing.assert_close(full["scores"], small["scores"], atol=0.05, rtol=0)


# --------------------------------------------------------------------------- the fusion choice
def _batch(view_sets):
    T = len(view_sets[0])
    outputs = {
        "image_level": {
            "pred_logits": torch.stack([v.pred_logits for vs in view_sets for v in vs]),
            "pred_masks": torch.stack([v.mask_logits for vs in view_sets for v in vs]),
            "aux_outputs": [],
        }
    }
    batch = {
        "images": torch.zeros(len(view_sets) * T, 3, *PADDED, dtype=torch.uint8),
        "view_sizes": torch.tensor([list(VIEW)] * (len(view_sets) * T)),
        "boxes": torch.tensor([[list(v.box) for v in vs] for vs in view_sets], dtype=torch.float),
        "orig_sizes": torch.tensor([[H, W]] * len(view_sets)),
        "image_ids": torch.arange(len(view_sets)),
    }
    return outputs, batch


def test_fusion_decoder_choice_merges_every_image_of_the_batch():
    sets = [_random_views(8), _random_views(9)]
    outputs, batch = _batch(sets)
    fusion = MultiViewFusion(decoder="I-OC-merge", double_sigmoid=True, top_k_single_view=4)
    preds = fusion(outputs, batch)
    assert len(preds) == 2
    for pred, views in zip(preds, sets, strict=True):
        _same(pred, _merge(views, double_sigmoid=True, top_k=4, max_outputs=4))
    # a batch-level pass, if present, is not used by the merge
    outputs["batch_level"] = {"pred_logits": torch.zeros(2, 6, 2), "pred_masks": None}
    _same(fusion(outputs, batch)[0], preds[0])


def test_fusion_merge_with_one_view_warns_once():
    outputs, batch = _batch([_random_views(10, boxes=[BOXES[0]])])
    fusion = MultiViewFusion(decoder="I-OC-merge")
    with pytest.warns(UserWarning, match="one view per image"):
        fusion(outputs, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fusion(outputs, batch)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"merge_threshold": 0.0}, "merge_threshold=0.0 must lie in"),
        ({"merge_threshold": 1.5}, "merge_threshold=1.5 must lie in"),
        ({"merge_canvas_size": 0}, "merge_canvas_size=0 must be >= 1"),
        ({"decoder": "I-OC"}, "decoder=.I-OC. is not one of"),
        ({"merge_metric": "giou"}, "merge_metric=.giou. is not one of"),
    ],
)
def test_bad_merge_settings_are_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiViewFusion(**kwargs)


def test_merge_needs_a_view():
    with pytest.raises(ValueError, match="at least one view"):
        _merge([])


def test_mask2former_predicts_each_test_view_on_its_own_and_merges_them():
    # the eval path: CropFormerModule.predict_entities on a batch of 1 image x 5 views
    from cropformer.run.config import compose_config
    from cropformer.training.module import CropFormerModule

    cfg = compose_config(["model=mask2former_tiny"]).model
    torch.manual_seed(0)
    fusion = {**OmegaConf.to_container(cfg.fusion), "decoder": "I-OC-merge"}
    module = CropFormerModule(net=cfg.net, criterion=cfg.criterion, fusion=fusion).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 64, 96), generator=g, dtype=torch.uint8)
    orig = (192, 288)
    ch, cw = int(0.7 * orig[0]), int(0.7 * orig[1])
    boxes = [
        (0, 0, orig[1], orig[0]),
        (0, 0, cw, ch),
        (orig[1] - cw, 0, orig[1], ch),
        (0, orig[0] - ch, cw, orig[0]),
        (orig[1] - cw, orig[0] - ch, orig[1], orig[0]),
    ]
    batch = {
        "images": images,
        "view_sizes": torch.tensor([[64, 96]] * 5),
        "boxes": torch.tensor([boxes], dtype=torch.float32),
        "orig_sizes": torch.tensor([orig]),
        "image_ids": torch.tensor([1]),
    }
    with torch.no_grad():
        out = module(batch, aux=False)
        alone = [module.net(images[t : t + 1], num_views=1, aux=False) for t in range(5)]
    # no association: one image-level prediction per view, each as if the view were alone
    assert set(out) == {"image_level"}
    assert out["image_level"]["pred_masks"].shape[0] == 5
    for t in range(5):
        for key in ("pred_logits", "pred_masks"):
            torch.testing.assert_close(
                out["image_level"][key][t], alone[t]["image_level"][key][0], atol=1e-4, rtol=0
            )
    pred = module.predict_entities(batch)
    assert len(pred) == 1 and pred[0]["id_map"].shape == orig
    views = [
        ViewOutput(
            out["image_level"]["pred_logits"][t], out["image_level"]["pred_masks"][t], (64, 96), b
        )
        for t, b in enumerate(boxes)
    ]
    merger = GreedyViewMerge(double_sigmoid=module.fusion.double_sigmoid)
    _same(pred[0], merger.merge_image(views, padded_hw=(64, 96), orig_size=orig))
