"""``ckpt=last`` resolution and the stored W&B run id."""

from __future__ import annotations

import os
import time

import pytest

from cropformer.run.checkpoint import (
    config_differences,
    describe_checkpoint,
    find_checkpoint,
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
    assert find_checkpoint(tmp_path, "last", "train")[0].path == newest


def test_last_excludes_the_current_run(tmp_path):
    now = time.time()
    older = _ckpt(tmp_path, "train/runs/a", now - 30)
    current = _ckpt(tmp_path, "train/runs/b", now)
    assert find_checkpoint(tmp_path, "last", "train", exclude=run_dir_of(current))[0].path == older


def test_no_checkpoint_is_a_readable_error(tmp_path):
    with pytest.raises(UserError, match="no last.ckpt found"):
        resolve_checkpoint("last", log_dir=tmp_path, task_name="train")
    with pytest.raises(UserError, match="file not found"):
        resolve_checkpoint(str(tmp_path / "x.ckpt"), log_dir=tmp_path, task_name="train")
    assert resolve_checkpoint(None, log_dir=tmp_path, task_name="train") is None


def _main_job(root, stamp, mtime, best=True):
    paths = {}
    for model in ("cropformer", "mask2former"):
        last = _ckpt(root, f"main_job/runs/{stamp}/{model}", mtime)
        paths[model] = last
        if best:
            paths[model] = last.with_name("best_step000200.ckpt")
            paths[model].write_bytes(b"x")
            os.utime(paths[model], (mtime, mtime))
    return paths


def test_best_after_make_train_refuses_the_ambiguous_run_and_lists_both(tmp_path):
    job = _main_job(tmp_path, "2026-01-01_00-00-00_000001", time.time())
    for task in (None, "main_job"):
        with pytest.raises(UserError) as err:
            resolve_checkpoint("best", log_dir=tmp_path, task_name=task)
        line = str(err.value)
        assert "\n" not in line
        assert str(job["cropformer"]) in line and str(job["mask2former"]) in line
        assert "train_task=main_job/cropformer or train_task=main_job/mask2former" in line
    for model in ("cropformer", "mask2former"):
        taken, _ = find_checkpoint(tmp_path, "best", f"main_job/{model}")
        assert taken.path == job[model] and taken.label == f"main_job/{model}"


def test_a_later_train_run_is_taken_and_named_but_train_task_selects_the_main_job(tmp_path):
    now = time.time()
    job = _main_job(tmp_path, "2026-01-01_00-00-00_000001", now - 60)
    newer = _ckpt(tmp_path, "train/runs/b", now)
    taken, matched = find_checkpoint(tmp_path, "last")
    assert taken.path == newer and taken.label == "train" and len(matched) == 3
    last = find_checkpoint(tmp_path, "last", "main_job/mask2former")[0].path
    assert last == job["mask2former"].with_name("last.ckpt")


@pytest.mark.parametrize(
    ("task", "command"),
    [
        (None, "make train, or python train.py"),
        ("main_job", "make train"),
        ("main_job/cropformer", "make train"),
        ("embedded_pretrain", "python train.py experiment=embedded_pretrain"),
        ("mytask", "python train.py task_name=mytask"),
    ],
)
def test_the_hint_names_a_command_that_exists(tmp_path, task, command):
    if task is not None:  # another training has one: the line says so
        _ckpt(tmp_path, "other/runs/a", time.time()).with_name("best_step000004.ckpt").touch()
    with pytest.raises(UserError) as err:
        find_checkpoint(tmp_path, "best", task)
    assert f"train first ({command})" in str(err.value)
    assert ("runs of other have one" in str(err.value)) == (task is not None)


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
