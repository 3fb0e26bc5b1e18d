"""Check an exported file against the eager network: raw outputs and fused entities.

The acceptance measure of the export: every raw output within ``RAW_TOLERANCE`` x max |value| of
eager fp32, and the fused entities (matched one-to-one, ``evaluation.agreement``) sharing at least
``PIXEL_AGREEMENT`` of the pixels.

The decoder's attention masks are thresholds: where a mask logit sits within rounding of the
threshold, eager and a runtime can decide a cell differently, and the outputs then move by far
more than the rounding (``cropformer.export.decisions``). A file exported with ``decisions=True``
is therefore also compared on the same decisions: eager re-run with the file's decisions must
agree within ``RAW_TOLERANCE``, and each decision it was made to change must have been a tie
(eager's logit within ``RAW_TOLERANCE`` x max |logit| of the threshold). Deployed files carry no
decisions and are held to the plain bound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cropformer.export.decisions import attention_decisions, forced_decisions
from cropformer.model.decoder import MaskedAttentionDecoder
from cropformer.schema import Outputs

RAW_TOLERANCE = 1e-3
PIXEL_AGREEMENT = 0.999


def synthetic_photo(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """A deterministic test picture: a smooth background and a few flat shapes (no file needed).

    Shape: returns (height, width, 3) uint8.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([xx / width * 200, yy / height * 200, (xx + yy) / (height + width) * 150], -1)
    for _ in range(6):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        h, w = rng.integers(height // 8, height // 2), rng.integers(width // 8, width // 2)
        image[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
    return image.clip(0, 255).astype(np.uint8)


def raw_outputs(outputs: Outputs) -> list[Tensor]:
    """The exported outputs of ``outputs`` in file order (logits and masks of each pass)."""
    out = [outputs["image_level"]["pred_logits"], outputs["image_level"]["pred_masks"]]
    if "batch_level" in outputs:
        batch = outputs["batch_level"]
        out += [batch["pred_logits"], batch["pred_masks"]]
    return out


def relative_error(reference: Tensor, other: Tensor) -> float:
    """max |reference - other| / max |reference| (0 for two zero tensors)."""
    scale = float(reference.abs().max()) or 1.0
    return float((reference.float() - other.float()).abs().max()) / scale


def compare(
    reference: nn.Module | Callable[..., Outputs],
    candidate: nn.Module | Callable[..., Outputs],
    fusion: Callable[..., Any],
    settings: Mapping[str, Any],
    images: list[np.ndarray],
) -> dict[str, Any]:
    """Raw-output error (worst over outputs and images) and fused pixel agreement (worst image),
    with the padded (H, W) of the views run (``padded_sizes``).

    ``reference`` is the eager network (called with ``aux=False``), ``candidate`` e.g. an
    ``ExportedNetwork``; ``settings`` are the test views (``EvalViews`` keywords). When the
    candidate returns its attention-mask decisions (``last_decisions``: a file exported with
    ``decisions=True``), ``same_decisions`` holds the comparison on them: the raw error of eager
    re-run with the candidate's decisions, the number of decisions that changed eager's own
    (``forced``) and the largest ``|eager logit| / max |logit|`` among them (``forced_margin``).
    ``passed`` is :func:`accepted`.
    """
    from cropformer.data.collate import collate
    from cropformer.data.views import InferenceViews
    from cropformer.evaluation.agreement import id_map_agreement
    from cropformer.inference.predictor import EvalViews

    views = EvalViews(InferenceViews(**dict(settings)))
    worst_raw, worst_pixels = 0.0, 1.0
    same: dict[str, Any] | None = None
    sizes: set[tuple[int, int]] = set()
    for index, image in enumerate(images):
        batch = collate([views(image, index)])
        num_views = int(batch["boxes"].shape[1])
        sizes.add((int(batch["images"].shape[-2]), int(batch["images"].shape[-1])))
        with torch.no_grad():
            ref = reference(
                batch["images"], num_views=num_views, view_sizes=batch["view_sizes"], aux=False
            )
            got = candidate(batch["images"], num_views=num_views, view_sizes=batch["view_sizes"])
            decisions = list(getattr(candidate, "last_decisions", None) or [])
            if decisions:
                with attention_decisions(_decoder_of(reference), override=decisions) as own:
                    matched = reference(
                        batch["images"],
                        num_views=num_views,
                        view_sizes=batch["view_sizes"],
                        aux=False,
                    )
                forced, margin = forced_decisions(own, decisions)
                same = same or {"raw_relative_error": 0.0, "forced": 0, "forced_margin": 0.0}
                same["forced"] += forced
                same["forced_margin"] = max(same["forced_margin"], margin)
                for a, b in zip(raw_outputs(matched), raw_outputs(got)):
                    error = relative_error(a, b)
                    same["raw_relative_error"] = max(same["raw_relative_error"], error)
        for a, b in zip(raw_outputs(ref), raw_outputs(got)):
            if a.shape != b.shape:
                raise AssertionError(f"output shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
            worst_raw = max(worst_raw, relative_error(a, b))
        fused_ref = fusion(ref, batch)[0]["id_map"]
        fused_got = fusion(got, batch)[0]["id_map"]
        worst_pixels = min(worst_pixels, id_map_agreement(fused_ref, fused_got).fraction)
    result: dict[str, Any] = {
        "raw_relative_error": worst_raw,
        "pixel_agreement": worst_pixels,
        "images": len(images),
        "padded_sizes": sorted(sizes),
    }
    if same is not None:
        result["same_decisions"] = same
    result["passed"] = accepted(result)
    return result


def accepted(result: Mapping[str, Any]) -> bool:
    """The export's acceptance of a :func:`compare` result: fused pixels >= ``PIXEL_AGREEMENT``
    and raw outputs within ``RAW_TOLERANCE``, plainly or on the same decisions (every forced
    decision a tie within ``RAW_TOLERANCE``; see the module docstring)."""
    if result["pixel_agreement"] < PIXEL_AGREEMENT:
        return False
    if result["raw_relative_error"] <= RAW_TOLERANCE:
        return True
    same = result.get("same_decisions")
    return bool(
        same is not None
        and same["raw_relative_error"] <= RAW_TOLERANCE
        and same["forced_margin"] <= RAW_TOLERANCE
    )


def _decoder_of(reference: Any) -> MaskedAttentionDecoder:
    """The eager network's decoder (``reference`` a ``CropFormer`` or a ``partial`` of one)."""
    net = getattr(reference, "func", reference)
    decoder = getattr(net, "decoder", None)
    if not isinstance(decoder, MaskedAttentionDecoder):
        raise ValueError("comparing on the same decisions needs the eager CropFormer as reference")
    return decoder


def verify_file(
    path: str | Path,
    net: nn.Module,
    fusion: Callable[..., Any],
    settings: Mapping[str, Any],
    *,
    image: str | Path | None = None,
    runtime: str | None = None,
) -> dict[str, Any]:
    """``compare`` the eager ``net`` with the exported file at ``path`` on one image (a file, or
    :func:`synthetic_photo`)."""
    from cropformer.export.session import ExportedNetwork, default_runtime_for

    if image is not None:
        from cropformer.data.decode import load_image

        picture = load_image(image)
    else:
        picture = synthetic_photo()
    session = ExportedNetwork(path, runtime or default_runtime_for(path))
    result = compare(net.eval(), session, fusion, settings, [picture])
    result["runtime"] = session.runtime
    return result
