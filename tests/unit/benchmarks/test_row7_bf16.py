"""Row 7 (bf16 vs fp32 on CPU): the row's verdict and wording from given measurements."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "scripts" / "benchmarks"
sys.path.insert(0, str(BENCH))

import row7_bf16  # noqa: E402
import run_all  # noqa: E402

PROF = {
    "machine": {"capability": "AVX2", "bf16_units": []},
    "ops": {"matmul 1024x1024": {"fp32": 0.1, "bf16": 4.5, "ratio": 45.0}},
}


def _pair(t32: float, t16: float, agree: float) -> dict:
    return {
        "fp32": {"time_s": t32, "parts": "fp32: all"},
        "bf16": {"time_s": t16, "parts": "bf16: backbone; fp32: fusion"},
        "agreement": {"fraction": agree, "pixels": 100, "entities": [3, 3, 3]},
        "views": (320, 533),
    }


def _photos(agree: float) -> dict:
    return {
        "fp32": {"times_s": [1.0, 1.0]},
        "bf16": {"times_s": [5.0, 5.0]},
        "per_image": [{"fraction": agree, "pixels": 10, "entities": [4, 4, 4]}] * 2,
        "fraction": agree,
    }


def _row(**kw):
    args = dict(
        full={"time_s": 30.0},
        direct={},
        small=_pair(3.0, 15.0, 0.995),
        estimate=150.0,
        photos=_photos(0.996),
        prof=PROF,
        label=row7_bf16._label(PROF["machine"]),
        native=False,
        ckpt="/x/cropformer/checkpoints/last.ckpt",
        row_s=100.0,
    )
    args.update(kw)
    return row7_bf16._main_row(**args)


def test_registered_in_run_all():
    assert run_all.ROWS["7"] == "row7_bf16" and run_all.select("7") == ["7"]


def test_emulated_bf16_estimate_is_labelled_never_met_and_names_what_holds_it_back():
    r = _row()
    assert r["met"] is False and r["bf16_estimated"] is True and r["ratio"] is None
    assert "CPU capability AVX2, bf16 units: none" in r["what"]
    assert "(estimate)" in r["ours"] and "fp32 30.00 s" in r["ours"]
    assert "no bf16 units" in r["note"] and "matmul 1024x1024" in r["note"]
    assert "99.60 %" in r["ours"] and r["agreement_real"] == 0.996
    assert r["in_run"] is True and r["statistic"]


def test_measured_fast_bf16_with_agreement_is_met_and_low_agreement_is_not():
    machine = {"capability": "AVX512", "bf16_units": ["AMX"]}
    fast = {"bf16": {"time_s": 12.0, "parts": "p"}, "agreement": {"fraction": 0.999}}
    kw = dict(direct=fast, small={}, estimate=None, native=True, label=row7_bf16._label(machine))
    r = _row(**kw)
    assert r["met"] is True and r["ratio"] == 2.5 and "bf16 units: AMX" in r["what"]
    assert _row(**kw, photos=_photos(0.98))["met"] is False
    assert _row(**kw, photos={}, ckpt=None)["met"] is False  # no real-photo check: not met
    assert "skipped (no trained checkpoint" in _row(**kw, photos={}, ckpt=None)["note"]
