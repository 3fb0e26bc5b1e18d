"""Row 8: exported runtimes (ONNX Runtime, OpenVINO; fp32, bf16, int8) vs eager PyTorch, in one run.

Targets (issue 23), all measured in this run on this machine's threads:

- the in-run peak: best of several 2048x2048 fp32 matmuls;
- per runtime and precision: network FLOPs (``torch.utils.flop_counter`` on the eager forward of
  the same views), time, GFLOP/s and % of the peak; the best fp32 runtime should reach >= 70 %;
- end to end (views + network + fusion): CropFormer Swin-T on a 1200x1800 photo (>= 1.6x vs eager
  fp32) and Mask2Former-HorNet-L on a 1296x968 frame;
- int8 >= 1.8x vs the best fp32 runtime (AP^e drop <= 0.5 on the embedded test split: measured
  with ``eval.py runtime=... precision=int8`` when ``make train``'s CropFormer is present);
- ``predict.py`` throughput (images/s, peak memory) of the embedded tiny model and of Swin-T;
- each row's check against eager fp32 (raw outputs within 1e-3 x max |value|, fused entities on
  >= 99.9 % of the pixels; int8 is reported, not held to that bound);
- a profile of the best runtime (time per op type) that says where the time goes.

Weights: random at the official shapes (seeded) for Swin-T / HorNet-L, which is what the speed
depends on; the agreement on real photos with a trained model is the export tests' and row 7's.
``--quick`` runs the tiny CropFormer / Mask2Former at reduced views (a correctness pass of the
row on a busy machine, not a measurement of the targets).
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, SHARED, fmt_s, make_row, run_isolated

PEAK_TARGET = 0.70
E2E_TARGET = 1.6
INT8_TARGET = 1.8
PHOTO = SHARED / "data" / "coco-panoptic-sample" / "sample_data" / "input_images"
#: name -> (model config, photo (H, W), test views (short side, max size))
CASES = {
    "CropFormer Swin-T": ("cropformer_swint", (1200, 1800), (800, 1333)),
    "Mask2Former-HorNet-L": ("mask2former_hornetl", (968, 1296), (800, 1333)),
}
QUICK_CASES = {
    "CropFormer tiny": ("cropformer_tiny", (300, 450), (192, 320)),
    "Mask2Former tiny": ("mask2former_tiny", (242, 324), (192, 320)),
}


def matmul_peak(size: int = 2048, repeats: int = 8) -> dict[str, Any]:
    """Child: best of ``repeats`` ``size``-square fp32 matmuls, GFLOP/s (2 n^3 FLOPs)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats + 1):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return {"gflops": 2 * size**3 / best / 1e9, "size": size, "repeats": repeats}


def _photo(hw: tuple[int, int]) -> Any:
    """A shared real photo resized to (H, W), or the synthetic test picture."""
    import numpy as np
    from PIL import Image

    from cropformer.export.verify import synthetic_photo

    files = sorted(PHOTO.glob("*.jpg")) if PHOTO.is_dir() else []
    if not files:
        return synthetic_photo(*hw)
    image = Image.open(files[0]).convert("RGB").resize((hw[1], hw[0]), Image.BILINEAR)
    return np.asarray(image)


def measure(
    model: str, photo_hw: list[int], views: list[int], repeats: int, calibration: str | None
) -> dict[str, Any]:
    """Child: FLOPs, network time per runtime/precision, agreement, end to end, profile."""
    import torch
    from hydra.utils import instantiate
    from torch.utils.flop_counter import FlopCounterMode

    from cropformer.api import OFFICIAL_TEST_SETTINGS, test_settings
    from cropformer.api.runtimes import num_views_of
    from cropformer.data.collate import collate
    from cropformer.data.views import InferenceViews
    from cropformer.export.files import _write_openvino, export_network, read_metadata
    from cropformer.export.int8 import calibration_feeds, quantize_onnx, quantize_openvino
    from cropformer.export.session import ExportedNetwork
    from cropformer.export.verify import compare
    from cropformer.inference.predictor import EntityPredictor, EvalViews
    from cropformer.run.config import compose_config
    from cropformer.utils.hardware import cpu_reduced_precision_units

    cfg = compose_config([f"model={model}"]).model
    torch.manual_seed(0)
    # inference only; and FlopCounterMode's module tracker fails on the no_grad views of
    # parameters that require grad (the decoder's expanded query embeddings)
    net = instantiate(cfg.net).eval().requires_grad_(False)
    fusion = instantiate(cfg.fusion)
    crops = 4 if net.association is not None else 0
    settings = test_settings(
        OFFICIAL_TEST_SETTINGS, short_side=views[0], max_size=views[1], num_crops=crops
    )
    photo = _photo((photo_hw[0], photo_hw[1]))
    batch = collate([EvalViews(InferenceViews(**settings))(photo, 0)])
    t = num_views_of(settings)
    args = {"num_views": t, "view_sizes": batch["view_sizes"]}
    out: dict[str, Any] = {"views": t, "padded": list(batch["images"].shape[-2:])}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(batch["images"], aux=False, **args)
    out["gflop"] = counter.get_total_flops() / 1e9

    def timed(fn: Any) -> dict[str, Any]:
        fn()  # warm-up (session caches, first-call allocations)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return {"median_s": sorted(times)[len(times) // 2], "times": times}

    with torch.no_grad():
        out["eager fp32"] = timed(lambda: net(batch["images"], aux=False, view_chunk=None, **args))
    work = Path(tempfile.mkdtemp(prefix="row8_"))
    meta = {"model": model, "checkpoint": "random", "step": 0, "test_settings": settings}
    meta |= {"fusion": dict(cfg.fusion), "num_views": t}
    t0 = time.perf_counter()
    onnx_path = export_network(net, work / "net.onnx", num_views=t, metadata=meta)
    out["export_s"] = time.perf_counter() - t0
    xml = work / "net.xml"
    _write_openvino(onnx_path, xml, read_metadata(onnx_path))
    files = {"onnxruntime": onnx_path, "openvino": xml}
    variants = [("onnxruntime", "fp32"), ("openvino", "fp32")]
    if cpu_reduced_precision_units("bf16"):
        variants.append(("openvino", "bf16"))
    if calibration:
        feeds = calibration_feeds(calibration, settings, count=4)
        quantize_onnx(onnx_path, work / "int8.onnx", feeds)
        quantize_openvino(xml, work / "int8.xml", feeds)
        variants += [("onnxruntime", "int8"), ("openvino", "int8")]
    for runtime, precision in variants:
        key = f"{runtime} {precision}"
        try:
            t0 = time.perf_counter()
            path = work / f"int8{files[runtime].suffix}" if precision == "int8" else files[runtime]
            session = ExportedNetwork(
                path, runtime, precision="bf16" if precision == "bf16" else "fp32"
            )
            build_s = time.perf_counter() - t0
            res = timed(lambda s=session: s(batch["images"], **args))
            res["session_build_s"] = build_s
            res["check"] = compare(net, session, fusion, settings, [photo])
            out[key] = res
        except Exception as err:  # noqa: BLE001 - keep the other runtimes
            out[key] = {"error": f"{type(err).__name__}: {err}"[:300]}
    fp32 = [k for k in out if k.endswith("fp32") and "median_s" in out[k] and k != "eager fp32"]
    best = min(fp32, key=lambda k: out[k]["median_s"]) if fp32 else None
    out["best_fp32"] = best
    # end to end: views + network + fusion, eager vs the best fp32 runtime
    eager = EntityPredictor(net, fusion, **settings, view_chunk=None)
    out["e2e eager fp32"] = timed(lambda: eager.predict(photo))
    if best is not None:
        runtime = best.split()[0]
        session = ExportedNetwork(files[runtime], runtime)
        runner = EntityPredictor(session, fusion, precision="32", pixel_decoder=None, **settings)
        out[f"e2e {best}"] = timed(lambda: runner.predict(photo))
        out["profile"] = profile(files[runtime], runtime, batch, args)
    return out


def profile(path: Path, runtime: str, batch: Any, args: dict[str, Any]) -> dict[str, float]:
    """Seconds per op type of one run of the file (ORT's profiler / OpenVINO's counters)."""
    import numpy as np

    feeds = {
        "images": batch["images"].float().numpy(),
        "view_sizes": args["view_sizes"].long().numpy(),
    }
    totals: dict[str, float] = {}
    if runtime == "onnxruntime":
        import json

        import onnxruntime as ort

        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_name("ort_profile"))
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, feeds)
        trace = json.loads(Path(session.end_profiling()).read_text())
        for event in trace:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                op = event.get("args", {}).get("op_name", "?")
                totals[op] = totals.get(op, 0.0) + event["dur"] / 1e6
    else:
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True}
        request = core.compile_model(str(path), "CPU", config).create_infer_request()
        request.infer(feeds)
        for info in request.profiling_info:
            totals[info.node_type] = totals.get(info.node_type, 0.0) + (
                info.real_time.total_seconds()
            )
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:8]
    return {k: round(v, 4) for k, v in top} | {
        "total": round(float(np.sum(list(totals.values()))), 4)
    }


def _calibration() -> str | None:
    root = Path(os.environ.get("DATA_ROOT", REPO / "data")) / "synthetic"
    found = sorted(glob.glob(str(root / "*" / "train" / "*.jpg")))
    return str(Path(found[0]).parent / "*.jpg") if found else None


def run(quick: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    """Row 8 on this machine's CPU (``device`` is ignored: the runtimes run on the CPU here)."""
    peak = run_isolated("row8_runtimes", "matmul_peak", {"repeats": 3 if quick else 8})
    peak_g = float(peak.get("gflops") or 0.0)
    rows = [
        make_row(
            "8",
            "in-run peak: best 2048x2048 fp32 matmul",
            reference="-",
            ours=f"{peak_g:.0f} GFLOP/s",
            ratio=None,
            target="report (denominator of % of peak)",
            inputs=f"{peak.get('repeats')} matmuls, 2 threads",
            in_run=True,
            statistic=f"best of {peak.get('repeats')}, 1 warm-up",
            check="-",
            note=str(peak.get("error", "")),
            peak_gflops=peak_g,
        )
    ]
    calibration = _calibration()
    label = " (quick: tiny model, reduced views; not the targets' case)" if quick else ""
    for name, (model, photo_hw, views) in (QUICK_CASES if quick else CASES).items():
        res = run_isolated(
            "row8_runtimes",
            "measure",
            {
                "model": model,
                "photo_hw": list(photo_hw),
                "views": list(views),
                "repeats": 1 if quick else 3,
                "calibration": calibration,
            },
            timeout_s=3600,
        )
        inputs = f"{photo_hw[0]}x{photo_hw[1]} photo, test views {views[0]}/{views[1]}"
        if "error" in res:
            rows.append(
                make_row(
                    "8",
                    f"{name}: runtimes{label}",
                    reference="-",
                    ours="-",
                    ratio=None,
                    target="-",
                    inputs=inputs,
                    check="failed",
                    note=str(res["error"])[:400],
                )
            )
            continue
        rows += _rows(name + label, res, peak_g, inputs)
    return rows


def _rows(name: str, res: dict[str, Any], peak: float, inputs: str) -> list[dict[str, Any]]:
    """The network rows (one per runtime/precision), the end-to-end row and the profile row."""
    rows = []
    gflop = float(res["gflop"])
    eager = res["eager fp32"]["median_s"]
    best = res.get("best_fp32")
    best_s = res[best]["median_s"] if best else None
    stat = "median of the timed runs, 1 warm-up"
    for key in ["eager fp32"] + [k for k in res if k.split()[0] in ("onnxruntime", "openvino")]:
        r = res[key]
        if "median_s" not in r:
            rows.append(
                make_row(
                    "8",
                    f"{name}: network, {key}",
                    reference=fmt_s(eager),
                    ours="-",
                    ratio=None,
                    target="-",
                    inputs=inputs,
                    check="failed",
                    note=str(r.get("error"))[:300],
                )
            )
            continue
        rate = gflop / r["median_s"]
        share = rate / peak if peak else None
        check = r.get("check")
        is_int8 = key.endswith("int8")
        passed = None if check is None or is_int8 else bool(check["passed"])
        if key == best:
            meets: bool | None = share is not None and share >= PEAK_TARGET
            target = f">= {PEAK_TARGET:.0%} of the in-run peak"
        elif is_int8 and best_s:
            meets = best_s / r["median_s"] >= INT8_TARGET
            target = f">= {INT8_TARGET}x the best fp32 runtime ({best})"
        else:
            meets, target = None, "report"
        agreement = (
            "-"
            if check is None
            else f"raw error {check['raw_relative_error']:.1e} x max, fused pixels "
            f"{check['pixel_agreement']:.4%}"
        )
        rows.append(
            make_row(
                "8",
                f"{name}: network ({res['views']} views {res['padded'][0]}x{res['padded'][1]}), "
                f"{key}",
                reference=f"eager fp32 {fmt_s(eager)}",
                ours=f"{fmt_s(r['median_s'])}, {rate:.1f} GFLOP/s"
                + (f", {share:.0%} of peak" if share is not None else ""),
                ratio=eager / r["median_s"],
                target=target,
                meets_target=meets,
                check_passed=passed,
                in_run=True,
                statistic=stat,
                inputs=f"{inputs}; {gflop:.1f} GFLOP (flop_counter, eager)",
                check=agreement,
                note=(
                    f"session build {r['session_build_s']:.1f} s; export {res['export_s']:.0f} s"
                    if "session_build_s" in r
                    else ""
                ),
                gflop=gflop,
                seconds=r["median_s"],
                gflops=rate,
                peak_share=share,
            )
        )
    if best and f"e2e {best}" in res:
        e2e_eager = res["e2e eager fp32"]["median_s"]
        e2e_best = res[f"e2e {best}"]["median_s"]
        swin = "Swin-T" in name and "quick" not in name
        rows.append(
            make_row(
                "8",
                f"{name}: end to end (views, network, fusion), {best} vs eager fp32",
                reference=fmt_s(e2e_eager),
                ours=fmt_s(e2e_best),
                ratio=e2e_eager / e2e_best,
                target=f">= {E2E_TARGET}x" if swin else "report",
                meets_target=(e2e_eager / e2e_best >= E2E_TARGET) if swin else None,
                in_run=True,
                statistic=stat,
                inputs=inputs,
                check="network rows above",
            )
        )
    if "profile" in res:
        prof = res["profile"]
        total = prof.pop("total", 0.0) or 1.0
        parts = ", ".join(f"{k} {v / total:.0%}" for k, v in prof.items())
        rows.append(
            make_row(
                "8",
                f"{name}: profile of {best} (share of op time)",
                reference="-",
                ours=parts,
                ratio=None,
                target="report",
                inputs=inputs,
                in_run=True,
                statistic="one profiled run",
                check="-",
            )
        )
    return rows
