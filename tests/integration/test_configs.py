"""Every YAML under conf/ composes (with the defaults) and instantiates what it describes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cropformer.utils.config import compose_config, find_conf_dir

CONF = find_conf_dir()
PRIMARY = {"train.yaml", "eval.yaml", "predict.yaml"}
# groups whose options are selected from train.yaml (group dir -> override key)
GROUPS = [
    "model",
    "data",
    "data/crop",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "extras",
    "experiment",
    "sweep",
    "debug",
]
HEAVY_MODELS = ("swinl",)  # ~200 M parameters: composed, instantiated only in the slow test


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _override(group: str, option: str) -> str:
    if group == "data/crop":
        return f"data/crop={option}"
    return f"{group}={option}"


def _compose(overrides: list[str], name: str = "train") -> DictConfig:
    cfg = compose_config(overrides + ["paths.output_dir=/tmp/cf-config-test"], config_name=name)
    return cfg


def test_every_yaml_belongs_to_a_group():
    files = {p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")}
    known = set(PRIMARY)
    for group in GROUPS + [
        "hydra",
        "hydra/launcher",
        "model/optimizer",
        "model/scheduler",
        "model/criterion",
        "model/fusion",
        "model/backbone",
        "local",
    ]:
        known |= {f"{group}/{o}.yaml" for o in _options(group)}
    assert files <= known, f"configs outside the known groups: {sorted(files - known)}"


@pytest.mark.parametrize("name", sorted(PRIMARY))
def test_primary_configs_compose(name):
    overrides = ["ckpt=x.ckpt"] if name != "train" else []
    if name == "predict":
        overrides.append("input=x")
    cfg = _compose(overrides, name)
    OmegaConf.resolve(cfg)
    assert cfg.task_name


CASES = [(g, o) for g in GROUPS for o in _options(g)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_group_option_composes_and_instantiates(group, option, tmp_path):
    cfg = compose_config(
        [
            _override(group, option),
            f"paths.output_dir={tmp_path}",
            f"paths.log_dir={tmp_path}/logs",
            f"paths.data_dir={tmp_path}/data",
        ]
    )
    OmegaConf.resolve(cfg)
    if group in ("model",) and not option.endswith(HEAVY_MODELS):
        module = instantiate(cfg.model, _recursive_=False)
        assert sum(p.numel() for p in module.parameters()) > 0
    elif group in ("data", "data/crop"):
        dm = instantiate(cfg.data, _recursive_=False)
        assert dm is not None
    elif group == "trainer" and option not in ("ddp", "gpu"):
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert trainer.max_steps == cfg.trainer.max_steps
    elif group in ("callbacks",):
        from cropformer.utils.instantiators import instantiate_callbacks

        assert instantiate_callbacks(cfg.callbacks)
    elif group == "logger":
        from cropformer.utils.instantiators import instantiate_loggers

        loggers = instantiate_loggers(cfg.logger)
        assert isinstance(loggers, list)


@pytest.mark.slow
@pytest.mark.parametrize("option", [o for o in _options("model") if o.endswith(HEAVY_MODELS)])
def test_heavy_models_instantiate(option, tmp_path):
    cfg = compose_config([f"model={option}", f"paths.output_dir={tmp_path}"])
    module = instantiate(cfg.model, _recursive_=False)
    assert sum(p.numel() for p in module.parameters()) > 1e8


def test_slurm_launcher_config_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_config(["hydra/launcher=slurm", f"paths.output_dir={tmp_path}"])
    assert cfg is not None


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_train_help_lists_groups(repo_root):
    result = _run(["train.py", "--help"], repo_root)
    assert result.returncode == 0, result.stderr
    for group in ("model:", "data:", "trainer:", "experiment:", "sweep:"):
        assert group in result.stdout


def test_train_cfg_job_prints_config(repo_root):
    result = _run(["train.py", "--cfg", "job"], repo_root)
    assert result.returncode == 0, result.stderr
    assert "task_name: train" in result.stdout and "net:" in result.stdout


def test_unknown_group_option_is_one_readable_error(repo_root):
    result = _run(["train.py", "model=does_not_exist"], repo_root)
    assert result.returncode != 0
    assert "model/does_not_exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_without_ckpt_names_the_key(repo_root, tmp_path):
    result = _run(["eval.py", f"paths.log_dir={tmp_path}"], repo_root)
    assert result.returncode == 2
    assert "ckpt" in result.stderr and "Traceback" not in result.stderr


def test_missing_dataset_path_names_the_path(repo_root, tmp_path):
    missing = tmp_path / "nope" / "train.json"
    result = _run(
        [
            "train.py",
            "data=coco_json",
            f"data.image_root={tmp_path}",
            f"data.train_annotations={missing}",
            f"data.val_annotations={missing}",
            f"paths.log_dir={tmp_path}/logs",
            "extras.print_config=false",
        ],
        repo_root,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert str(missing) in result.stderr and "Traceback" not in result.stderr
