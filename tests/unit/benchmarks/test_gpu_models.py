"""The GPU benchmark's measurement runs its real code path on CPU with tiny models.

No GPU is lent to CI; this keeps `run_all.py --device cuda` from failing on a code error the
first time someone runs it on real hardware.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "scripts" / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_models  # noqa: E402


@pytest.mark.parametrize(
    ("name", "mode"),
    [("cropformer_tiny", "train"), ("cropformer_tiny", "infer"), ("mask2former_tiny", "train")],
)
def test_measure_runs_on_cpu(name: str, mode: str) -> None:
    out = gpu_models.measure(name, mode, repeats=1, device="cpu", size=(64, 96), warmup=0)
    assert out["images_per_s"] > 0
    assert out["peak_gb"] is None  # CUDA memory only on CUDA
    assert out["gpu"] == "cpu"
