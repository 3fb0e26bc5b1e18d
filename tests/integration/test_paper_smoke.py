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
        "--results",
        str(results),
        "--logs",
        str(tmp_path / "logs"),
        "--extra",
        *TINY_RUN,
        f"paths.log_dir={tmp_path}/hydra_logs",
        f"paths.data_dir={tmp_path}/data",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for table in ("table5", "table8b", "table9a", "table9b", "lh"):
        assert (results / f"{table}.md").is_file(), table
    runs = sorted(p.stem for p in (results / "runs").glob("*.json"))
    assert len(runs) == 2 + 4 + 3 + 1 + 2
    rec = json.loads((results / "runs" / "t8b_I-O_s1.json").read_text())
    assert "fusion.decoder=I-O" in rec["command"] and rec["metrics"]["entity_ap"] >= 0
    low = json.loads((results / "runs" / "lh_mask2former_L_s1.json").read_text())
    assert "data/crop=none" in low["command"] and "_L128" in low["command"]
    # a second call finds every job done: nothing runs, the tables are rewritten
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "[paper] t5_" not in again.stdout
