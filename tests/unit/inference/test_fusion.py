"""Multi-view fusion: behaviour against a literal re-statement of the official algorithm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cropformer.inference.fusion import MultiViewFusion


def _naive_official(logits, masks, view_sizes, boxes, padded, orig, *, double=True):
    """The official whole-view fusion written out literally (all queries at once).

    logits (Q, 2); masks (Q, T, h, w); boxes T x (x0, y0, x1, y1) with view 0 the full view.
    """
    H, W = orig
    prob = logits.softmax(-1)[:, 0]
    up = F.interpolate(masks, size=padded, mode="bilinear", align_corners=False)
    per_view = []
    for t in range(masks.shape[1]):
        vh, vw = view_sizes[t]
        x0, y0, x1, y1 = boxes[t]
        v = up[:, t : t + 1, :vh, :vw].permute(1, 0, 2, 3)
        v = F.interpolate(v, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
        per_view.append(v[0].sigmoid())
    fused = torch.zeros(masks.shape[0], H, W)
    count = torch.zeros(masks.shape[0], H, W) + 1e-16
    for t in range(1, masks.shape[1]):
        x0, y0, x1, y1 = boxes[t]
        fused[:, y0:y1, x0:x1] += per_view[t]
        count[:, y0:y1, x0:x1] += 1
    fused += per_view[0]
    count += 1
    fused = fused / count
    binary = fused > 0.5
    sorted_p, ranks = torch.sort(prob, stable=True)
    mask_id = torch.full((H, W), -1, dtype=torch.long)
    for q in ranks.tolist():
        mask_id[binary[q]] = q
    order = ranks.flip(0)
    val = fused.sigmoid() if double else fused
    id_map = torch.full((H, W), -1, dtype=torch.int32)
    scores = []
    for k, q in enumerate(order.tolist()):
        m = mask_id == q
        id_map[m] = k
        scores.append(prob[q] * (val[q] * m).sum() / (m.sum() + 1e-6))
    return id_map, torch.stack(scores), order


def _random_case(seed=0, Q=7, orig=(53, 71), view=(32, 44), padded=(32, 64), crop=0.7):
    g = torch.Generator().manual_seed(seed)
    H, W = orig
    ch, cw = int(crop * H), int(crop * W)
    boxes = [
        (0, 0, W, H),
        (0, 0, cw, ch),
        (W - cw, 0, W, ch),
        (0, H - ch, cw, H),
        (W - cw, H - ch, W, H),
    ]
    T = len(boxes)
    h, w = padded[0] // 4, padded[1] // 4
    logits = torch.randn(Q, 2, generator=g)
    masks = 3 * torch.randn(Q, T, h, w, generator=g)
    view_sizes = [view] * T
    return logits, masks, view_sizes, boxes, padded, orig


def _as_batch(cases):
    """Pack single-image cases into (outputs, batch) per the schema (same padded size)."""
    T = cases[0][1].shape[1]
    padded = cases[0][4]
    outputs = {
        "image_level": {
            "pred_logits": torch.cat([c[0][None].expand(T, -1, -1) for c in cases]),
            "pred_masks": torch.cat([c[1].permute(1, 0, 2, 3) for c in cases]),
            "aux_outputs": [],
        },
        "batch_level": {
            "pred_logits": torch.stack([c[0] for c in cases]),
            "pred_masks": torch.stack([c[1] for c in cases]),
            "aux_outputs": [],
        },
    }
    batch = {
        "images": torch.zeros(len(cases) * T, 3, *padded, dtype=torch.uint8),
        "view_sizes": torch.tensor([vs for c in cases for vs in c[2]]),
        "boxes": torch.tensor([c[3] for c in cases], dtype=torch.float32),
        "orig_sizes": torch.tensor([c[5] for c in cases]),
        "image_ids": torch.arange(len(cases)),
    }
    return outputs, batch


@pytest.mark.parametrize("double", [True, False])
def test_matches_literal_official_algorithm(double):
    case = _random_case(seed=1)
    outputs, batch = _as_batch([case])
    pred = MultiViewFusion(double_sigmoid=double)(outputs, batch)[0]
    ref_map, ref_scores, ref_order = _naive_official(*case, double=double)
    assert (pred["id_map"] != ref_map).sum().item() == 0
    torch.testing.assert_close(pred["scores"], ref_scores, atol=1e-6, rtol=0)
    assert torch.equal(pred["query_indices"], ref_order)


def test_double_sigmoid_changes_scores_exactly_as_specified():
    case = _random_case(seed=2)
    outputs, batch = _as_batch([case])
    one = MultiViewFusion(double_sigmoid=False)(outputs, batch)[0]
    two = MultiViewFusion(double_sigmoid=True)(outputs, batch)[0]
    assert torch.equal(one["id_map"], two["id_map"])  # masks do not depend on the flag
    # recompute both factors by hand from the fused probability
    _, masks, view_sizes, boxes, padded, orig = case
    logits = case[0]
    prob = logits.softmax(-1)[:, 0]
    ref_map, _, order = _naive_official(*case)
    up = F.interpolate(masks, size=padded, mode="bilinear", align_corners=False)
    fused = torch.zeros(masks.shape[0], *orig)
    count = torch.zeros(orig) + 1e-16
    for t, (x0, y0, x1, y1) in enumerate(boxes):
        vh, vw = view_sizes[t]
        v = F.interpolate(up[:, t : t + 1, :vh, :vw], size=(y1 - y0, x1 - x0), mode="bilinear")
        fused[:, y0:y1, x0:x1] += v[:, 0].sigmoid()
        count[y0:y1, x0:x1] += 1
    fused /= count
    for k, q in enumerate(order.tolist()):
        m = ref_map == k
        if m.sum() == 0:
            assert one["scores"][k] == 0 and two["scores"][k] == 0
            continue
        torch.testing.assert_close(
            one["scores"][k], prob[q] * fused[q][m].mean(), atol=1e-6, rtol=0
        )
        torch.testing.assert_close(
            two["scores"][k], prob[q] * fused[q][m].sigmoid().mean(), atol=1e-6, rtol=0
        )
        # the second sigmoid squeezes the factor into (sigmoid(0.5), sigmoid(1)]
        assert 0.6224 < float(two["scores"][k] / prob[q]) <= 0.7311


@pytest.mark.parametrize("chunk", [1, 3])
def test_chunked_equals_unchunked(chunk):
    case = _random_case(seed=3, Q=10)
    outputs, batch = _as_batch([case])
    full = MultiViewFusion(query_chunk_size=None)(outputs, batch)[0]
    part = MultiViewFusion(query_chunk_size=chunk)(outputs, batch)[0]
    tiny_budget = MultiViewFusion(chunk_memory_mb=1e-6)(outputs, batch)[0]  # 1 query per chunk
    for p in (part, tiny_budget):
        assert torch.equal(full["id_map"], p["id_map"])
        assert torch.equal(full["query_indices"], p["query_indices"])
        torch.testing.assert_close(full["scores"], p["scores"], atol=1e-7, rtol=0)


def test_identical_views_equal_the_single_view():
    Q, h, w = 6, 8, 11
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(Q, 2, generator=g)
    view_logits = 3 * torch.randn(Q, 1, h, w, generator=g)
    orig = (45, 61)
    padded = (h * 4, w * 4)
    view = (30, 41)
    single = _as_batch([(logits, view_logits, [view], [(0, 0, 61, 45)], padded, orig)])
    triple = _as_batch(
        [
            (
                logits,
                view_logits.expand(-1, 3, -1, -1),
                [view] * 3,
                [(0, 0, 61, 45)] * 3,
                padded,
                orig,
            )
        ]
    )
    a = MultiViewFusion(decoder="B-OC")(*single)[0]
    b = MultiViewFusion(decoder="B-OC")(*triple)[0]
    assert torch.equal(a["id_map"], b["id_map"])
    assert torch.equal(a["query_indices"], b["query_indices"])
    torch.testing.assert_close(a["scores"], b["scores"], atol=1e-6, rtol=0)


def test_crop_prediction_lands_at_its_box():
    H, W = 40, 60
    box = (21, 9, 56, 33)  # x0, y0, x1, y1
    Q, padded = 3, (32, 32)
    masks = torch.full((Q, 2, 8, 8), -10.0)
    masks[1, 1] = 10.0  # query 1 covers the whole crop view, nothing in the full view
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    case = (logits, masks, [(24, 32), (32, 28)], [(0, 0, W, H), box], padded, (H, W))
    outputs, batch = _as_batch([case])
    pred = MultiViewFusion(decoder="B-C")(outputs, batch)[0]
    k = pred["query_indices"].tolist().index(1)
    expected = torch.full((H, W), -1, dtype=torch.int32)
    expected[box[1] : box[3], box[0] : box[2]] = k
    assert torch.equal(pred["id_map"], expected)
    # with the full view (all background) averaged in, the crop region is at 0.5 -> not above
    pred_oc = MultiViewFusion(decoder="B-OC")(outputs, batch)[0]
    assert (pred_oc["id_map"] == -1).all()


def test_overlap_goes_to_most_probable_query_and_outputs_never_overlap():
    H, W = 20, 20
    masks = torch.full((3, 1, 5, 5), -10.0)
    masks[0, 0, :, :3] = 10.0  # left 3/5, entity prob lowest
    masks[1, 0, :, 2:] = 10.0  # right 3/5, most probable
    masks[2, 0, 1:4, 1:4] = 10.0  # centre, middle probability
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]])
    case = (logits, masks, [(20, 20)], [(0, 0, W, H)], (20, 20), (H, W))
    outputs, batch = _as_batch([case])
    pred = MultiViewFusion(decoder="B-OC")(outputs, batch)[0]
    assert pred["query_indices"].tolist() == [1, 2, 0]  # by entity probability
    id_map = pred["id_map"]
    masks_out = torch.stack([id_map == k for k in range(3)])
    assert masks_out.sum(0).max() <= 1  # non-overlapping
    binary = F.interpolate(masks, size=(20, 20), mode="bilinear")[:, 0] > 0
    # each painted pixel belongs to the most probable query whose mask covers it
    for y in range(H):
        for x in range(W):
            covering = [q for q in (1, 2, 0) if binary[q, y, x]]
            want = [1, 2, 0].index(covering[0]) if covering else -1
            assert id_map[y, x].item() == want


def test_order_flag_official_by_entity_prob_fixed_by_score():
    case = _random_case(seed=5, Q=12)
    outputs, batch = _as_batch([case])
    prob = case[0].softmax(-1)[:, 0]
    off = MultiViewFusion(order="entity_prob", double_sigmoid=False)(outputs, batch)[0]
    fix = MultiViewFusion(order="score", double_sigmoid=False, drop_empty=True)(outputs, batch)[0]
    p_off = prob[off["query_indices"]]
    assert (p_off[:-1] >= p_off[1:]).all()
    assert (fix["scores"][:-1] >= fix["scores"][1:]).all()
    assert (fix["scores"] > 0).all()
    # same entities, just renumbered: every fixed output is the official output of its query
    q_off = off["query_indices"].tolist()
    for k, q in enumerate(fix["query_indices"].tolist()):
        k_off = q_off.index(q)
        assert torch.equal(fix["id_map"] == k, off["id_map"] == k_off)
        assert fix["scores"][k] == off["scores"][k_off]
    assert int((fix["id_map"] >= 0).sum()) == int((off["id_map"] >= 0).sum())


def test_batch_of_images_with_different_sizes():
    c1 = _random_case(seed=6, orig=(53, 71))
    c2 = _random_case(seed=7, orig=(40, 30), view=(32, 24))
    outputs, batch = _as_batch([c1, c2])
    preds = MultiViewFusion()(outputs, batch)
    for pred, case in zip(preds, [c1, c2]):
        ref_map, ref_scores, _ = _naive_official(*case)
        assert tuple(pred["id_map"].shape) == case[5]
        assert torch.equal(pred["id_map"], ref_map)
        torch.testing.assert_close(pred["scores"], ref_scores, atol=1e-6, rtol=0)


def test_decoder_choices_select_pass_and_views():
    case = _random_case(seed=8)
    outputs, batch = _as_batch([case])
    # make the image-level pass differ from the batch-level pass
    outputs["image_level"]["pred_masks"] = -outputs["image_level"]["pred_masks"]
    logits, masks, vs, boxes, padded, orig = case
    io = MultiViewFusion(decoder="I-O", top_k_single_view=None)(outputs, batch)[0]
    ref_io = _naive_official(logits, -masks[:, :1], vs[:1], boxes[:1], padded, orig)
    assert torch.equal(io["id_map"], ref_io[0])
    bo = MultiViewFusion(decoder="B-O")(outputs, batch)[0]
    ref_bo = _naive_official(logits, masks[:, :1], vs[:1], boxes[:1], padded, orig)
    assert torch.equal(bo["id_map"], ref_bo[0])
    torch.testing.assert_close(bo["scores"], ref_bo[1], atol=1e-6, rtol=0)


def test_mask2former_mode_uses_image_level_top_k():
    case = _random_case(seed=9, Q=8)
    logits, masks, vs, boxes, padded, orig = case
    one_view = (logits, masks[:, :1], vs[:1], boxes[:1], padded, orig)
    outputs, batch = _as_batch([one_view])
    del outputs["batch_level"]
    pred = MultiViewFusion(top_k_single_view=5)(outputs, batch)[0]
    prob = logits.softmax(-1)[:, 0]
    top5 = prob.topk(5).indices
    assert pred["scores"].numel() == 5
    assert set(pred["query_indices"].tolist()) == set(top5.tolist())
    full = MultiViewFusion(top_k_single_view=None)(outputs, batch)[0]
    ref = _naive_official(*one_view)
    assert torch.equal(full["id_map"], ref[0])
    torch.testing.assert_close(full["scores"], ref[1], atol=1e-6, rtol=0)


def test_falls_back_to_full_view_without_batch_level():
    case = _random_case(seed=10)
    outputs, batch = _as_batch([case])
    del outputs["batch_level"]
    with pytest.warns(UserWarning, match="Mask2Former mode"):
        pred = MultiViewFusion(top_k_single_view=None)(outputs, batch)[0]
    io = MultiViewFusion(decoder="I-O", top_k_single_view=None)(outputs, batch)[0]
    assert torch.equal(pred["id_map"], io["id_map"])


def test_tiny_image_and_fp16_outputs():
    case = _random_case(seed=11, orig=(3, 2), view=(32, 21), padded=(32, 32))
    logits, masks, vs, boxes, padded, orig = case
    case = (logits.half(), masks.half(), vs, boxes, padded, orig)
    outputs, batch = _as_batch([case])
    pred = MultiViewFusion()(outputs, batch)[0]
    assert pred["id_map"].shape == (3, 2) and pred["id_map"].dtype == torch.int32
    assert pred["scores"].dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"decoder": "B-X"}, "decoder"),
        ({"order": "area"}, "order"),
        ({"mask_threshold": 1.0}, "mask_threshold"),
        ({"query_chunk_size": 0}, "query_chunk_size"),
        ({"top_k_single_view": 0}, "top_k_single_view"),
        ({"chunk_memory_mb": 0}, "chunk_memory_mb"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiViewFusion(**kwargs)


def test_bad_batches_raise():
    case = _random_case(seed=12)
    outputs, batch = _as_batch([case])
    with pytest.raises(ValueError, match="views but boxes"):
        MultiViewFusion()(outputs, dict(batch, images=batch["images"][:4]))
    with pytest.raises(ValueError, match="no key 'boxes'"):
        MultiViewFusion()(outputs, {k: v for k, v in batch.items() if k != "boxes"})
    bad_boxes = batch["boxes"].clone()
    bad_boxes[0, 1] = torch.tensor([10.0, 10.0, 5.0, 20.0])
    with pytest.raises(ValueError, match="view region"):
        MultiViewFusion()(outputs, dict(batch, boxes=bad_boxes))
    one = _as_batch([(case[0], case[1][:, :1], case[2][:1], case[3][:1], case[4], case[5])])
    with pytest.raises(ValueError, match="B-C"):
        MultiViewFusion(decoder="B-C")(*one)


def test_queries_without_positive_logits_are_empty_with_score_zero():
    logits, masks, vs, boxes, padded, orig = _random_case(seed=13, Q=8)
    masks = masks.clone()
    masks[2] = -masks[2].abs()  # never above 0.5 in any view
    masks[5] = -masks[5].abs()
    masks[5, 3, 2, 2] = 0.0  # max exactly at the threshold: still empty (fused <= 0.5)
    masks[6] = -masks[6].abs()
    masks[6, 0, 4, 4] = 8.0  # one positive cell: computed normally
    case = (logits, masks, vs, boxes, padded, orig)
    outputs, batch = _as_batch([case])
    pred = MultiViewFusion()(outputs, batch)[0]
    ref_map, ref_scores, ref_order = _naive_official(*case)
    assert torch.equal(pred["id_map"], ref_map)
    torch.testing.assert_close(pred["scores"], ref_scores, atol=1e-6, rtol=0)
    for q in (2, 5):
        k = pred["query_indices"].tolist().index(q)
        assert pred["scores"][k] == 0 and not (pred["id_map"] == k).any()
