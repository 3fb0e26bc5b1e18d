"""The first hour of a new user: one-line config errors, a clean console, run folders that say
what happened (issue 17 cases 2, 3, 7, 8, 9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _integration_helpers import TINY_RUN, run_script


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


CONFIG_ERRORS = [
    (["data.crop.ratoi=0.5"], "did you mean `data.crop.ratio`?"),
    (["+data.crop.ratoi=0.5"], "did you mean `data.crop.ratio`?"),
    (["data.crop.mode=fixd"], "data.crop.mode='fixd'"),
    (["data.crop.ratio=abc"], "data.crop.ratio='abc'"),
]
if not torch.cuda.is_available():
    CONFIG_ERRORS.append((["trainer=gpu"], "no GPU visible"))


@pytest.mark.parametrize(("overrides", "expected"), CONFIG_ERRORS, ids=lambda x: str(x))
def test_config_mistakes_are_one_line_before_any_folder_or_data(tmp_path, overrides, expected):
    result = run_script(
        "train.py", *overrides, f"paths.log_dir={tmp_path}/logs", f"paths.data_dir={tmp_path}/d"
    )
    assert result.returncode == 2
    assert expected in _one_error_line(result.stderr)
    assert not (tmp_path / "logs").exists() and not (tmp_path / "d").exists()


def test_error_found_during_the_run_is_recorded_in_its_folder(tmp_path):
    result = run_script(
        "train.py",
        "data=coco_json",
        f"data.image_root={tmp_path}",
        f"paths.log_dir={tmp_path}/logs",
    )
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "data.train_annotations is not set" in line
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert (run_dir / "error.txt").read_text().strip() == line
    assert line in (run_dir / "train.log").read_text()


def test_console_and_log_file_of_a_short_run(tmp_path):
    result = run_script(
        "train.py",
        *TINY_RUN,
        "trainer.val_check_interval=100",  # above max_steps=4: validated at the end anyway
        "callbacks.progress.log_every_n_steps=2",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={tmp_path}/data",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # each Lightning line once, no advertisement, no checkpoint-internals chatter
    assert out.count("Trainer.fit` stopped") == 1 and "INFO: " not in result.stderr
    assert "litlogger" not in out + result.stderr and "weights_only" not in out
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    log = (run_dir / "train.log").read_text()
    assert "step 4/4 | loss " in log and " it/s | " in log and "weights_only" not in log
    assert "validation at step 4: val/entity_ap " in log
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert Path(metrics["best_checkpoint"]).is_absolute()
    assert Path(metrics["best_checkpoint"]).name == "best_step000004.ckpt"
    assert Path(metrics["run_dir"]).is_absolute()
    # the console shows AP rounded; the file keeps full precision
    assert f"AP^e (val)    : {metrics['entity_ap']:.2f}" in out
