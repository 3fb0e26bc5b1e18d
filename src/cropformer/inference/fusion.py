"""Multi-view fusion: per-view mask logits -> non-overlapping entities at original resolution.

The official CropFormer inference (reference doc §6, parity README §6) upsamples every view's mask
logits to the padded input size, cuts the padding away, resizes each view to its region in
original-image pixels, applies a sigmoid, averages the full view and the crops per pixel by how many
views cover it, thresholds at 0.5 and paints the binary masks into one id map so that the most
probable query wins where masks overlap. The score of an output is its entity probability times the
mean mask probability over its final (non-overlapping) mask, where the official code applies a
second sigmoid to the already-fused probability.

This implementation computes the same thing query chunk by query chunk, so it never holds more than
one full-resolution float canvas per chunk plus a coverage map, an id map and a winner-value map
(the official code materialises several ``Q x H x W`` float tensors).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from cropformer.inference.regions import int_box as _int_box
from cropformer.inference.regions import nonzero_window as _nonzero_window
from cropformer.inference.regions import view_to_region as _view_to_region
from cropformer.schema import Batch, EntityPrediction, Outputs
from cropformer.utils.id_maps import area_and_sum, remap_ids

#: Decoder choices of the paper's Table 8b: which pass and which views the fusion uses.
#: ``I-O``: image-level pass, full view only; ``B-O``: batch-level pass, full view only;
#: ``B-C``: batch-level pass, crops only; ``B-OC``: batch-level pass, all views (official).
#: Not in the paper: ``I-OC-merge``, the image-level pass of every view, each predicted on its own
#: and merged by greedy non-maximum merging (``view_merge``): test-time multi-view augmentation
#: for a network without association (Mask2Former), whose queries differ from view to view.
DECODER_CHOICES: tuple[str, ...] = ("I-O", "B-O", "B-C", "B-OC", "I-OC-merge")
MERGE_DECODER = "I-OC-merge"
#: how ``I-OC-merge`` compares two entities of different views (``view_merge.overlap``)
MERGE_METRICS: tuple[str, ...] = ("iou", "ios")
ORDER_CHOICES: tuple[str, ...] = ("entity_prob", "score")

# Official epsilons: the coverage map starts at 1e-16, the mean mask probability divides by
# (area + 1e-6).
_COVERAGE_EPS = 1e-16
_AREA_EPS = 1e-6


class MultiViewFusion:
    """Fuse the views of each image into non-overlapping entities with scores.

    Args:
        decoder: which predictions to fuse (see ``DECODER_CHOICES``); ``"B-OC"`` is official.
            Without a batch-level pass in the outputs (Mask2Former mode) the image-level output
            of the full view is used whatever the choice, except ``"I-OC-merge"``, which merges
            the image-level outputs of all views (``view_merge.GreedyViewMerge``; the batch-level
            pass, if any, is not used).
        double_sigmoid: apply a second sigmoid to the fused probability in the mask-quality factor
            of the score (official quirk, reference doc §11.1).
        order: ``"entity_prob"`` (official) keeps outputs ordered by entity probability,
            descending; ``"score"`` reorders them by final score, descending. Painting priority is
            the entity probability in both cases. ``I-OC-merge`` always orders and paints by
            score (its groups come from several views' queries).
        mask_threshold: a pixel belongs to a query's mask if its fused probability is above this.
        top_k_single_view: in single-view image-level mode (Mask2Former mode and ``I-O``) keep only
            the ``top_k`` most probable queries (official MaskFormer ``DETECTIONS_PER_IMAGE``, 100).
            ``None`` keeps all. The multi-view CropFormer fusion always keeps all queries.
            ``I-OC-merge``: the candidates per view and the merged outputs kept.
        merge_threshold: ``I-OC-merge`` only: overlap (``merge_metric``) at or above which an
            entity of a view joins a merged group.
        merge_metric: ``I-OC-merge`` only: ``"iou"`` (default) or ``"ios"`` (intersection over
            the smaller area, SAHI's default), inside the two views' shared region.
        merge_canvas_size: ``I-OC-merge`` only: long side in pixels of the canvas on which the
            entities are matched (the merged masks are painted at full resolution).
        drop_empty: remove outputs whose final mask is empty (official: kept with score 0).
        query_chunk_size: queries fused at once; ``None`` derives it from ``chunk_memory_mb``.
        chunk_memory_mb: memory budget for the per-chunk canvases when ``query_chunk_size`` is None.
        device: device for the canvases (``None``: the device of the outputs). ``"cpu"`` bounds
            GPU memory for very large images.
        output_device: device of the returned tensors.

    Call ``fusion(outputs, batch)`` with ``outputs`` per ``schema.Outputs`` and ``batch`` per
    ``schema.Batch`` (uses ``images.shape[-2:]`` as the padded size, ``view_sizes``, ``boxes``
    and ``orig_sizes``); returns one ``EntityPrediction`` per image.
    """

    def __init__(
        self,
        *,
        decoder: str = "B-OC",
        double_sigmoid: bool = True,
        order: str = "entity_prob",
        mask_threshold: float = 0.5,
        top_k_single_view: int | None = 100,
        drop_empty: bool = False,
        merge_threshold: float = 0.5,
        merge_metric: str = "iou",
        merge_canvas_size: int = 512,
        query_chunk_size: int | None = None,
        chunk_memory_mb: float = 512.0,
        device: str | torch.device | None = None,
        output_device: str | torch.device | None = "cpu",
    ) -> None:
        if decoder not in DECODER_CHOICES:
            raise ValueError(f"decoder={decoder!r} is not one of {DECODER_CHOICES}")
        if order not in ORDER_CHOICES:
            raise ValueError(f"order={order!r} is not one of {ORDER_CHOICES}")
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask_threshold={mask_threshold} must lie strictly between 0 and 1")
        if top_k_single_view is not None and top_k_single_view < 1:
            raise ValueError(f"top_k_single_view={top_k_single_view} must be >= 1 or None")
        if query_chunk_size is not None and query_chunk_size < 1:
            raise ValueError(f"query_chunk_size={query_chunk_size} must be >= 1 or None")
        if chunk_memory_mb <= 0:
            raise ValueError(f"chunk_memory_mb={chunk_memory_mb} must be > 0")
        if not 0.0 < merge_threshold <= 1.0:
            raise ValueError(f"merge_threshold={merge_threshold} must lie in (0, 1]")
        if merge_metric not in MERGE_METRICS:
            raise ValueError(f"merge_metric={merge_metric!r} is not one of {MERGE_METRICS}")
        if merge_canvas_size < 1:
            raise ValueError(f"merge_canvas_size={merge_canvas_size} must be >= 1")
        self.decoder = decoder
        self.double_sigmoid = double_sigmoid  # parity: official True (second sigmoid in the score)
        self.order: Literal["entity_prob", "score"] = order  # type: ignore[assignment]
        self.mask_threshold = float(mask_threshold)
        self.top_k_single_view = top_k_single_view
        self.drop_empty = drop_empty  # parity: official False (empty outputs kept, score 0)
        self.merge_threshold = float(merge_threshold)
        self.merge_metric = merge_metric
        self.merge_canvas_size = int(merge_canvas_size)
        self.query_chunk_size = query_chunk_size
        self.chunk_memory_mb = float(chunk_memory_mb)
        self.device = torch.device(device) if device is not None else None
        self.output_device = torch.device(output_device) if output_device is not None else None
        self._warned_fallback = False
        self._warned_single_view = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(decoder={self.decoder!r}, double_sigmoid={self.double_sigmoid},"
            f" order={self.order!r}, mask_threshold={self.mask_threshold},"
            f" drop_empty={self.drop_empty}"
            + (
                f", merge_threshold={self.merge_threshold}, merge_metric={self.merge_metric!r},"
                f" merge_canvas_size={self.merge_canvas_size})"
                if self.decoder == MERGE_DECODER
                else ")"
            )
        )

    # ------------------------------------------------------------------ public entry point
    @torch.no_grad()
    def __call__(
        self, outputs: Outputs | dict[str, Any], batch: Batch | dict[str, Any]
    ) -> list[EntityPrediction]:
        """Fuse the views of every image of the batch.

        Shape:
            outputs["image_level"]["pred_logits"]: (N, Q, 2); ["pred_masks"]: (N, Q, h, w).
            outputs["batch_level"]["pred_logits"]: (B, Q, 2); ["pred_masks"]: (B, Q, T, h, w).
            batch["images"]: (N, 3, H, W) padded; batch["view_sizes"]: (N, 2);
            batch["boxes"]: (B, T, 4); batch["orig_sizes"]: (B, 2).
            returns: B predictions, ``id_map`` (H_b, W_b) at each image's original size.
        """
        for key in ("images", "view_sizes", "boxes", "orig_sizes"):
            if key not in batch:
                raise ValueError(
                    f"batch has no key {key!r}; fusion needs images, view_sizes, "
                    "boxes and orig_sizes (schema.Batch)"
                )
        if "image_level" not in outputs:
            raise ValueError("outputs has no 'image_level' entry (schema.Outputs)")
        boxes = batch["boxes"]
        if boxes.ndim != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"batch['boxes'] must be (B, T, 4), got {tuple(boxes.shape)}")
        B, T = int(boxes.shape[0]), int(boxes.shape[1])
        N = int(batch["images"].shape[0])
        if N != B * T:
            raise ValueError(f"batch['images'] has {N} views but boxes say B={B} images x T={T}")
        padded_hw = (int(batch["images"].shape[-2]), int(batch["images"].shape[-1]))
        view_sizes = batch["view_sizes"].tolist()
        orig_sizes = batch["orig_sizes"].tolist()
        boxes_list = boxes.tolist()

        image_level = outputs["image_level"]
        if self.decoder == MERGE_DECODER:
            return self._merge(image_level, T, padded_hw, view_sizes, boxes_list, orig_sizes)
        batch_level = outputs.get("batch_level")
        use_batch_level = self._uses_batch_level(batch_level, T)
        if self.decoder == "B-C" and use_batch_level and T < 2:
            raise ValueError(
                "fusion decoder='B-C' uses the crops only, but the batch has T=1 "
                "view per image (no crops); use 'B-OC' or 'B-O'"
            )

        predictions: list[EntityPrediction] = []
        # fp32 even when called under autocast (Lightning's bf16 validation): the fusion's
        # resizing and sums decide which entity wins each pixel
        with torch.autocast(device_type=image_level["pred_logits"].device.type, enabled=False):
            for b in range(B):
                if use_batch_level:
                    assert batch_level is not None
                    logits = batch_level["pred_logits"][b]
                    masks = batch_level["pred_masks"][b]  # (Q, T, h, w)
                    if self.decoder == "B-OC":
                        view_ids = list(range(T))
                    elif self.decoder == "B-O":
                        view_ids = [0]
                    else:
                        view_ids = list(range(1, T))
                    views = [
                        (masks[:, t], view_sizes[b * T + t], boxes_list[b][t]) for t in view_ids
                    ]
                    top_k = None
                else:
                    logits = image_level["pred_logits"][b * T]
                    views = [
                        (image_level["pred_masks"][b * T], view_sizes[b * T], boxes_list[b][0])
                    ]
                    top_k = self.top_k_single_view
                predictions.append(
                    self.fuse_image(
                        logits,
                        views,
                        padded_hw=padded_hw,
                        orig_size=(int(orig_sizes[b][0]), int(orig_sizes[b][1])),
                        top_k=top_k,
                    )
                )
        return predictions

    def _uses_batch_level(self, batch_level: Any, T: int) -> bool:
        """Whether the decoder mode reads the batch-level pass; warns once when a mode that
        needs it meets outputs without one (Mask2Former) and falls back to the image level."""
        if self.decoder != "I-O" and batch_level is None and T > 1 and not self._warned_fallback:
            warnings.warn(
                f"fusion decoder={self.decoder!r} needs the batch-level pass but the outputs have "
                "none (Mask2Former mode); using the image-level output of the full view",
                stacklevel=3,
            )
            self._warned_fallback = True
        return self.decoder != "I-O" and batch_level is not None

    def _merge(
        self,
        image_level: Any,
        T: int,
        padded_hw: tuple[int, int],
        view_sizes: list[list[int]],
        boxes: list[list[list[float]]],
        orig_sizes: list[list[int]],
    ) -> list[EntityPrediction]:
        """``I-OC-merge``: each image's views merged by ``GreedyViewMerge`` (image-level pass)."""
        # imported here: view_merge reuses this module's resizing helpers
        from cropformer.inference.view_merge import GreedyViewMerge, ViewOutput

        if T == 1 and not self._warned_single_view:
            warnings.warn(
                "fusion decoder='I-OC-merge' got one view per image (no crops at test time): "
                "it merges the full view's entities only; use data/crop=fixed4 for the 5 views",
                stacklevel=3,
            )
            self._warned_single_view = True
        merger = GreedyViewMerge(
            match_threshold=self.merge_threshold,
            match_metric=self.merge_metric,
            mask_threshold=self.mask_threshold,
            top_k=self.top_k_single_view,
            max_outputs=self.top_k_single_view,
            canvas_size=self.merge_canvas_size,
            double_sigmoid=self.double_sigmoid,
            drop_empty=self.drop_empty,
            chunk_memory_mb=self.chunk_memory_mb,
            device=self.device,
            output_device=self.output_device,
        )
        predictions: list[EntityPrediction] = []
        with torch.autocast(device_type=image_level["pred_logits"].device.type, enabled=False):
            for b in range(len(orig_sizes)):
                views = [
                    ViewOutput(
                        image_level["pred_logits"][b * T + t],
                        image_level["pred_masks"][b * T + t],
                        view_sizes[b * T + t],
                        boxes[b][t],
                    )
                    for t in range(T)
                ]
                predictions.append(
                    merger.merge_image(
                        views,
                        padded_hw=padded_hw,
                        orig_size=(int(orig_sizes[b][0]), int(orig_sizes[b][1])),
                    )
                )
        return predictions

    # ------------------------------------------------------------------ one image
    @torch.no_grad()
    def fuse_image(
        self,
        pred_logits: Tensor,
        views: Sequence[tuple[Tensor, Sequence[int], Sequence[float]]],
        *,
        padded_hw: tuple[int, int],
        orig_size: tuple[int, int],
        top_k: int | None = None,
    ) -> EntityPrediction:
        """Fuse the given views of one image.

        Args:
            pred_logits: class logits of the queries (index 0 = entity).
            views: per view ``(mask_logits, (view_h, view_w), (x0, y0, x1, y1))``: mask logits at
                stride 4 of the padded batch, the unpadded view size, and the view's region in
                original-image pixels.
            padded_hw: padded batch size (H, W) the mask logits are at stride 4 of.
            orig_size: original image size (H, W).
            top_k: keep only the ``top_k`` most probable queries (``None``: all).

        Shape:
            pred_logits: (Q, 2); mask_logits: (Q, h, w); returns id_map (H, W), scores (M,),
            query_indices (M,) with M = Q (or top_k), fewer with ``drop_empty``.
        """
        if not views:
            raise ValueError("fuse_image needs at least one view")
        H, W = orig_size
        if H < 1 or W < 1:
            raise ValueError(f"original image size must be positive, got {orig_size}")
        device = self.device if self.device is not None else pred_logits.device
        prob = pred_logits.detach().to(device=device, dtype=torch.float32).softmax(-1)[:, 0]
        query_ids, out_order = _paint_order(prob, top_k)
        boxes = [_int_box(box, H, W) for _, _, box in views]
        single = len(views) == 1 and boxes[0] == (0, 0, W, H)
        id_map, win_val = self._paint(
            views, boxes, query_ids, out_order, padded_hw, (H, W), device, single=single
        )
        # The winners' values get their (second) sigmoid once here instead of on every canvas:
        # the same elementwise values, far fewer evaluations.
        if single:
            win_val.sigmoid_()  # logits -> probability
        if self.double_sigmoid:
            win_val.sigmoid_()  # parity: official second sigmoid on the fused probability
        return self._outputs(id_map, win_val, prob[query_ids][out_order], query_ids[out_order])

    def _paint(
        self,
        views: Sequence[tuple[Tensor, Sequence[int], Sequence[float]]],
        boxes: Sequence[tuple[int, int, int, int]],
        query_ids: Tensor,
        out_order: Tensor,
        padded_hw: tuple[int, int],
        orig_hw: tuple[int, int],
        device: torch.device,
        *,
        single: bool,
    ) -> tuple[Tensor, Tensor]:
        """Fuse the views chunk by chunk and paint the thresholded masks into one id map.

        Output k is the selected query ``out_order[k]``; where masks overlap the smallest output
        index (most probable query) wins. ``single``: one full view, values stay logits.

        Shape: returns id_map (H, W) int32 (M = no output) and the winners' values (H, W).
        """
        H, W = orig_hw
        M = int(out_order.numel())
        rank = torch.empty_like(out_order)
        rank[out_order] = torch.arange(M, device=device)  # output index of each selected query
        full_ids = [i for i, box in enumerate(boxes) if box == (0, 0, W, H)]
        # Coverage: official count map starts at 1e-16 and adds 1 for every view covering a pixel.
        coverage: Tensor | None = None
        if not single:
            coverage = torch.full((H, W), _COVERAGE_EPS, dtype=torch.float32, device=device)
            for x0, y0, x1, y1 in boxes:
                coverage[y0:y1, x0:x1] += 1.0
        id_map = torch.full((H, W), M, dtype=torch.int32, device=device)
        win_val = torch.zeros((H, W), dtype=torch.float32, device=device)
        chunk = self._chunk_size(H, W, padded_hw, boxes, M)
        # In single-view mode the official MaskFormer paints on logits > 0: threshold the logits
        # directly (identical in exact arithmetic, avoids sigmoid rounding at 0.5).
        logit_thr = math.log(self.mask_threshold / (1.0 - self.mask_threshold))
        live = out_order[self._may_pass_threshold(views, query_ids, logit_thr, device)[out_order]]
        for start in range(0, int(live.numel()), chunk):
            q_sel = live[start : start + chunk]  # indices into the selected queries
            q_ids = query_ids[q_sel]
            canvas = self._fused_canvas(
                views, boxes, full_ids, q_ids, padded_hw, orig_hw, device, apply_sigmoid=not single
            )
            if single:
                binary = canvas > logit_thr
            else:
                assert coverage is not None
                canvas.div_(coverage)
                binary = canvas > self.mask_threshold
            for j, k in enumerate(rank[q_sel].tolist()):
                # paint only the window where this query's mask lies (masks are often small)
                window = _nonzero_window(binary[j])
                if window is None:
                    continue
                y0, y1, x0, x1 = window
                ids_w = id_map[y0:y1, x0:x1]
                # each pixel goes to the most probable (smallest output index) query covering it
                upd = binary[j, y0:y1, x0:x1] & (ids_w > k)
                ids_w.masked_fill_(upd, k)
                val_w = win_val[y0:y1, x0:x1]
                val_w.copy_(torch.where(upd, canvas[j, y0:y1, x0:x1], val_w))
            del canvas, binary
        return id_map, win_val

    def _may_pass_threshold(
        self,
        views: Sequence[tuple[Tensor, Sequence[int], Sequence[float]]],
        query_ids: Tensor,
        logit_thr: float,
        device: torch.device,
    ) -> Tensor:
        """Which selected queries can have a fused pixel above the threshold (bool, (M,)).

        Exact shortcut: bilinear resizing is a convex combination, so a query whose logits are
        <= logit(threshold) in every used view has no fused pixel above the threshold; its
        output is empty with score 0 and its canvases need not be computed. At threshold 0.5
        the bound 0 is exact in float (sigmoid(x <= 0) <= 0.5, averages of values <= 0.5 stay
        <= 0.5); other thresholds keep a small margin.
        """
        bound = 0.0 if self.mask_threshold == 0.5 else logit_thr - 1e-3
        peak = torch.stack(
            [
                m[query_ids.to(m.device)].detach().flatten(1).amax(1).to(device, torch.float32)
                for m, _, _ in views
            ]
        ).amax(0)
        return peak > bound

    def _outputs(
        self, id_map: Tensor, win_val: Tensor, entity_prob: Tensor, query_indices: Tensor
    ) -> EntityPrediction:
        """Scores (entity probability x mean mask probability), empty outputs and order.

        Shape: id_map (H, W) with M = none; win_val (H, W); entity_prob, query_indices (M,).
        """
        M = int(entity_prob.numel())
        device = id_map.device
        # per-output area and value sum in one pass each (index M collects the rest)
        area, val_sum = area_and_sum(id_map, win_val, M + 1)
        area, val_sum = area[:M], val_sum[:M]
        mask_quality = (val_sum / (area.double() + _AREA_EPS)).float()
        scores = entity_prob * mask_quality  # empty masks: 0
        id_map.masked_fill_(id_map == M, -1)
        keep = torch.ones(M, dtype=torch.bool, device=device)
        if self.drop_empty:
            keep = area > 0
        perm = torch.arange(M, device=device)[keep]
        if self.order == "score":
            perm = perm[torch.sort(scores[perm], descending=True, stable=True).indices]
        if self.drop_empty or self.order == "score":
            lut = torch.full((M + 1,), -1, dtype=torch.int32, device=device)
            lut[perm] = torch.arange(perm.numel(), dtype=torch.int32, device=device)
            id_map = remap_ids(id_map, lut)  # -1 indexes the last entry, which stays -1
            scores = scores[perm]
            query_indices = query_indices[perm]
        out_dev = self.output_device if self.output_device is not None else device
        return EntityPrediction(
            id_map=id_map.to(out_dev),
            scores=scores.to(out_dev),
            query_indices=query_indices.to(out_dev),
        )

    # ------------------------------------------------------------------ helpers
    def _chunk_size(
        self,
        H: int,
        W: int,
        padded_hw: tuple[int, int],
        boxes: Sequence[tuple[int, int, int, int]],
        M: int,
    ) -> int:
        if self.query_chunk_size is not None:
            return max(1, min(self.query_chunk_size, M))
        largest_crop = max((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes)
        # per query: the canvas, the upsampled padded view, one resized view, the binary mask
        per_query = 4 * (H * W + padded_hw[0] * padded_hw[1] + largest_crop) + H * W
        budget = self.chunk_memory_mb * 2**20
        return int(max(1, min(M, budget // per_query)))

    def _fused_canvas(
        self,
        views: Sequence[tuple[Tensor, Sequence[int], Sequence[float]]],
        boxes: Sequence[tuple[int, int, int, int]],
        full_ids: Sequence[int],
        q_ids: Tensor,
        padded_hw: tuple[int, int],
        orig_hw: tuple[int, int],
        device: torch.device,
        *,
        apply_sigmoid: bool,
    ) -> Tensor:
        """Sum of the per-view probabilities of the chunk's queries, pasted at the view regions.

        The full view is resized straight into the canvas and the crops are added into it, so only
        one full-resolution float tensor exists per chunk (the official code sums the crops first
        and adds the full view last; the sums differ by float rounding only).

        Shape: returns (q, H, W) float32.
        """
        order = list(full_ids) + [i for i in range(len(views)) if i not in full_ids]
        canvas: Tensor | None = None
        for i in order:
            mask_logits, view_size, _ = views[i]
            x0, y0, x1, y1 = boxes[i]
            resized = _view_to_region(
                mask_logits[q_ids.to(mask_logits.device)].to(device=device, dtype=torch.float32),
                padded_hw,
                (int(view_size[0]), int(view_size[1])),
                (y1 - y0, x1 - x0),
            )
            if apply_sigmoid:
                resized.sigmoid_()
            if canvas is None and (y1 - y0, x1 - x0) == orig_hw:
                canvas = resized
                continue
            if canvas is None:
                canvas = torch.zeros(
                    (resized.shape[0], *orig_hw), dtype=torch.float32, device=device
                )
            canvas[:, y0:y1, x0:x1] += resized
            del resized
        assert canvas is not None
        return canvas


def _paint_order(prob: Tensor, top_k: int | None) -> tuple[Tensor, Tensor]:
    """The selected queries and the output order (output k = selected query ``order[k]``).

    Shape: prob (Q,) entity probabilities -> query ids (M,), order (M,), M = Q or top_k.
    """
    query_ids = torch.arange(prob.shape[0], device=prob.device)
    if top_k is not None and top_k < prob.shape[0]:
        # official MaskFormer: top-k of the entity probabilities, then sorted ascending below
        query_ids = prob.topk(top_k, sorted=False).indices
    # parity: official sorts ascending and paints in that order, so the last painted (most
    # probable) query wins; output k is the k-th query of the reversed order. A stable
    # ascending sort then flip reproduces its tie order.
    ascending = torch.sort(prob[query_ids], stable=True).indices
    return query_ids, ascending.flip(0)
