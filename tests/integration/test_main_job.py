"""`make train` (`python -m cropformer.cli.main_job`): both fine-tunings from the same weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from _integration_helpers import REPO, TINY_RUN

PRETRAINED = REPO / "benchmarks" / "embedded" / "mask2former_tiny_pretrain.pt"


def _main_job(tmp: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    args = [
        *TINY_RUN,
        f"paths.log_dir={tmp}/logs",
        f"paths.data_dir={tmp}/data",
        *extra,
    ]
    return subprocess.run(
        [sys.executable, "-m", "cropformer.cli.main_job", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_main_job_fine_tunes_both_models_from_the_same_weights(tmp_path: Path) -> None:
    proc = _main_job(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(last) == {
        "split",
        "entity_ap",
        "baseline_entity_ap",
        "gain",
        "val_gain",
        "run_dir",
        "minutes",
    }
    assert last["split"] == "test"
    job = (
        REPO / last["run_dir"] if not Path(last["run_dir"]).is_absolute() else Path(last["run_dir"])
    )
    summary = json.loads((job / "summary.json").read_text())
    # the headline is the held-out test split; val is reported alongside
    test, val = summary["metrics"]["test_entity_ap"], summary["metrics"]["val_entity_ap"]
    assert (
        summary["entity_ap"] == test["cropformer"]
        and round(test["cropformer"], 2) == last["entity_ap"]
    )
    assert summary["baseline_entity_ap"] == test["mask2former"]
    assert abs(summary["gain"] - (test["cropformer"] - test["mask2former"])) < 1e-3
    assert abs(summary["val_gain"] - (val["cropformer"] - val["mask2former"])) < 1e-3
    assert last["gain"] == round(summary["gain"], 2)
    assert summary["run_dir"].startswith("<log_dir>/main_job/runs/")
    assert str(tmp_path) not in json.dumps(summary)  # no absolute path in the summary
    cfgs = {}
    for name in ("cropformer", "mask2former"):
        assert summary["runs"][name] == f"{summary['run_dir']}/{name}"
        run = job / name
        cfgs[name] = yaml.safe_load((run / "config.yaml").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["steps"] == 4
        assert metrics["test_entity_num_images"] == 2 and metrics["val_entity_num_images"] == 2
        prov = summary["provenance"][name]
        assert prov["commit"] and prov["data"]["synthetic_key"] and prov["wall_minutes"] > 0
        assert prov["config"]["sha256"] and (run / prov["config"]["file"]).is_file()
    # one benchmark, one data seed, one code state for both runs
    pa, pb = summary["provenance"]["cropformer"], summary["provenance"]["mask2former"]
    assert pa["data"] == pb["data"] and pa["commit"] == pb["commit"]
    cf, m2f = cfgs["cropformer"], cfgs["mask2former"]
    # same start, same budget, same images per step, same seed; crops only for CropFormer
    assert cf["model"]["init_checkpoint"] == m2f["model"]["init_checkpoint"]
    # (config.yaml keeps the interpolation ${paths.root_dir}/benchmarks/embedded/...)
    assert cf["model"]["init_checkpoint"].endswith("benchmarks/embedded/" + PRETRAINED.name)
    for key in ("max_steps", "accumulate_grad_batches"):
        assert cf["trainer"][key] == m2f["trainer"][key]
    assert cf["data"]["batch_size"] == m2f["data"]["batch_size"]
    assert cf["seed"] == m2f["seed"]
    assert cf["model"]["optimizer"] == m2f["model"]["optimizer"]
    assert (cf["data"]["crop"]["mode"], m2f["data"]["crop"]["mode"]) == ("fixed", "none")
    assert "association" in cf["model"]["net"] and m2f["model"]["net"].get("association") is None


def test_main_job_refuses_to_change_the_compared_models(tmp_path: Path) -> None:
    proc = _main_job(tmp_path, "model=cropformer_swinl", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model=cropformer_swinl")


def test_main_job_rejects_a_misspelt_key_before_any_run(tmp_path: Path) -> None:
    proc = _main_job(tmp_path, "data.crop.ratoi=0.5", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.crop.ratoi" in lines[0] and "data.crop.ratio" in lines[0]
    assert not (tmp_path / "logs").exists()  # no run folder


def test_shipped_pretrained_weights_match_their_provenance_and_load() -> None:
    """The stage-1 weights initialise Mask2Former fully and CropFormer except the association."""
    from hydra.utils import instantiate

    from cropformer.run.config import compose_config

    prov = json.loads((PRETRAINED.parent / "PROVENANCE.json").read_text())
    import hashlib

    assert hashlib.sha256(PRETRAINED.read_bytes()).hexdigest() == prov["sha256"]
    assert prov["command"].startswith("python train.py") and "embedded_pretrain" in prov["command"]
    state = torch.load(PRETRAINED, map_location="cpu", weights_only=True)["state_dict"]
    for model, missing_prefix in (("mask2former_tiny", None), ("cropformer_tiny", "association.")):
        cfg = compose_config([f"model={model}", "paths.output_dir=."])
        net = instantiate(cfg.model.net)
        result = net.load_state_dict(state, strict=False)
        assert not result.unexpected_keys
        if missing_prefix is None:
            assert not result.missing_keys
        else:
            assert result.missing_keys and all(
                k.startswith(missing_prefix) for k in result.missing_keys
            )
