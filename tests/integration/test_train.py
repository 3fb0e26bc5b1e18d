"""End-to-end training runs on CPU: artifacts, resume, kill/resume, DDP, sweeps, bad input."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _integration_helpers import REPO, TINY_RUN, run_script, tiny_cfg

from cropformer.cli.train import train
from cropformer.utils.errors import UserError


@pytest.fixture(scope="module")
def data_dir(tiny_run_data) -> Path:
    return tiny_run_data


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The session's short fit (conftest ``tiny_run``), shared with the other modules: a test
    that trains beside it works in a copy of its log folder (``_copy_logs``)."""
    return tiny_run


def _copy_logs(tmp: Path, dst: Path) -> Path:
    """A copy of the shared run's ``tmp/logs`` under ``dst``: ``ckpt=last`` there finds the copy,
    and the runs a test adds stay out of the shared folder."""
    shutil.copytree(tmp / "logs", dst / "logs")
    return dst


def test_short_fit_writes_checkpoints_metrics_and_overlays(trained):
    tmp, summary = trained
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert summary["best_checkpoint"] and Path(summary["best_checkpoint"]).is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert list((run_dir / "overlays").rglob("*.png"))
    csv = (run_dir / "csv" / "version_0" / "metrics.csv").read_text()
    assert "train/loss" in csv and "val/entity_ap" in csv
    # the summary's AP is the one validation logged at the last step (a match, not a range)
    import csv as csv_module

    rows = list(csv_module.DictReader(io.StringIO(csv)))
    logged = [float(r["val/entity_ap"]) for r in rows if r.get("val/entity_ap")]
    assert logged and metrics["entity_ap"] == pytest.approx(logged[-1], abs=1e-5)
    prov = metrics["provenance"]
    assert prov["commit"] and isinstance(prov["dirty"], bool) and prov["wall_minutes"] > 0
    assert prov["data"]["synthetic_key"] and prov["versions"]["torch"]
    import torch

    assert prov["hardware"]["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability())
    assert (run_dir / prov["config"]["file"]).is_file()
    resolved = (run_dir / prov["config"]["file"]).read_text()
    assert str(tmp) not in json.dumps(prov) and str(tmp) not in resolved  # no absolute path
    assert (run_dir / "config.yaml").is_file() and (run_dir / "run_info.json").is_file()


def test_load_from_checkpoint_outside_hydra_gives_identical_predictions(trained, data_dir):
    from hydra.utils import instantiate

    from cropformer.training.module import CropFormerModule

    tmp, summary = trained
    cfg = tiny_cfg(tmp, data_dir=data_dir)
    dm = instantiate(cfg.data, _recursive_=False)
    dm.prepare_data()
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    path = summary["last_checkpoint"]
    a = CropFormerModule.load_from_checkpoint(path, map_location="cpu").eval()
    b = CropFormerModule.load_from_checkpoint(path, map_location="cpu").eval()
    with torch.no_grad():
        pa, pb = a.predict_entities(batch), b.predict_entities(batch)
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    for x, y in zip(pa, pb):
        assert torch.equal(x["id_map"], y["id_map"])
        torch.testing.assert_close(x["scores"], y["scores"], rtol=0, atol=0)


def test_resume_last_continues_step_and_schedule(trained, data_dir, tmp_path):
    tmp, summary = trained
    first = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=False)
    assert first["global_step"] == 4
    work = _copy_logs(tmp, tmp_path)
    resumed = train(tiny_cfg(work, "ckpt=last", "trainer.max_steps=6", data_dir=data_dir))
    second = torch.load(resumed["last_checkpoint"], map_location="cpu", weights_only=False)
    assert resumed["steps"] == 6 and second["global_step"] == 6
    # poly schedule over the new max_steps: lr at step 6 of 6 is 0 (official WarmupPolyLR)
    sched = second["lr_schedulers"][0]
    assert sched["last_epoch"] == 6
    opt = second["optimizer_states"][0]
    assert opt["state"], "optimizer moments restored and updated"
    steps = {int(s["step"]) for s in opt["state"].values() if "step" in s}
    assert steps == {6}


def test_nan_loss_stops_with_step_and_terms(tmp_path, data_dir, monkeypatch):
    from cropformer.losses.criterion import CropFormerCriterion
    from cropformer.training.module import NonFiniteLossError

    original = CropFormerCriterion.forward

    def poisoned(self, outputs, targets):
        losses = original(self, outputs, targets)
        losses["loss_dice_2d"] = losses["loss_dice_2d"] * float("nan")
        return losses

    monkeypatch.setattr(CropFormerCriterion, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 0: loss_dice_2d=nan"):
        train(tiny_cfg(tmp_path, data_dir=data_dir))
    summary = train(tiny_cfg(tmp_path, "model.nan_policy=skip", data_dir=data_dir))
    assert summary["skipped_steps"] >= 4


@pytest.mark.parametrize("ratio", ["0", "-0.5", "1.5"])
def test_out_of_range_crop_ratio_fails_at_start(tmp_path, ratio):
    with pytest.raises(UserError, match=r"data.crop.ratio=.*must be a number in"):
        train(tiny_cfg(tmp_path, f"data.crop.ratio={ratio}"))


def test_batch_size_not_divisible_by_devices_is_one_line(tmp_path, data_dir):
    result = run_script(
        "train.py",
        *TINY_RUN,
        "trainer=ddp_sim",
        "data.batch_size=3",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={data_dir}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "data.batch_size=3" in result.stderr and "Traceback" not in result.stderr


def test_missing_dataset_is_one_line_before_the_config_tree(tmp_path):
    """Issue 27's trial: `data=entityseg` without the data printed the 290-line config tree and
    then the error; the dataset is looked for first, the tree only shown for a run that starts."""
    result = run_script(
        "train.py",
        "data=entityseg",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={tmp_path}/data",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: data.image_root={tmp_path}/data/entityseg/images does not")
    assert "CONFIG" not in result.stdout and "model" not in result.stdout, result.stdout[-2000:]
    (error_txt,) = (tmp_path / "logs").rglob("error.txt")
    assert "data.image_root" in error_txt.read_text()


@pytest.fixture(scope="module")
def crop_ratio_sweep(tmp_path_factory, data_dir) -> Path:
    """One ``train.py -m`` over three crop ratios, the first invalid: its sweep folder (one
    command for the two sweep tests below)."""
    tmp = tmp_path_factory.mktemp("sweep")
    result = run_script(
        "train.py",
        "-m",
        *TINY_RUN,
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "data.crop.ratio=1.5,0.6,0.8",
        f"paths.log_dir={tmp}/logs",
        f"paths.data_dir={data_dir}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweeps = list((tmp / "logs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1
    return sweeps[0]


def test_crop_ratio_multirun_writes_one_dir_per_value(crop_ratio_sweep):
    jobs = sorted(p for p in crop_ratio_sweep.iterdir() if p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1", "2"]
    ratios = []
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        ratios.append([r for r in ("1.5", "0.6", "0.8") if f"data.crop.ratio={r}" in overrides])
        if job.name != "0":  # job 0 (ratio 1.5) fails: test_failed_sweep_job_...
            metrics = json.loads((job / "metrics.json").read_text())
            assert math.isfinite(metrics["entity_ap"])
    assert ratios == [["1.5"], ["0.6"], ["0.8"]]
    table = run_script("scripts/summarize_sweep.py", str(crop_ratio_sweep))
    assert table.returncode == 0 and "data.crop.ratio" in table.stdout


def test_failed_sweep_job_does_not_stop_the_sweep(crop_ratio_sweep):
    # job 0 has an invalid crop ratio, jobs 1 and 2 are fine
    assert (crop_ratio_sweep / "0" / "FAILED.txt").is_file()
    assert not (crop_ratio_sweep / "0" / "metrics.json").exists()
    assert (crop_ratio_sweep / "1" / "metrics.json").is_file()
    assert (crop_ratio_sweep / "2" / "metrics.json").is_file()


def test_wandb_offline_run_contains_metrics(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    summary = train(tiny_cfg(tmp_path, "logger=wandb", data_dir=data_dir))
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "wandb_run_id.txt").is_file()
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    history = list(runs[0].glob("*.wandb"))
    assert history and b"val/entity_ap" in history[0].read_bytes()


@pytest.mark.slow
def test_sigkill_mid_training_resumes_and_finishes(tmp_path, data_dir):
    args = [
        *TINY_RUN,
        "trainer.max_steps=12",
        "trainer.val_check_interval=12",
        "callbacks.periodic_checkpoint.every_n_train_steps=2",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={data_dir}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = tmp_path / "logs" / "train" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline:
        found = list(runs.glob("*/checkpoints/last.ckpt"))
        if (
            found
            and torch.load(found[0], map_location="cpu", weights_only=False)["global_step"] >= 4
        ):
            break
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = torch.load(found[0], map_location="cpu", weights_only=False)["global_step"]
    assert 4 <= killed < 12
    result = run_script("train.py", *args, "ckpt=last", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 12


@pytest.mark.ddp
def test_ddp_sim_two_ranks_see_disjoint_data(tmp_path, data_dir):
    result = run_script(
        "train.py",
        *TINY_RUN,
        "trainer=ddp_sim",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "data.synthetic.num_train=8",
        "data.synthetic.num_test=1",
        "+callbacks.seen_samples._target_=cropformer.training.seen_samples.SeenSamples",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={data_dir}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "logs" / "train" / "runs").iterdir())
    seen = [
        [int(x) for x in (run_dir / "seen_samples" / f"rank{r}.txt").read_text().split()]
        for r in (0, 1)
    ]
    # global batch 2 over 2 ranks: one image per rank per step, 3 steps
    assert len(seen[0]) == len(seen[1]) == 3
    # within an epoch (4 images per rank) the ranks' shares are disjoint
    assert not set(seen[0]) & set(seen[1])
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 3


def test_resume_of_a_run_with_other_data_says_what_differs(trained, data_dir, tmp_path):
    # issue 17 case 1: `train.py ckpt=last` resumed a run of another dataset without a word
    tmp, summary = trained
    work = _copy_logs(tmp, tmp_path)  # the refused command may leave a run folder behind
    with pytest.raises(
        UserError, match=r"different model/data .*data.crop.mode: 'fixed' -> 'none'"
    ):
        train(tiny_cfg(work, "ckpt=last", "data/crop=none", data_dir=data_dir))
    from cropformer.run.checkpoint import check_resume_matches

    cfg = tiny_cfg(work, "ckpt=last", "data/crop=none", "ckpt_mismatch=allow", data_dir=data_dir)
    check_resume_matches(cfg, Path(summary["last_checkpoint"]))  # explicit override: proceeds


def test_eval_ckpt_best_names_the_checkpoint_and_its_step(trained, data_dir, caplog):
    # issue 17 cases 1 and 7: which checkpoint eval used; metrics.json had "step": 0.0 and a
    # relative checkpoint path
    import logging

    from cropformer.cli.eval import evaluate
    from cropformer.run.checkpoint import find_checkpoint

    tmp, _ = trained
    best = find_checkpoint(tmp / "logs", "best", "train")[0].path.resolve()
    step = int(best.stem.removeprefix("best_step"))
    cfg = tiny_cfg(tmp, "ckpt=best", name="eval", data_dir=data_dir)
    with caplog.at_level(logging.INFO):
        result = evaluate(cfg)
    assert any(f"ckpt=best -> {best} (step {step};" in r.getMessage() for r in caplog.records)
    metrics = json.loads((Path(result["run_dir"]) / "metrics.json").read_text())
    assert metrics["step"] == step and metrics["checkpoint"] == str(best)
    assert Path(metrics["checkpoint"]).is_absolute() and "val/step" not in str(metrics)
