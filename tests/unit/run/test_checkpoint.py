"""``ckpt=last`` resolution and the stored W&B run id."""

from __future__ import annotations

import os
import time

import pytest

from cropformer.run.checkpoint import (
    config_differences,
    describe_checkpoint,
    find_last_checkpoint,
    read_wandb_id,
    resolve_checkpoint,
    run_dir_of,
    write_wandb_id,
)
from cropformer.utils.errors import UserError


def _ckpt(root, rel, mtime):
    path = root / rel / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_last_picks_newest_run_or_sweep_job(tmp_path):
    now = time.time()
    _ckpt(tmp_path, "train/runs/a", now - 30)
    newest = _ckpt(tmp_path, "train/multiruns/m/1", now - 10)
    _ckpt(tmp_path, "other/runs/b", now)
    assert find_last_checkpoint(tmp_path, "train") == newest


def test_last_excludes_the_current_run(tmp_path):
    now = time.time()
    older = _ckpt(tmp_path, "train/runs/a", now - 30)
    current = _ckpt(tmp_path, "train/runs/b", now)
    assert find_last_checkpoint(tmp_path, "train", exclude=run_dir_of(current)) == older


def test_no_checkpoint_is_a_readable_error(tmp_path):
    with pytest.raises(UserError, match="no last.ckpt found"):
        resolve_checkpoint("last", log_dir=tmp_path, task_name="train")
    with pytest.raises(UserError, match="file not found"):
        resolve_checkpoint(str(tmp_path / "x.ckpt"), log_dir=tmp_path, task_name="train")
    assert resolve_checkpoint(None, log_dir=tmp_path, task_name="train") is None


def test_wandb_id_roundtrip(tmp_path):
    assert read_wandb_id(tmp_path) is None
    write_wandb_id(tmp_path, "abc123")
    assert read_wandb_id(tmp_path) == "abc123"


def test_best_picks_the_best_checkpoint_of_the_newest_run(tmp_path):
    now = time.time()
    _ckpt(tmp_path, "train/runs/a", now - 30)
    best = tmp_path / "train/runs/a/checkpoints/best_step000004.ckpt"
    best.write_bytes(b"x")
    _ckpt(tmp_path, "train/runs/b", now)  # newest run, but no best checkpoint
    assert resolve_checkpoint("best", log_dir=tmp_path, task_name="train") == best.resolve()
    with pytest.raises(UserError, match="no best"):
        resolve_checkpoint("best", log_dir=tmp_path, task_name="other")


def test_describe_names_file_step_and_the_runs_model_and_data(tmp_path):
    import json

    import torch

    run = tmp_path / "train/runs/2026-01-01_00-00-00_000001"
    path = run / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"global_step": 900, "state_dict": {}}, path)
    choices = {"model": "cropformer_tiny", "data": "coco_json", "trainer": "default"}
    (run / "run_info.json").write_text(json.dumps({"choices": choices}))
    line = describe_checkpoint(path, "last")
    assert line == (
        f"ckpt=last -> {path.resolve()} (step 900; run 2026-01-01_00-00-00_000001: "
        "model=cropformer_tiny data=coco_json)"
    )


def test_config_differences_lists_model_and_data_keys_but_not_loader_settings(tmp_path):
    from omegaconf import OmegaConf

    stored = {"model": {"net": {"q": 30}}, "data": {"image_root": "a", "num_workers": 4}}
    OmegaConf.save(OmegaConf.create(stored), tmp_path / "config.yaml")
    same = {"model": {"net": {"q": 30}}, "data": {"image_root": "a", "num_workers": 0}}
    assert config_differences(tmp_path, same) == []
    other = {"model": {"net": {"q": 30}}, "data": {"image_root": None, "num_workers": 4}}
    assert config_differences(tmp_path, other) == ["data.image_root: 'a' -> None"]
    assert config_differences(tmp_path / "none", other) is None
