"""Greedy multi-view merge: per-view image-level predictions -> non-overlapping entities.

A non-learned test-time multi-view augmentation for a network without association (Mask2Former):
every view (full view + crops) is predicted on its own by the image-level pass, whose query ``q``
is not the same entity from view to view, so the views cannot be fused query by query as
``MultiViewFusion`` does with CropFormer's associated batch-level queries. Instead the per-view
entities are merged by SAHI-style greedy non-maximum merging (SAHI's GREEDYNMM), with two
changes for masks stated below.

The rule, per image:

1. **Candidates.** In each view, the ``top_k`` queries by entity probability (official 100). A
   candidate's mask probability is ``sigmoid(mask logit)`` resized into its view box as the fusion
   resizes it; its mask the pixels above ``mask_threshold``; its score the entity probability times
   the mean mask probability over its mask (with ``double_sigmoid``, of ``sigmoid(probability)``:
   the fusion's official score quirk, honoured so that this row scores like the checkpoint's plain
   rows). A candidate with an empty mask is dropped.
2. **Greedy merge.** Candidates sorted by score, descending (ties: view order, then entity
   probability). Each joins the first group, in order of creation, whose leader (its best member,
   as in SAHI's greedy NMM: no chaining through growing unions) it overlaps by at least
   ``match_threshold``; otherwise it leads a new group. The overlap is computed only inside the
   intersection of the two view boxes: a crop sees nothing outside its box, so an entity cut by a
   crop border is truncated there; compared only where both views see, two partial views of one
   entity (two overlapping crops, or a crop and the full view) match, and neither view is
   penalised for what the other cannot see.
   *Metric: IoU by default, not SAHI's IOS* (intersection over the smaller area, ``match_metric=
   "ios"``). SAHI merges boxes from slices, where IOS lets a box cut by a slice border join the
   whole box; here the restriction to the shared region already handles cut entities, and for
   masks IOS merges an entity nested in a larger one (an object on a region, whose raw mask often
   covers it) and so loses it. On the first 4 embedded val scenes (Mask2Former-tiny from the
   shipped stage-1 weights + 2 steps; AP^e of the full view alone, I-O: 5.09) IOS gave 2.74 and
   IoU 5.45 with the 5 views (AR 6.0 vs 10.9): a small sample, but the loss of nested entities is
   the expected failure of IOS on masks. Like SAHI, two queries of one view may merge
   (``one_per_view=False``; with it, 4.01 there): near-duplicate queries of a view are merged.
3. **Groups.** A group's mask probability at a pixel is the mean over its members whose view box
   covers the pixel (0 where none does); its mask is where that exceeds ``mask_threshold``; its
   score and query index are its leader's.
4. **Output.** The ``max_outputs`` best groups, painted into one id map at the original size in
   ascending score, so the higher score wins where masks overlap; outputs ordered by score,
   descending. An output left without pixels gets score 0 (``drop_empty`` removes it).

Resolution. Steps 1-2 run on a canvas of the image scaled so its long side is ``canvas_size``
(512; never upscaled). The mask logits are at stride 4 of the views: at the official test size
(short side 800, crops of 0.7) a view's logit grid spans at most ~380 cells over the image's long
side, at the embedded one (short side 320) ~150. A 512 canvas is finer than every view's grid, so
the matching and the scores see all the detail the logits hold (they differ from
full-resolution values by bilinear sampling only), while 5 x 100 candidate masks, each stored
over its bounding box, stay small. Steps 3-4 work at full resolution one group at a time: memory
is the group's members' logit maps (one per member, the size of its view box) and two float64
accumulators over the window where the group can pass the threshold, whatever the number of
groups; the whole-image canvases of all groups are never held.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from cropformer.inference.regions import int_box as _int_box
from cropformer.inference.regions import nonzero_window as _nonzero_window
from cropformer.inference.regions import view_to_region as _view_to_region
from cropformer.schema import EntityPrediction
from cropformer.utils.id_maps import remap_ids

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), half-open

# the mean mask probability divides by (area + 1e-6), as the fusion's score does
_AREA_EPS = 1e-6


class ViewOutput(NamedTuple):
    """The image-level pass output of one view of one image.

    Shape: pred_logits (Q, 2); mask_logits (Q, h, w) at stride 4 of the padded batch;
    view_size the unpadded (h, w) of the view; box (x0, y0, x1, y1) its region in original pixels.
    """

    pred_logits: Tensor
    mask_logits: Tensor
    view_size: Sequence[int]
    box: Sequence[float]


@dataclass
class _Candidate:
    """One query of one view, on the canvas."""

    view: int
    query: int
    score: float
    box: Box  # its view box on the canvas
    mask: Tensor  # (window h, window w) bool: the mask over its bounding box ``window``
    window: Box  # bounding box of the mask, canvas pixels (inside ``box``)
    area: int


class GreedyViewMerge:
    """Merge the per-view predictions of one image by greedy non-maximum merging (see module doc).

    Args:
        match_threshold: overlap at or above which a candidate joins a group (SAHI: 0.5).
        mask_threshold: mask probability above which a pixel belongs to a mask.
        top_k: candidates per view, by entity probability (official 100; ``None``: all queries).
        max_outputs: groups kept, by score (official detections per image 100; ``None``: all).
        canvas_size: long side of the matching canvas in pixels (no upscaling).
        match_metric: ``"iou"`` or ``"ios"`` (intersection over the smaller area, SAHI's), both
            inside the two views' shared region.
        one_per_view: a group takes at most one candidate of each view (default: any, as SAHI).
        double_sigmoid: score with ``sigmoid`` of the mask probability (official fusion quirk).
        drop_empty: remove outputs left without pixels (else kept with score 0).
        chunk_memory_mb: memory for resizing one view's candidates at once on the canvas.
        device: device of the work (``None``: that of the view outputs).
        output_device: device of the returned tensors.
    """

    def __init__(
        self,
        *,
        match_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        top_k: int | None = 100,
        max_outputs: int | None = 100,
        canvas_size: int = 512,
        match_metric: str = "iou",
        one_per_view: bool = False,
        double_sigmoid: bool = False,
        drop_empty: bool = False,
        chunk_memory_mb: float = 512.0,
        device: str | torch.device | None = None,
        output_device: str | torch.device | None = "cpu",
    ) -> None:
        if not 0.0 < match_threshold <= 1.0:
            raise ValueError(f"match_threshold={match_threshold} must lie in (0, 1]")
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask_threshold={mask_threshold} must lie strictly between 0 and 1")
        for name, value in (("top_k", top_k), ("max_outputs", max_outputs)):
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be >= 1 or None")
        if canvas_size < 1:
            raise ValueError(f"canvas_size={canvas_size} must be >= 1")
        if match_metric not in ("iou", "ios"):
            raise ValueError(f"match_metric={match_metric!r} is not one of ('iou', 'ios')")
        if chunk_memory_mb <= 0:
            raise ValueError(f"chunk_memory_mb={chunk_memory_mb} must be > 0")
        self.match_threshold = float(match_threshold)
        self.mask_threshold = float(mask_threshold)
        self.top_k = top_k
        self.max_outputs = max_outputs
        self.canvas_size = int(canvas_size)
        self.match_metric = match_metric
        self.one_per_view = one_per_view
        self.double_sigmoid = double_sigmoid
        self.drop_empty = drop_empty
        self.chunk_memory_mb = float(chunk_memory_mb)
        self.device = torch.device(device) if device is not None else None
        self.output_device = torch.device(output_device) if output_device is not None else None

    @torch.no_grad()
    def merge_image(
        self,
        views: Sequence[ViewOutput],
        *,
        padded_hw: tuple[int, int],
        orig_size: tuple[int, int],
    ) -> EntityPrediction:
        """Merge the views of one image.

        Shape: per view pred_logits (Q, 2), mask_logits (Q, h, w); returns id_map (H, W) int32
        at ``orig_size`` (-1 = no entity), scores (M,) float32, query_indices (M,) int64 (the
        leader's query in its own view), M <= max_outputs.
        """
        if not views:
            raise ValueError("merge_image needs at least one view")
        H, W = orig_size
        if H < 1 or W < 1:
            raise ValueError(f"original image size must be positive, got {orig_size}")
        device = self.device if self.device is not None else views[0].pred_logits.device
        boxes = [_int_box(v.box, H, W) for v in views]
        canvas_hw = canvas_shape(H, W, self.canvas_size)
        canvas_boxes = [_scale_box(b, (H, W), canvas_hw) for b in boxes]
        candidates: list[_Candidate] = []
        for t, view in enumerate(views):
            candidates += self._candidates(t, view, canvas_boxes[t], padded_hw, device)
        # stable: equal scores keep view order, then entity-probability order
        candidates.sort(key=lambda c: -c.score)
        groups = greedy_groups(
            candidates, self.match_threshold, self.match_metric, self.one_per_view
        )
        if self.max_outputs is not None:
            groups = groups[: self.max_outputs]
        id_map = self._paint(views, boxes, candidates, groups, padded_hw, (H, W), device)
        scores = torch.tensor([candidates[g[0]].score for g in groups], dtype=torch.float32)
        queries = torch.tensor([candidates[g[0]].query for g in groups], dtype=torch.int64)
        return self._outputs(id_map, scores.to(device), queries.to(device))

    # ------------------------------------------------------------------ step 1: candidates
    def _candidates(
        self,
        t: int,
        view: ViewOutput,
        canvas_box: Box,
        padded_hw: tuple[int, int],
        device: torch.device,
    ) -> list[_Candidate]:
        """The top-k queries of view ``t`` with a non-empty mask on the canvas."""
        prob = view.pred_logits.detach().to(device, torch.float32).softmax(-1)[:, 0]
        order = torch.sort(prob, descending=True, stable=True).indices
        if self.top_k is not None:
            order = order[: self.top_k]
        x0, y0, x1, y1 = canvas_box
        box_hw = (y1 - y0, x1 - x0)
        view_hw = (int(view.view_size[0]), int(view.view_size[1]))
        logit_thr = math.log(self.mask_threshold / (1.0 - self.mask_threshold))
        per_query = 4 * (padded_hw[0] * padded_hw[1] + view_hw[0] * view_hw[1]) + 6 * (
            box_hw[0] * box_hw[1]
        )
        chunk = max(1, int(self.chunk_memory_mb * 2**20 // per_query))
        out: list[_Candidate] = []
        for start in range(0, int(order.numel()), chunk):
            q_ids = order[start : start + chunk]
            chosen = view.mask_logits[q_ids.to(view.mask_logits.device)].detach()
            logits = _view_to_region(chosen.to(device, torch.float32), padded_hw, view_hw, box_hw)
            # threshold the logits (exact at 0.5, as the fusion's single-view path)
            binary = logits > logit_thr
            value = logits.sigmoid_()
            if self.double_sigmoid:
                value.sigmoid_()  # parity with the fusion's official score quirk
            area = binary.flatten(1).sum(1)
            mass = (value.double() * binary).flatten(1).sum(1)
            scores = prob[q_ids].double() * mass / (area.double() + _AREA_EPS)
            for j, q in enumerate(q_ids.tolist()):
                window = _nonzero_window(binary[j])
                if window is None:
                    continue  # empty on the canvas: nothing to match or paint
                wy0, wy1, wx0, wx1 = window
                out.append(
                    _Candidate(
                        view=t,
                        query=int(q),
                        score=float(scores[j]),
                        box=canvas_box,
                        mask=binary[j, wy0:wy1, wx0:wx1].clone(),
                        window=(x0 + wx0, y0 + wy0, x0 + wx1, y0 + wy1),
                        area=int(area[j]),
                    )
                )
            del logits, binary, value
        return out

    # ------------------------------------------------------------------ steps 3-4: painting
    def _paint(
        self,
        views: Sequence[ViewOutput],
        boxes: Sequence[Box],
        candidates: Sequence[_Candidate],
        groups: Sequence[Sequence[int]],
        padded_hw: tuple[int, int],
        orig_hw: tuple[int, int],
        device: torch.device,
    ) -> Tensor:
        """Paint the groups' masks at full resolution, lowest score first, one group at a time.

        Shape: returns id_map (H, W) int32 with M = len(groups) where no group won.
        """
        H, W = orig_hw
        M = len(groups)
        id_map = torch.full((H, W), M, dtype=torch.int32, device=device)
        # a member's probability can pass the threshold only where its logit does (margin: the
        # float32 sigmoid's rounding); at 0.5 the bound 0 is exact
        thr = self.mask_threshold
        bound = 0.0 if thr == 0.5 else math.log(thr / (1.0 - thr)) - 1e-3
        for k in range(M - 1, -1, -1):
            # each member's logits over its box, and the window where it can pass
            maps: list[tuple[Tensor, Box]] = []
            window: Box | None = None
            for i in groups[k]:
                c = candidates[i]
                view, box = views[c.view], boxes[c.view]
                region = _view_to_region(
                    view.mask_logits[c.query : c.query + 1].detach().to(device, torch.float32),
                    padded_hw,
                    (int(view.view_size[0]), int(view.view_size[1])),
                    (box[3] - box[1], box[2] - box[0]),
                )[0]
                maps.append((region, box))
                passing = _nonzero_window(region > bound)
                if passing is not None:
                    py0, py1, px0, px1 = passing
                    own = (box[0] + px0, box[1] + py0, box[0] + px1, box[1] + py1)
                    window = own if window is None else _union(window, own)
            if window is None:
                continue  # no member passes anywhere: an empty output
            # mean over the covering members inside the window, as float64 sums of float32
            # probabilities: the mean of n identical views is exactly the single view's value
            wx0, wy0, wx1, wy1 = window
            total = torch.zeros((wy1 - wy0, wx1 - wx0), dtype=torch.float64, device=device)
            count = torch.zeros_like(total)
            for region, box in maps:
                part = _intersect(box, window)
                if part is None:
                    continue
                x0, y0, x1, y1 = part
                values = region[y0 - box[1] : y1 - box[1], x0 - box[0] : x1 - box[0]].sigmoid()
                total[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] += values
                count[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] += 1.0
            del maps
            binary = total > count * thr  # mean > threshold where covered
            id_map[wy0:wy1, wx0:wx1].masked_fill_(binary, k)
            del total, count, binary
        return id_map

    def _outputs(self, id_map: Tensor, scores: Tensor, queries: Tensor) -> EntityPrediction:
        """Empty outputs (score 0, or dropped) and the returned types.

        Shape: id_map (H, W) with M = none; scores, queries (M,).
        """
        M = int(scores.numel())
        device = id_map.device
        area = torch.zeros(M + 1, dtype=torch.int64, device=device)
        area += torch.bincount(id_map.reshape(-1).long(), minlength=M + 1)
        area = area[:M]
        scores = torch.where(area > 0, scores, torch.zeros_like(scores))
        id_map.masked_fill_(id_map == M, -1)
        if self.drop_empty and bool((area == 0).any()):
            keep = torch.nonzero(area > 0).flatten()
            lut = torch.full((M + 1,), -1, dtype=torch.int32, device=device)
            lut[keep] = torch.arange(keep.numel(), dtype=torch.int32, device=device)
            id_map = remap_ids(id_map, lut)  # -1 indexes the last entry, which stays -1
            scores, queries = scores[keep], queries[keep]
        out_dev = self.output_device if self.output_device is not None else device
        return EntityPrediction(
            id_map=id_map.to(out_dev),
            scores=scores.to(out_dev),
            query_indices=queries.to(out_dev),
        )


# ---------------------------------------------------------------------- step 2: greedy merge
def greedy_groups(
    candidates: Sequence[_Candidate],
    match_threshold: float,
    metric: str = "iou",
    one_per_view: bool = False,
) -> list[list[int]]:
    """Greedy non-maximum merging of candidates sorted by score, descending.

    ``one_per_view``: a group takes at most one candidate of each view (a view's own queries are
    distinct entities: the image-level pass was trained with one-to-one matching).

    Returns the groups in creation order (= leader score, descending), each a list of candidate
    indices with its leader first.
    """
    groups: list[list[int]] = []
    views: list[set[int]] = []
    for i, cand in enumerate(candidates):
        for group, seen in zip(groups, views, strict=True):
            if one_per_view and cand.view in seen:
                continue
            if overlap(cand, candidates[group[0]], metric) >= match_threshold:
                group.append(i)
                seen.add(cand.view)
                break
        else:
            groups.append([i])
            views.append({cand.view})
    return groups


def ios(a: _Candidate, b: _Candidate) -> float:
    """Intersection over the smaller area of two candidates' masks inside both view boxes."""
    return overlap(a, b, "ios")


def overlap(a: _Candidate, b: _Candidate, metric: str = "iou") -> float:
    """IOS (intersection over the smaller area) or IoU of two masks inside both view boxes."""
    both = _intersect(a.box, b.box)
    if both is None:
        return 0.0
    # quick reject: the masks' bounding boxes do not meet inside the shared region
    meet = _intersect(a.window, b.window)
    meet = _intersect(meet, both) if meet is not None else None
    if meet is None:
        return 0.0
    inter = int((_part(a, meet) & _part(b, meet)).sum())
    if inter == 0:
        return 0.0
    area_a = a.area if _inside(a.window, both) else _count(a, both)
    area_b = b.area if _inside(b.window, both) else _count(b, both)
    if metric == "iou":
        return inter / (area_a + area_b - inter)
    return inter / min(area_a, area_b)


def _part(c: _Candidate, region: Box) -> Tensor:
    """The candidate's mask over ``region`` (canvas pixels, inside its mask's window)."""
    x0, y0, x1, y1 = region
    return c.mask[y0 - c.window[1] : y1 - c.window[1], x0 - c.window[0] : x1 - c.window[0]]


def _count(c: _Candidate, region: Box) -> int:
    """Pixels of the candidate's mask inside ``region`` (canvas pixels)."""
    part = _intersect(c.window, region)
    return 0 if part is None else int(_part(c, part).sum())


def _intersect(a: Box, b: Box) -> Box | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _inside(inner: Box, outer: Box) -> bool:
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and inner[2] <= outer[2]
        and inner[3] <= outer[3]
    )


# ---------------------------------------------------------------------- canvas geometry
def canvas_shape(height: int, width: int, canvas_size: int) -> tuple[int, int]:
    """(h, w) of the matching canvas: long side ``canvas_size``, never larger than the image."""
    scale = min(1.0, canvas_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _scale_box(box: Box, orig_hw: tuple[int, int], canvas_hw: tuple[int, int]) -> Box:
    """A box in original pixels -> canvas pixels (at least one pixel each way)."""
    sy, sx = canvas_hw[0] / orig_hw[0], canvas_hw[1] / orig_hw[1]
    x0, y0 = min(round(box[0] * sx), canvas_hw[1] - 1), min(round(box[1] * sy), canvas_hw[0] - 1)
    x1, y1 = max(x0 + 1, round(box[2] * sx)), max(y0 + 1, round(box[3] * sy))
    return x0, y0, x1, y1
