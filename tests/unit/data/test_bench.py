"""scripts/bench_data.py on a small image: same masks as the official steps, figures reported."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "bench_data.py"


def test_bench_run_small(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_data"] = mod
    spec.loader.exec_module(mod)
    res = mod.run(
        width=400, height=300, entities=12, short_side=128, iters=2, workdir=str(tmp_path)
    )
    assert res["min_iou"] == 1.0
    assert res["ours_samples_per_s"] > 0 and res["official_samples_per_s"] > 0
    assert res["speedup"] > 0
