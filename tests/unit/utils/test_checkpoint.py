"""``ckpt=last`` resolution and the stored W&B run id."""

from __future__ import annotations

import os
import time

import pytest

from cropformer.utils.checkpoint import (
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
