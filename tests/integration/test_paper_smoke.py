"""``make paper`` end to end with tiny settings: every table's real jobs run, resume, render."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _integration_helpers import REPO, TINY_RUN


@pytest.mark.slow
def test_paper_runs_every_table_once_and_resumes(tmp_path: Path) -> None:
    results = tmp_path / "results"
    cmd = [
        sys.executable,
        "scripts/paper.py",
        "--seeds",
        "1",
        "--sweep-seeds",
        "1",
        "--results",
        str(results),
        "--logs",
        str(tmp_path / "logs"),
        "--extra",
        *TINY_RUN,
        f"paths.log_dir={tmp_path}/hydra_logs",
        f"paths.data_dir={tmp_path}/data",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for table in ("table5", "table8b", "table9a", "table9b", "lh", "table10b"):
        assert (results / f"{table}.md").is_file(), table
    runs = sorted(p.stem for p in (results / "runs").glob("*.json"))
    # table5: 2 models + 2 controls; 8b: 3 modes; lh: 2; 9a: 3 ratios; 9b: 1; 10b: 2; + size mix
    assert len(runs) == 4 + 3 + 2 + 3 + 1 + 2 + 1, runs
    t10b = json.loads((results / "runs" / "t10b_cropformer_s1.json").read_text())
    assert "task=panoptic" in t10b["command"] and "test_pq" in t10b["metrics"]
    io = json.loads((results / "runs" / "t8b_I-O_s1.json").read_text())
    assert "inference.fusion.decoder=I-O" in io["command"] and "split=test" in io["command"]
    b_oc = json.loads((results / "runs" / "t5_cropformer_s1.json").read_text())
    # the eval job reads the checkpoint the table5 job wrote, and evaluates the same split
    assert io["metrics"]["entity_num_images"] == b_oc["metrics"]["test_entity_num_images"] == 2
    assert io["provenance"]["commit"] == b_oc["provenance"]["commit"]
    tta = json.loads((results / "runs" / "t5_m2f_tta_s1.json").read_text())
    assert (
        "inference.fusion.decoder=I-OC-merge" in tta["command"]
        and "data/crop=fixed4" in tta["command"]
    )
    compute = json.loads((results / "runs" / "t5_m2f_compute_s1.json").read_text())
    assert "trainer.max_steps=400" in compute["command"]  # (the smoke's --extra steps win)
    low = json.loads((results / "runs" / "lh_mask2former_L_s1.json").read_text())
    assert "data/crop=none" in low["command"] and "_L128" in low["command"]
    sizes = json.loads((results / "runs" / "benchmark_sizes.json").read_text())
    assert (
        sizes["images"] == 2 and abs(sizes["small"] + sizes["medium"] + sizes["large"] - 100) < 1e-6
    )
    # no record holds the machine's paths
    for path in (results / "runs").glob("*.json"):
        assert str(tmp_path / "logs") not in path.read_text(), path.name
    # a second call finds every job done: nothing runs, the tables are rewritten
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "[paper] t5_" not in again.stdout
