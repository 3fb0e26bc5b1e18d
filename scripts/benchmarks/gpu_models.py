"""GPU mode (``run_all.py --device cuda``): absolute images/s and peak GPU memory.

Mask2Former (1 view) vs CropFormer (5 views at test, 2 in training) with R50, Swin-T and Swin-L,
bf16 autocast, random weights. Inference: one image at the official test size (views 800x1216).
Training step (forward + losses + backward + AdamW): Mask2Former one 1024x1024 view (LSJ size),
CropFormer 2 views of 800x1088. Each model runs in its own process (peak memory not mixed).
"""

from __future__ import annotations

from typing import Any

from common import failed_row, make_row, run_isolated, timeit

MODELS = ("r50", "swint", "swinl")


def measure(
    name: str,
    mode: str,
    repeats: int = 5,
    device: str = "cuda",
    size: tuple[int, int] | None = None,
    warmup: int = 2,
) -> dict[str, Any]:
    """Child: images/s and peak CUDA memory of one model in one mode.

    ``device="cpu"`` and a small ``size`` exercise the same code without a GPU (tests).
    """
    import torch
    from row2_network import build_ours

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    net, criterion = build_ours(name)
    net.to(dev)
    cf = name.startswith("cropformer")
    if mode == "infer":
        T, (h, w) = (5 if cf else 1), (800, 1216)
    else:
        T, (h, w) = (2, (800, 1088)) if cf else (1, (1024, 1024))
    if size is not None:
        h, w = size
    x = torch.randint(0, 256, (T, 3, h, w), dtype=torch.uint8, device=dev)
    K = 40
    cols = torch.arange(w, device=dev) * K // w
    m = cols[None, None, None, :] == torch.arange(K, device=dev)[:, None, None, None]
    targets = [
        {
            "masks": m.expand(K, T, h, w).clone(),
            "valid": torch.ones(K, T, dtype=torch.bool, device=dev),
        }
    ]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            if mode == "infer":
                with torch.no_grad():
                    # as the predictor runs it: no intermediate predictions kept
                    net(x, num_views=T, aux=False)
            else:
                opt.zero_grad(set_to_none=True)
                loss = criterion.total(criterion(net(x, num_views=T), targets))
        if mode != "infer":
            loss.backward()
            opt.step()
        if cuda:
            torch.cuda.synchronize()

    net.train(mode != "infer")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = timeit(step, warmup=warmup, repeats=repeats)
    return {
        "images_per_s": 1.0 / t["median"],
        "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
        "gpu": torch.cuda.get_device_name() if cuda else str(dev),
    }


def run(quick: bool = False, device: str = "cuda") -> list[dict[str, Any]]:
    """One row per backbone and mode: Mask2Former vs CropFormer."""
    rows = []
    for bb in MODELS:
        for mode in ("infer", "train"):
            m2f = run_isolated(
                "gpu_models",
                "measure",
                {"name": f"mask2former_{bb}", "mode": mode, "repeats": 3 if quick else 10},
            )
            cf = run_isolated(
                "gpu_models",
                "measure",
                {"name": f"cropformer_{bb}", "mode": mode, "repeats": 3 if quick else 10},
            )
            if "error" in m2f or "error" in cf:
                rows.append(
                    failed_row(
                        "gpu",
                        f"{bb} {mode}",
                        str(m2f.get("error") or cf.get("error"))[:300],
                        target="report",
                        met=None,
                        inputs="-",
                        device="cuda",
                    )
                )
                continue
            rows.append(
                make_row(
                    "gpu",
                    f"{bb} {'inference' if mode == 'infer' else 'training step'}, bf16",
                    reference=(
                        f"Mask2Former {m2f['images_per_s']:.2f} img/s, {m2f['peak_gb']:.2f} GB"
                    ),
                    ours=f"CropFormer {cf['images_per_s']:.2f} img/s, {cf['peak_gb']:.2f} GB",
                    ratio=m2f["images_per_s"] / cf["images_per_s"],
                    target="report (paper Table 7: 2.36x time, 1.97x train memory)",
                    met=None,
                    inputs=(
                        "1 image, views 800x1216 (CropFormer 5)"
                        if mode == "infer"
                        else "Mask2Former 1024x1024, CropFormer 2 x 800x1088, 40 targets"
                    ),
                    device=cf["gpu"],
                    check="same inputs for both models",
                    note="Ratio = CropFormer time / Mask2Former time per image.",
                )
            )
    return rows
