"""Row 2: network in Mask2Former mode vs transformers' Mask2FormerForUniversalSegmentation.

Same configuration on both sides: Swin-T (embed 96, depths 2-2-6-2, window 7, drop-path 0.3),
6-layer deformable pixel decoder (256 channels, FFN 1024), 100 queries, 9 decoder layers + the
raw-query prediction, 1 class (entity), random weights. Inference: forward of one image.
Training step: forward + losses (12544 points, deep supervision, Hungarian matching, same
targets) + backward + AdamW step. fp32 and bf16 autocast. Each implementation and size runs in
its own process (peak RSS = the max over that process's cases).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from common import failed_row, fmt_gb, fmt_s, make_row, run_isolated, timeit

NUM_TARGETS = 20


def build_ours(name: str = "mask2former_swint", overrides: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """Our network and criterion from the project's config (random weights, seed 0).

    ``overrides``: extra Hydra overrides, e.g. ``model.net.backbone.grad_checkpointing=true``.
    """
    import torch
    from hydra.utils import instantiate

    from cropformer.utils.config import compose_config

    cfg = compose_config([f"model={name}", "paths.output_dir=/tmp/cropformer_bench", *overrides])
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


def measure(impl: str, mode: str, height: int, width: int, repeats: int = 2) -> dict[str, Any]:
    """Child: one implementation, one size, one mode (infer | train), fp32 and bf16."""
    import contextlib

    import torch

    if impl == "ours":
        net, criterion = build_ours()
    else:
        from hf_weights import copy_ours_to_hf

        net, criterion = build_hf(), None
        ours_net, _ = build_ours()  # seed 0: the same weights as the "ours" process
        copy_ours_to_hf(ours_net, net)
        del ours_net
    params = sum(p.numel() for p in net.parameters())
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (1, 3, height, width), generator=g, dtype=torch.uint8)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    pixel_values = (img.float() - mean) / std
    # our net zero-pads the normalised image to /32; give transformers the same tensor
    pad_h, pad_w = -height % 32, -width % 32
    pixel_values = torch.nn.functional.pad(pixel_values, (0, pad_w, 0, pad_h))
    # fp32 outputs of the "ours" process, read by the "hf" process (same parent: run_isolated)
    ref_path = Path(tempfile.gettempdir()) / f"cropformer_row2_{os.getppid()}_{height}x{width}.pt"
    if impl == "ours":
        ref_path.unlink(missing_ok=True)
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
            return n_terms

    def run_one() -> Any:
        if mode == "infer":
            with ctx():
                return step()
        return step()  # the training step enters ctx() around the forward only

    for precision in ("fp32", "bf16"):
        state["precision"] = precision
        if impl == "ours":
            # equal numerics: transformers runs its pixel decoder under autocast, so ours does
            # too in the bf16 case (force_fp32=False; the official default keeps it in fp32)
            net.pixel_decoder.force_fp32 = precision == "fp32"
        t = timeit(run_one, warmup=1, repeats=repeats)
        # best of the repeats: the least disturbed run of a shared machine, same rule both sides
        out[f"{precision}_s"] = t["min"]
        out[f"{precision}_result"] = str(t["result"])
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
                    d_cls = (o.class_queries_logits - ref["logits"]).abs().max()
                    d_mask = (o.masks_queries_logits - ref["masks"]).abs().max()
                    out["max_diff_logits"] = float(d_cls)
                    out["max_diff_masks"] = float(d_mask)
                    out["max_abs_masks"] = float(ref["masks"].abs().max())
    return out


def run(quick: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    """Rows: inference at 512x512 and 800x1344, training step at 512x512; fp32 and bf16."""
    rows = []
    cases = [("infer", 512, 512), ("infer", 800, 1344), ("train", 512, 512)]
    for mode, H, W in cases:
        reps = 1 if quick else (2 if (mode == "train" or H > 512) else 3)
        res = {
            impl: run_isolated(
                "row2_network",
                "measure",
                {"impl": impl, "mode": mode, "height": H, "width": W, "repeats": reps},
            )
            for impl in ("ours", "hf")
        }
        what = "inference (forward)" if mode == "infer" else "training step (fwd+loss+bwd+AdamW)"
        for precision in ("fp32", "bf16"):
            o, r = res["ours"], res["hf"]
            if "error" in o or "error" in r:
                rows.append(
                    failed_row(
                        "2",
                        f"M2F {what} {W}x{H} {precision}",
                        str(o.get("error") or r.get("error"))[:400],
                        target=">= 1.2x",
                        met=False,
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
                check += (
                    f"; mask logits shape {o[f'{precision}_result']} "
                    f"{'equal' if same_shape else 'vs ' + r[f'{precision}_result']}"
                )
                if "max_diff_logits" in r:
                    check += (
                        f"; outputs equal (same weights converted ours -> transformers, fp32, "
                        f"eval): max |diff| logits {r['max_diff_logits']:.1e}, masks "
                        f"{r['max_diff_masks']:.1e} (max |mask logit| {r['max_abs_masks']:.1f})"
                    )
                else:
                    check += "; outputs NOT compared (the ours process left no fp32 outputs)"
            else:
                check += (
                    f"; same initial weights (converted ours -> transformers); {NUM_TARGETS} "
                    "targets, 12544 points, 10 supervised predictions both"
                )
            rows.append(
                make_row(
                    "2",
                    f"Mask2Former Swin-T {what}, {W}x{H}, {precision}",
                    reference=(
                        f"transformers {fmt_s(r[f'{precision}_s'])}, peak "
                        f"{fmt_gb(r['peak_rss_gb'])}"
                    ),
                    ours=f"{fmt_s(o[f'{precision}_s'])}, peak {fmt_gb(o['peak_rss_gb'])}",
                    ratio=ratio,
                    target=">= 1.2x faster",
                    met=bool(ratio >= 1.2),
                    inputs=f"1 image {W}x{H}, Q=100, 9 layers, random weights",
                    check=check,
                    note=(
                        "Peak RSS is per process (fp32 and bf16 cases together). Our weights are "
                        "copied into the transformers model (scripts/benchmarks/hf_weights.py) "
                        "before timing; inference outputs are compared in fp32 after timing "
                        "(differences ~1e-4 on mask logits are fp32 rounding amplified by the "
                        "random-weight decoder: ours alone moves 3e-4 when its decoder inputs "
                        "move 3e-6; in float64 the two agree to 1e-8). "
                        "Training-step losses are not compared: both sample the 12544 loss "
                        "points at random (importance sampling), from different random streams."
                        " transformers' unused final Swin LayerNorm (1536 parameters) is counted "
                        "in its parameters. bf16 = autocast on both sides with both pixel "
                        "decoders under it (ours: `pixel_decoder.force_fp32=false`; the official "
                        "default keeps it in fp32)."
                    ),
                    ours_s=o[f"{precision}_s"],
                    reference_s=r[f"{precision}_s"],
                    ours_peak_gb=o["peak_rss_gb"],
                    reference_peak_gb=r["peak_rss_gb"],
                )
            )
    return rows
