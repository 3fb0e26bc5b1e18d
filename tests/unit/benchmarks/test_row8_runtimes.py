"""Row 8 (exported runtimes): verdicts and wording from given measurements."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "scripts" / "benchmarks"
sys.path.insert(0, str(BENCH))

import row8_runtimes  # noqa: E402


def _check(raw: float, pixels: float) -> dict:
    return {
        "raw_relative_error": raw,
        "pixel_agreement": pixels,
        "passed": raw <= 1e-3 and pixels >= 0.999,
    }


def _result(ort_s: float, ov_s: float, int8_s: float, e2e_best: float) -> dict:
    return {
        "views": 5,
        "padded": [800, 1216],
        "gflop": 2700.0,
        "export_s": 100.0,
        "eager fp32": {"median_s": 45.0},
        "onnxruntime fp32": {"median_s": ort_s, "session_build_s": 5.0, "check": _check(1e-6, 1.0)},
        "openvino fp32": {"median_s": ov_s, "session_build_s": 3.0, "check": _check(2e-3, 1.0)},
        "openvino int8": {"median_s": int8_s, "session_build_s": 3.0, "check": _check(0.3, 0.9)},
        "best_fp32": "onnxruntime fp32" if ort_s < ov_s else "openvino fp32",
        "e2e eager fp32": {"median_s": 70.0},
        "e2e onnxruntime fp32": {"median_s": e2e_best},
        "e2e openvino fp32": {"median_s": e2e_best},
        "profile": {"Conv": 10.0, "MatMul": 20.0, "total": 40.0},
    }


def test_best_runtime_peak_and_end_to_end_targets() -> None:
    # 2700 GFLOP in 20 s = 135 GFLOP/s = 100 % of a 135 GFLOP/s peak
    rows = row8_runtimes._rows("CropFormer Swin-T", _result(20.0, 30.0, 10.0, 40.0), 135.0, "x")
    by_key = {r["what"].split(", ")[-1]: r for r in rows}
    best = by_key["onnxruntime fp32"]
    assert best["meets_target"] is True and best["met"] is True
    assert best["peak_share"] == 1.0
    assert by_key["openvino fp32"]["meets_target"] is None  # not the best: report only
    assert by_key["openvino fp32"]["check_passed"] is False  # 2e-3 > 1e-3
    int8 = by_key["openvino int8"]
    assert int8["meets_target"] is True  # 20 / 10 = 2.0x >= 1.8x
    assert int8["check_passed"] is None  # int8 is reported, not held to the fp32 bound
    e2e = next(r for r in rows if "end to end" in r["what"])
    assert e2e["ratio"] == 1.75 and e2e["meets_target"] is True
    profile = next(r for r in rows if "profile" in r["what"])
    assert "MatMul 50%" in profile["ours"]


def test_missed_targets_are_reported_as_missed() -> None:
    rows = row8_runtimes._rows("CropFormer Swin-T", _result(40.0, 50.0, 30.0, 60.0), 135.0, "x")
    best = next(r for r in rows if r["what"].endswith("onnxruntime fp32"))
    assert best["meets_target"] is False  # 67.5 GFLOP/s = 50 % of the peak
    int8 = next(r for r in rows if r["what"].endswith("int8"))
    assert int8["meets_target"] is False
    e2e = next(r for r in rows if "end to end" in r["what"])
    assert e2e["meets_target"] is False


def test_quick_case_has_no_end_to_end_target() -> None:
    rows = row8_runtimes._rows("CropFormer tiny (quick)", _result(1.0, 2.0, 1.0, 1.0), 100.0, "x")
    e2e = next(r for r in rows if "end to end" in r["what"])
    assert e2e["meets_target"] is None
