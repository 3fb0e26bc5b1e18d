"""The contracts between the parts (see ARCHITECTURE.md): Batch, Outputs, EntityPrediction.

Shape letters used everywhere in this package:

- ``B`` images, ``T`` views per image (1 full view + crops), ``N = B*T`` view-images,
- ``Q`` queries, ``K`` ground-truth entities, ``C`` channels, ``L`` feature levels,
- ``P`` sampled points, ``H, W`` pixels (padded batch size unless said otherwise),
- ``h, w`` feature-map size (``pred_masks`` are at stride 4 of the padded batch).

Everything here is a plain ``dict`` at run time (DDP, Lightning and ``torch.compile`` handle those
without registration); the ``TypedDict`` only documents the keys for readers and type checkers.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from torch import Tensor


class EntityTarget(TypedDict):
    """Ground truth of one image, index-aligned across its T views.

    Shape:
        masks: (K, T, H, W) bool, at the padded batch size; an entity outside a view (or outside a
            view's unpadded area) is all-zero there.
        valid: (K, T) bool, the entity is present in that view (official rule: non-empty box AND
            non-empty mask). Image-level targets of view t are ``masks[valid[:, t], t]``; the
            batch-level targets are all K entities over all T views.
        labels: (K,) int64 contiguous class index of each target (class-aware tasks only;
            absent = every target is class 0, the entity class).
    """

    masks: Tensor
    valid: Tensor
    labels: NotRequired[Tensor]


class Batch(TypedDict):
    """What ``collate`` yields and the LightningModule consumes.

    Shape:
        images: (N, 3, H, W) uint8 (or float 0..255), views image-major
            ``[img0-full, img0-crop1, ..., img1-full, ...]``, zero-padded bottom/right to a multiple
            of 32. The model normalises and re-zeroes the padding (official: pad after normalising).
        view_sizes: (N, 2) int64, unpadded (h, w) of each view.
        boxes: (B, T, 4) float, each view's region (x0, y0, x1, y1) in original-image pixels
            (the full view is the whole image; for a flipped sample, of the flipped image).
        orig_sizes: (B, 2) int64, original (H, W).
        image_ids: (B,) int64, the annotation file's image ids.
        targets: list of B ``EntityTarget`` (crowd entities excluded).
        file_names: list of B str (for error messages, overlays and writers).
    """

    images: Tensor
    view_sizes: Tensor
    boxes: Tensor
    orig_sizes: Tensor
    image_ids: Tensor
    targets: NotRequired[list[EntityTarget]]
    file_names: NotRequired[list[str]]


class PassOutputs(TypedDict):
    """Predictions of one decoder pass (image-level or batch-level).

    Shape (image-level): pred_logits (N, Q, 2), pred_masks (N, Q, h, w).
    Shape (batch-level): pred_logits (B, Q, 2), pred_masks (B, Q, T, h, w).
    Logit index 0 = entity, 1 = no-object. ``aux_outputs`` holds the earlier predictions (the one
    from the raw queries first), each a dict with ``pred_logits`` and ``pred_masks``.

    Factored form (training forwards with ``training_mask_logits="factored"``, opt-in): no
    ``pred_masks``; every prediction (and each ``aux_outputs`` entry) has ``mask_embed`` instead,
    and the pass has one ``mask_features``; the mask logits they stand for are
    ``einsum("bqc,bchw->bqhw", mask_embed, mask_features)`` (image-level) or
    ``einsum("bqc,btchw->bqthw", ...)`` (batch-level). Shapes: mask_embed (N or B, Q, C);
    mask_features (N, C, h, w) image-level, (B, T, C, h, w) batch-level. The losses evaluate
    them only at their sampled points (``cropformer.losses.mask_logits``).
    """

    pred_logits: Tensor
    pred_masks: NotRequired[Tensor]
    aux_outputs: list[dict[str, Tensor]]
    mask_embed: NotRequired[Tensor]
    mask_features: NotRequired[Tensor]


class Outputs(TypedDict):
    """What ``CropFormer.forward(images, num_views=T)`` returns.

    ``batch_level`` is absent in Mask2Former mode (no association module, or T == 1 without it).
    """

    image_level: PassOutputs
    batch_level: NotRequired[PassOutputs]


class EntityPrediction(TypedDict):
    """Entities of one image at its original resolution, non-overlapping.

    Shape:
        id_map: (H, W) int32, -1 where no entity; value k marks output k.
        scores: (M,) float32, one per output.
        query_indices: (M,) int64, the query each output came from.
    Output k's mask is ``id_map == k``. Order follows the fusion's ordering flag (official: by
    entity probability, descending; otherwise by score, descending). Outputs may be empty masks.
    """

    id_map: Tensor
    scores: Tensor
    query_indices: Tensor
