"""Row 2: network in Mask2Former mode vs transformers' Mask2FormerForUniversalSegmentation.

Same configuration on both sides: Swin-T (embed 96, depths 2-2-6-2, window 7, drop-path 0.3),
6-layer deformable pixel decoder (256 channels, FFN 1024), 100 queries, 9 decoder layers + the
raw-query prediction, 1 class (entity), random weights. Inference: forward of one image.
Training step: forward + losses (12544 points, deep supervision, Hungarian matching, same
targets) + backward + AdamW step. fp32, and bf16 autocast on a CPU with bf16 units. Each
implementation and size runs in its own process: ours first (it writes its weights converted to
transformers' keys, and its fp32 outputs), then transformers' (loads the weights from the file,
never imports our network). Memory: peak RSS of each process and its growth above the process's
RSS once model and inputs were built. Inference outputs must agree within ``REL_TOL``; the
training step has no numerical check (the two sample their loss points from different random
streams), which the row says.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from common import (
    failed_row,
    fmt_gb,
    fmt_s,
    make_row,
    peak_rss_gb,
    reset_peak_rss,
    rss_gb,
    run_isolated,
    spread_text,
    stat_text,
    timeit,
)

NUM_TARGETS = 20


def build_ours(name: str = "mask2former_swint", overrides: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """Our network and criterion from the project's config (random weights, seed 0).

    ``overrides``: extra Hydra overrides, e.g. ``model.net.backbone.grad_checkpointing=true``.
    """
    import torch
    from hydra.utils import instantiate

    from cropformer.run.config import compose_config

    cfg = compose_config([f"model={name}", "paths.output_dir=.", *overrides])
    torch.manual_seed(0)
    return instantiate(cfg.model.net), instantiate(cfg.model.criterion)


def build_hf() -> Any:
    """transformers' Mask2Former with the same configuration (random weights, seed 0)."""
    import torch
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    swin = SwinConfig(
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        drop_path_rate=0.3,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    cfg = Mask2FormerConfig(
        backbone_config=swin,
        num_queries=100,
        decoder_layers=10,
        encoder_layers=6,
        hidden_dim=256,
        feature_size=256,
        mask_feature_size=256,
        encoder_feedforward_dim=1024,
        dim_feedforward=2048,
        num_attention_heads=8,
        dropout=0.0,
        num_labels=1,
        train_num_points=12544,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        no_object_weight=0.1,
        class_weight=2.0,
        mask_weight=5.0,
        dice_weight=5.0,
        use_auxiliary_loss=True,
    )
    torch.manual_seed(0)
    return Mask2FormerForUniversalSegmentation(cfg)


def _targets(H: int, W: int, K: int = NUM_TARGETS) -> Any:
    """K non-overlapping vertical-band masks covering the image."""
    import torch

    cols = torch.arange(W) * K // W
    return (cols[None, None, :] == torch.arange(K)[:, None, None]).expand(K, H, W).clone()


#: Inference outputs count as equal when max |diff| <= REL_TOL x max |ours| for the class logits
#: and for the mask logits (fp32 rounding of two implementations of the same layers, amplified by
#: the random-weight decoder: ~1e-4 relative was seen; in float64 the two agree to 1e-8).
REL_TOL = 1e-3


def _shared_path(kind: str, height: int, width: int) -> Path:
    """A file the "ours" child writes and the "hf" child reads (same parent: run_isolated)."""
    return (
        Path(tempfile.gettempdir()) / f"cropformer_row2_{os.getppid()}_{kind}_{height}x{width}.pt"
    )


def measure(
    impl: str,
    mode: str,
    height: int,
    width: int,
    repeats: int = 2,
    precisions: tuple[str, ...] = ("fp32", "bf16"),
) -> dict[str, Any]:
    """Child: one implementation, one size, one mode (infer | train), each of ``precisions``.

    The "ours" child runs first: it writes our seed-0 weights converted to transformers' keys
    (and, for inference, its fp32 outputs) to temp files; the "hf" child loads them, so it never
    imports or builds our network and its memory is its own. Memory is reported as the peak RSS
    of the process and as the growth above the process's RSS once model and inputs are built.
    """
    import contextlib

    import torch

    weights_path = _shared_path("weights", height, width)
    ref_path = _shared_path("outputs", height, width)
    if impl == "ours":
        from hf_weights import hf_state_dict

        net, criterion = build_ours()
        torch.save(hf_state_dict(net), weights_path)
        ref_path.unlink(missing_ok=True)
    else:
        from hf_weights import load_hf_state_dict

        if not weights_path.is_file():
            raise RuntimeError(f"{weights_path} missing: the ours process must run first")
        net, criterion = build_hf(), None
        load_hf_state_dict(net, torch.load(weights_path))
        weights_path.unlink()
    params = sum(p.numel() for p in net.parameters())
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (1, 3, height, width), generator=g, dtype=torch.uint8)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    pixel_values = (img.float() - mean) / std
    # our net zero-pads the normalised image to /32; give transformers the same tensor
    pad_h, pad_w = -height % 32, -width % 32
    pixel_values = torch.nn.functional.pad(pixel_values, (0, pad_w, 0, pad_h))
    masks = _targets(height, width)
    out: dict[str, Any] = {"params": params}
    state = {"precision": "fp32"}

    def ctx() -> Any:
        if state["precision"] == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    if mode == "infer":
        net.eval()

        def step() -> Any:
            with torch.no_grad():
                if impl == "ours":
                    o = net(img, num_views=1)["image_level"]
                    return tuple(o["pred_masks"].shape)
                o = net(pixel_values=pixel_values)
                return tuple(o.masks_queries_logits.shape)
    else:
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        targets = [{"masks": masks[:, None], "valid": torch.ones(NUM_TARGETS, 1, dtype=torch.bool)}]
        mask_labels = [masks.float()]
        class_labels = [torch.zeros(NUM_TARGETS, dtype=torch.long)]

        def step() -> Any:
            opt.zero_grad(set_to_none=True)
            with ctx():
                if impl == "ours":
                    loss_dict = criterion(net(img, num_views=1), targets)
                    loss = criterion.total(loss_dict)
                    n_terms = len(loss_dict)
                else:
                    o = net(
                        pixel_values=pixel_values,
                        mask_labels=mask_labels,
                        class_labels=class_labels,
                    )
                    loss, n_terms = o.loss, None
            loss.backward()
            opt.step()
            return n_terms, float(loss.detach())

    def run_one() -> Any:
        if mode == "infer":
            with ctx():
                return step()
        return step()  # the training step enters ctx() around the forward only

    out["baseline_rss_gb"] = rss_gb()
    reset_ok = reset_peak_rss()
    for precision in precisions:
        state["precision"] = precision
        if impl == "ours":
            # equal numerics: transformers runs its pixel decoder under autocast, so ours does
            # too in the bf16 case (force_fp32=False; the official default keeps it in fp32)
            net.pixel_decoder.force_fp32 = precision == "fp32"
        t = timeit(run_one, warmup=1, repeats=repeats)
        # best of the repeats: the least disturbed run of a shared machine, same rule both sides
        out[f"{precision}_s"] = t["min"]
        out[f"{precision}_times"] = t["times"]
        res = t["result"]
        if mode == "train":
            out[f"{precision}_loss"] = res[1]
            res = res[0]
        out[f"{precision}_result"] = str(res)
    out["growth_gb"] = peak_rss_gb() - out["baseline_rss_gb"] if reset_ok else None
    if impl == "ours":
        net.pixel_decoder.force_fp32 = True
    if mode == "infer":  # output check after timing: the same forward, no extra peak memory
        with torch.no_grad():
            if impl == "ours":
                o = net(img, num_views=1)["image_level"]
                torch.save({"logits": o["pred_logits"], "masks": o["pred_masks"]}, ref_path)
            elif ref_path.is_file():
                o = net(pixel_values=pixel_values)
                ref = torch.load(ref_path)
                ref_path.unlink()
                if o.masks_queries_logits.shape == ref["masks"].shape:
                    out["max_diff_logits"] = float(
                        (o.class_queries_logits - ref["logits"]).abs().max()
                    )
                    out["max_diff_masks"] = float(
                        (o.masks_queries_logits - ref["masks"]).abs().max()
                    )
                    out["max_abs_logits"] = float(ref["logits"].abs().max())
                    out["max_abs_masks"] = float(ref["masks"].abs().max())
    return out


def outputs_equal(r: dict[str, Any]) -> bool | None:
    """The inference check: both outputs within ``REL_TOL`` (None: not compared)."""
    if "max_diff_masks" not in r:
        return None
    return bool(
        r["max_diff_logits"] <= REL_TOL * max(r["max_abs_logits"], 1e-12)
        and r["max_diff_masks"] <= REL_TOL * max(r["max_abs_masks"], 1e-12)
    )


def _mem(r: dict[str, Any]) -> str:
    growth = r.get("growth_gb")
    return (
        f"peak {fmt_gb(r['peak_rss_gb'])} (+{fmt_gb(growth)} above its baseline)"
        if (growth is not None)
        else f"peak {fmt_gb(r['peak_rss_gb'])}"
    )


def run(quick: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    """Rows: inference at 512x512 and 800x1344, training step at 512x512; fp32 (and bf16 on a
    CPU with bf16 units: elsewhere bf16 is emulated and says nothing about bf16)."""
    import common

    machine = common.MACHINE or common.machine_info()
    precisions = ("fp32", "bf16") if machine.get("bf16_units") else ("fp32",)
    rows = []
    cases = [("infer", 512, 512), ("infer", 800, 1344), ("train", 512, 512)]
    for mode, H, W in cases:
        reps = 2 if quick else (3 if (mode == "train" or H > 512) else 5)
        res = {}
        for impl in ("ours", "hf"):  # ours first: it writes the converted weights
            res[impl] = run_isolated(
                "row2_network",
                "measure",
                {
                    "impl": impl,
                    "mode": mode,
                    "height": H,
                    "width": W,
                    "repeats": reps,
                    "precisions": list(precisions),
                },
            )
        what = "inference (forward)" if mode == "infer" else "training step (fwd+loss+bwd+AdamW)"
        for precision in precisions:
            o, r = res["ours"], res["hf"]
            if "error" in o or "error" in r:
                rows.append(
                    failed_row(
                        "2",
                        f"Mask2Former Swin-T {what}, {W}x{H}, {precision}",
                        str(o.get("error") or r.get("error"))[:400],
                        target=">= 1.2x faster",
                        inputs=f"{W}x{H}",
                    )
                )
                break
            ratio = r[f"{precision}_s"] / o[f"{precision}_s"]
            same_shape = o[f"{precision}_result"] == r[f"{precision}_result"]
            check = (
                f"parameters ours {o['params'] / 1e6:.2f} M vs transformers "
                f"{r['params'] / 1e6:.2f} M"
            )
            if mode == "infer":
                equal = outputs_equal(r)
                check += (
                    f"; mask logits shape {o[f'{precision}_result']} "
                    f"{'equal' if same_shape else 'vs ' + r[f'{precision}_result']}"
                )
                if equal is not None:
                    check += (
                        f"; fp32 outputs (same weights, eval) "
                        f"{'equal' if equal else 'DIFFERENT'} within max |diff| <= "
                        f"{REL_TOL:.0e} x max |value|: class logits {r['max_diff_logits']:.1e} "
                        f"(max {r['max_abs_logits']:.1f}), mask logits {r['max_diff_masks']:.1e} "
                        f"(max {r['max_abs_masks']:.1f})"
                    )
                else:
                    check += "; outputs NOT compared (the ours process left no fp32 outputs)"
                passed = bool(same_shape and equal)
            else:
                check += (
                    f"; same initial weights; {NUM_TARGETS} targets, 12544 points, 10 supervised "
                    f"predictions both; {o[f'{precision}_result']} loss terms (ours); first-step "
                    f"losses ours {o[f'{precision}_loss']:.2f}, transformers "
                    f"{r[f'{precision}_loss']:.2f} (after the warm-up step). No numerical check "
                    "of the training step: the two sample their loss points at random from "
                    "different streams, so losses and gradients are not comparable"
                )
                passed = None
            rows.append(
                make_row(
                    "2",
                    f"Mask2Former Swin-T {what}, {W}x{H}, {precision}",
                    reference=f"transformers {fmt_s(r[f'{precision}_s'])}, {_mem(r)}",
                    ours=f"{fmt_s(o[f'{precision}_s'])}, {_mem(o)}",
                    ratio=ratio,
                    target=">= 1.2x faster",
                    meets_target=ratio >= 1.2,
                    check_passed=passed,
                    in_run=True,
                    statistic=stat_text("min", reps, 1) + ", one process per side",
                    inputs=f"1 image {W}x{H}, Q=100, 9 layers, random weights",
                    check=check,
                    note=(
                        f"Spread of the timed runs: ours {spread_text(o[f'{precision}_times'])}, "
                        f"transformers {spread_text(r[f'{precision}_times'])}. Each side runs in "
                        "its own process (ours first); the transformers process loads our "
                        "weights, converted to its keys (scripts/benchmarks/hf_weights.py), from a "
                        "file and never imports our network, so its memory is its own. Memory: "
                        "peak RSS of the process (all its precisions) and the growth above its RSS "
                        "once model and inputs were built. Inference outputs are compared in "
                        "fp32 after timing. transformers' unused final Swin LayerNorm (1536 "
                        "parameters) is counted in its parameters. bf16 = autocast on both "
                        "sides with both pixel decoders under it (ours: "
                        "`pixel_decoder.force_fp32=false`; the official default keeps it in "
                        "fp32)."
                    ),
                    ours_s=o[f"{precision}_s"],
                    reference_s=r[f"{precision}_s"],
                    ours_times=o[f"{precision}_times"],
                    reference_times=r[f"{precision}_times"],
                    ours_peak_gb=o["peak_rss_gb"],
                    reference_peak_gb=r["peak_rss_gb"],
                    ours_growth_gb=o.get("growth_gb"),
                    reference_growth_gb=r.get("growth_gb"),
                )
            )
    if len(precisions) == 1:
        rows.append(
            make_row(
                "2",
                "Mask2Former Swin-T, bf16 (inference and training step)",
                reference="transformers",
                ours="not measured",
                ratio=None,
                target="report",
                in_run=True,
                statistic="not measured",
                inputs="as the fp32 rows",
                check="-",
                note=(
                    "Not measured: this CPU has no bf16 units (torch CPU capability "
                    f"{machine.get('torch_cpu_capability', '?')}); bf16 matrix products are "
                    "emulated there and far slower than fp32, on both sides."
                ),
            )
        )
    return rows
