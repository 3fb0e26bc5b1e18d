"""Diagnoses of missed targets (profile summaries), attached to a row's ``diagnosis`` field.

Keyed by (row id, a substring of the row's ``what``); written by hand from torch.profiler /
py-spy runs made earlier (``PROFILED`` says when and where); they are not re-measured by
``make bench``, and ``annotate`` says so in front of the text it adds to a row whose target was
missed.
"""

from __future__ import annotations

from typing import Any

_NET = (
    "Both networks run the same layers with the same GEMM kernels; ours is faster by its "
    "deformable-attention core (gather formulation, rows 6/6b: ~3x the grid-sample one in "
    "forward and backward) and the inference path (no intermediate mask predictions kept). "
    "torch.profiler of our forward at 800x1344 before the gather core: pixel decoder ~60 %, "
    "backbone ~30 %, decoder ~9 %; the core was ~35 % (grid_sampler 13 %, stack + multiply + "
    "sum 25 %) and is now ~10 %; linear layers (addmm) ~30 %. At 512x512 the core's share is "
    "smaller, so the ratio is closer to 1.2x there and a noisy run can dip below it; the rest "
    "is GEMM time that both implementations share."
)
_INFER = (
    "Measured peak before the fixes of this session: 6.2 GB, reached in the 5-view pixel "
    "decoder (grid-sample stacks of 1.2 GB per layer) and the decoder keeping all 10 "
    "intermediate mask predictions of 5 views. Fixed by the gather core, `aux=False` at "
    "inference and one view at a time through backbone and pixel decoder on CPU "
    "(`view_chunk=auto`): 2.8 GB. Time is ~90 % network (backbone + pixel decoder of 5 views)."
)
_TRAIN = (
    "Profile (torch.profiler, 2 threads, CropFormer fp32 default step 12.4 s of CPU time): "
    "GEMMs 39 % (mm 16 % = linear backward, bmm 13 % = Swin window attention and the mask "
    "logits of the 20 supervised predictions, addmm 10 % = linear forward), elementwise adds/"
    "copies/multiplies ~15 %, convolution backward 3 %, the losses' sampling ~10 % (uniform "
    "draws 2.6 %, top-k 2 %, target gathers 2.5 %, grid_sample 2 %), deformable attention "
    "~3 %. Phases: forward 3.1 s, losses + matching 2.7 s, backward 6.2 s (official: losses "
    "7-8 s). Mask2Former: GEMMs 42 %, forward 1.65 s, losses 0.74 s, backward 2.3 s. The "
    "remaining time is dominated by the same FLOPs as the official network, so fp32 stops near "
    "1.5-1.8x. Memory: saved activations of the CropFormer step are 4.3 GB (backbone 1.7, pixel "
    "decoder 1.3, decoder passes 0.8, losses 0.5); activation checkpointing cuts them to 1.3 GB "
    "(3.9 GB peak: 2.0x less than official) at +15 % time. Mask2Former's peak stays above half "
    "of 3.8 GB because ~1.1 GB of it is the process itself (torch + timm + hydra imports "
    "0.7 GB, weights and gradients 0.4 GB). What would reach 2x in fp32: fewer FLOPs, e.g. "
    "point-sample the 256-channel mask features instead of computing the full-resolution mask "
    "logits of the 18 intermediate predictions (exact by linearity, but a change of the Outputs "
    "contract; built since as `decoder.training_mask_logits=factored` and measured no faster "
    "on 2026-11-29: the in-run 3c rows), or fused CPU kernels for the elementwise chains. The "
    "bf16 rows show the "
    "recipe for hardware with bf16 matrix units (GPUs, and the CPU of that profile, which had "
    "them): ~2.2x / 1.8x faster with ~2.2x / 1.8x less memory than the official fp32 step."
)

_DATA_EVAL = (
    "cProfile of ours, 3 evaluation samples at 4000x3000 (full view + 4 crops, 40 entities): "
    "38 % expanding each view's label map into K per-entity boolean masks (as collate does; "
    "40 x 800x1067 bytes = 34 MB per view, memory-bound: a scatter of the labelled pixels "
    "instead of the K comparisons was tried and was no faster), 21 % PIL's bilinear resizes "
    "of the 5 views, 24 % sampling the label maps from the RLE runs (`searchsorted` 17 % + "
    "its Python 7 %), 5 % the rest of `load`, 3 % the reduced-scale JPEG decode. Five views "
    "each cost about the same, so the evaluation sample costs ~2.3x a training sample (2 "
    "views) while the official eval mapper decodes only the full view's annotations (0.87x "
    "its training sample), which is why this case alone misses 5x against the anchors. The "
    "anchors come from another CPU: the re-created official steps take 5.4 s here, 2.6 s on "
    "the 2026-11-25 machine and 1.4 s in the anchors. What would reach it: not expanding "
    "the crop views' masks when no validation loss is computed (`data.eval_targets=false`; "
    "AP needs only the images), a change of what the row measures, so it is not done here."
)

#: When and where the profiles behind each text were taken (git log of this file).
PROFILED = {
    _NET: "2026-11-25 (commit 5813a11), 2-core AMD EPYC with bf16 units, torch 2.14.1",
    _INFER: "2026-11-25 (commit 5813a11), 2-core AMD EPYC with bf16 units, torch 2.14.1",
    _TRAIN: "2026-11-25 (commit df21a26), 2-core AMD EPYC with bf16 units, torch 2.14.1",
    _DATA_EVAL: (
        "2026-11-29 (commit 719e2ef), 2-core AMD EPYC AVX2 without bf16 units, torch 2.14.1, "
        "taken while a training run shared the machine (shares, not times)"
    ),
}

DIAGNOSES: dict[tuple[str, str], str] = {
    ("2", "Mask2Former"): _NET,
    ("3b", "End-to-end"): _INFER,
    ("3c", "Training step"): _TRAIN,
    ("1", "evaluation sample (full + 4 crops), 4000x3000"): _DATA_EVAL,
}


def annotate(row: dict[str, Any]) -> dict[str, Any]:
    """Attach the matching diagnosis to a row that missed its target (in place; returned)."""
    row.pop("diagnosis", None)
    if row.get("met") is not False:
        return row
    for (rid, key), text in DIAGNOSES.items():
        if row.get("row") == rid and key in row.get("what", ""):
            when = PROFILED.get(text, "date not recorded")
            row["diagnosis"] = (
                f"(From an earlier profile, {when}; not re-measured by this run.) {text}"
            )
            break
    return row
