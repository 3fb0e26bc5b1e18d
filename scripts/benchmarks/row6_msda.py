"""Row 6: deformable attention core, forward + backward, ours vs transformers' reference.

Shapes of the pixel decoder at an 800x1344 input: levels 1/8, 1/16, 1/32 (100x168, 50x84, 25x42),
8 heads x 32 channels, 4 points per level, one query per level-pixel (22050 queries).
"""

from __future__ import annotations

from typing import Any

from common import fmt_s, make_row, run_isolated, timeit_pair


def measure(size: tuple[int, int] = (800, 1344), repeats: int = 3) -> dict[str, Any]:
    """Child: time both cores on the same random inputs; compare outputs and gradients."""
    import torch
    from transformers.models.mask2former.modeling_mask2former import (
        multi_scale_deformable_attention as hf_core,
    )

    from cropformer.model.ms_deform_attn import ms_deform_attn_core

    H, W = size
    shapes = [(H // s, W // s) for s in (8, 16, 32)]
    S = sum(h * w for h, w in shapes)
    M, D, L, P = 8, 32, 3, 4
    g = torch.Generator().manual_seed(0)
    value = torch.randn(1, S, M, D, generator=g)
    loc = torch.rand(1, S, M, L, P, 2, generator=g)
    attn = torch.randn(1, S, M, L, P, generator=g).flatten(-2).softmax(-1).view(1, S, M, L, P)
    grad_out = torch.randn(1, S, M * D, generator=g)

    def step(core: Any) -> tuple[torch.Tensor, ...]:
        v, lo, a = (t.clone().requires_grad_(True) for t in (value, loc, attn))
        out = core(v, shapes, lo, a)
        out.backward(grad_out)
        return out.detach(), v.grad, lo.grad, a.grad  # type: ignore[return-value]

    ours, ref = timeit_pair(lambda: step(ms_deform_attn_core), lambda: step(hf_core), 1, repeats)
    diffs = [float((a - b).abs().max()) for a, b in zip(ours["result"], ref["result"])]
    return {
        "ours_s": ours["median"],
        "ref_s": ref["median"],
        "max_abs_diff_out": diffs[0],
        "max_abs_diff_grads": max(diffs[1:]),
        "queries": S,
    }


def run(quick: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    """The row (one child process)."""
    size = (800, 1344)
    r = run_isolated("row6_msda", "measure", {"size": list(size), "repeats": 2 if quick else 3})
    if "error" in r:
        return [_failed(r)]
    ratio = r["ref_s"] / r["ours_s"]
    same = r["max_abs_diff_out"] < 1e-4 and r["max_abs_diff_grads"] < 1e-3
    return [
        make_row(
            "6",
            "Deformable attention core fwd+bwd (pixel-decoder shapes of 800x1344)",
            reference=f"transformers multi_scale_deformable_attention {fmt_s(r['ref_s'])}",
            ours=fmt_s(r["ours_s"]),
            ratio=ratio,
            target=">= 1.0x (not slower)",
            met=bool(ratio >= 0.95 and same),
            inputs=f"{r['queries']} queries, 8 heads x 32, 3 levels x 4 points, fp32",
            check=(
                f"outputs max |diff| {r['max_abs_diff_out']:.1e}, gradients "
                f"{r['max_abs_diff_grads']:.1e} ({'same' if same else 'DIFFERENT'})"
            ),
            note="Both are the grid-sample formulation; ratios within 0.95-1.05 are noise.",
            ours_s=r["ours_s"],
            reference_s=r["ref_s"],
        )
    ]


def _failed(r: dict[str, Any]) -> dict[str, Any]:
    return make_row(
        "6",
        "Deformable attention core",
        reference="-",
        ours="-",
        ratio=None,
        target=">= 1.0x",
        met=None,
        inputs="800x1344",
        check="failed",
        note=str(r.get("error"))[:300],
    )
