"""Diagnoses of missed targets (profile summaries), attached to a row's ``diagnosis`` field.

Keyed by (row id, a substring of the row's ``what``); written from torch.profiler / py-spy runs
on this machine kind. ``annotate`` adds the text to rows whose target was missed.
"""

from __future__ import annotations

from typing import Any

_NET = (
    "fp32 (equal numerics): both networks do the same work with the same kernels, so ours is "
    "0.94-1.08x, within noise of transformers'. torch.profiler of our Mask2Former forward at "
    "512x512: pixel decoder ~60 %, backbone ~30 %, decoder ~9 % of the time; by op: addmm "
    "(linear layers) 31 %, the deformable-attention core 35 % (grid_sampler_2d 10 %, and the "
    "stack + multiply + sum of the sampled values 25 %: cat 10 %, mul 8 %, sum 7 %), copies 6 %, "
    "bmm 6 %. transformers uses the same grid-sample formulation (row 6: equal speed), so pure "
    "PyTorch leaves no algorithmic margin; reaching 1.2x needs a fused deformable-attention "
    "kernel (C++/Triton-CPU) that accumulates the weighted samples without materialising the "
    "(N*M, D, Lq, L*P) stack (~25 % of the time). bf16 rows are NOT equal numerics: our pixel "
    "decoder runs in fp32 under autocast, as the official one does (autocast disabled, "
    "pixel_decoder.py), while transformers runs it in bf16; the pixel decoder is ~60 % of the "
    "time, so ours gains nothing from bf16 on this CPU (and pays the casts) while transformers "
    "gets 2-3x. Fix: a named flag (default fp32 = official) to let the pixel decoder run under "
    "autocast; that is a model-part change, not made here."
)
_INFER = (
    "Time: met against the official 82 s only in ratio (2.2x); the absolute 30 s target is "
    "missed because this run shared the 2-core VM with a training job using ~1 core (the "
    "anchors were taken on an idle machine; the 5-view network alone took 34 s here for the "
    "1200x1800 image and 67 s for the 2048x3072 one, the same work, so contention doubled it). "
    "The network is ~90 % of the time (profile of the forward: pixel decoder ~60 %, backbone "
    "~30 %; the deformable-attention core ~35 %, see row 2); the fusion is only a few seconds. "
    "Memory: the peak (6.2 GB at both sizes, i.e. independent of the original resolution) is "
    "reached in the 5-view network forward and the upsampling of the mask logits to the padded "
    "input size before the fusion, not in the fusion (row 4: 4500x3000 fuses within 4.9 GB "
    "including these inputs). Estimated from the tensor sizes (no memory profile was taken in "
    "this session): the upsampled batch-level logits Q x T x 800 x 1216 fp32 = 1.95 GB, the "
    "deformable-attention temporaries of 5 views (the (N*M, D, Lq, L*P) stack and the "
    "grid-sample output, ~1.2 GB each per layer) and the 5-view Swin activations. Fix: upsample "
    "the logits per query chunk inside the fusion (same values), and chunk the "
    "deformable-attention core over queries at inference."
)
_TRAIN = (
    "Time: ours is 1.6x (CropFormer) and 1.3x (Mask2Former) faster than the official figures "
    "despite the shared machine (a training job used ~1 of the 2 cores during this run), "
    "short of 2x. Memory is on par with the official code (7.8 vs 7.9 GB, 4.1 vs 3.8 GB): "
    "the step keeps the same autograd activations (Swin, 6 deformable layers with their "
    "(N*M, D, Lq, L*P) sample stacks, 2 x 10 decoder predictions with point-sampled losses). "
    "The training step was not profiled to completion in this session (the profiler run was "
    "starved by the benchmark and stopped); by the inference profile the deformable-attention "
    "core (~35 %) and the linear layers (~31 %) dominate. What would reach 2x time and half "
    "the memory: a fused deformable-attention kernel with its own backward (saves the sample "
    "stack: no (N*M, D, Lq, L*P) tensor kept for backward), activation checkpointing of the "
    "pixel-decoder layers (`grad_checkpointing`), and bf16 training with the pixel decoder "
    "allowed under autocast (see row 2)."
)

DIAGNOSES: dict[tuple[str, str], str] = {
    ("2", "Mask2Former"): _NET,
    ("3b", "End-to-end"): _INFER,
    ("3c", "Training step"): _TRAIN,
}


def annotate(row: dict[str, Any]) -> dict[str, Any]:
    """Attach the matching diagnosis to a row that missed its target (in place; returned)."""
    row.pop("diagnosis", None)
    if row.get("met") is not False:
        return row
    for (rid, key), text in DIAGNOSES.items():
        if row.get("row") == rid and key in row.get("what", ""):
            row["diagnosis"] = text
            break
    return row
