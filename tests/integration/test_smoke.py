"""`make smoke` (`python train.py debug=smoke`): the quick check a newcomer or a CI job runs."""

from __future__ import annotations

import json
from pathlib import Path

from _integration_helpers import REPO, run_script


def test_smoke_run_trains_two_steps_evaluates_four_scenes_and_says_it_is_a_smoke_run(tmp_path):
    proc = run_script(
        "train.py",
        "debug=smoke",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={tmp_path}/data",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["smoke"] is True and last["steps"] == 2
    assert "smoke run: 2 steps" in proc.stdout and "not a result" in proc.stdout
    run = Path(last["run_dir"])
    assert run.parent.parent.name == "smoke"  # logs/smoke/runs/<time>: apart from real runs
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_entity_num_images"] == 4 and metrics["smoke"] is True
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_make_smoke_is_this_command():
    makefile = (REPO / "Makefile").read_text()
    assert "smoke: setup" in makefile and "train.py debug=smoke" in makefile
