"""Every YAML under conf/ composes (with the defaults) and instantiates what it describes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cropformer.run.config import compose_config, find_conf_dir

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
    "inference",
    "task",
]
HEAVY_MODELS = ("swinl", "hornetl")  # ~200 M parameters: instantiated only in the slow test


def _options(group: str) -> list[str]:
    """Presets of a group (``_name.yaml``: a shared part, e.g. conf/model/_base.yaml)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def _parts(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("_*.yaml"))


def _override(group: str, option: str) -> str:
    if group == "data/crop":
        return f"data/crop={option}"
    return f"{group}={option}"


def _leaves(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every leaf of a plain dict (lists are leaves)."""
    if isinstance(node, dict) and node:
        return [kv for k, v in node.items() for kv in _leaves(v, (*prefix, str(k)))]
    return [(prefix, node)]


def _at(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        assert isinstance(node, dict) and key in node, f"composed config lacks {'.'.join(path)}"
        node = node[key]
    return node


# keys the tests override on the command line (so not the option's values)
TEST_OVERRIDES = {("paths", k) for k in ("output_dir", "log_dir", "data_dir")}


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _assert_selects(cfg: DictConfig, group: str, option: str) -> int:
    """Every value the option's YAML sets is in the composed config (its targets, its keys),
    and so is every group option it selects with ``override /group: option``; returns the
    number of values checked."""
    path = CONF / group / f"{option}.yaml"
    text = path.read_text()
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(raw, dict)
    composed = OmegaConf.to_container(cfg, resolve=False)
    is_global = "@package _global_" in text
    own_base = composed if is_global else _at(composed, tuple(group.split("/")))
    defaults = raw.pop("defaults", None) or []
    raw.pop("hydra", None)  # run-time only: not part of the composed job config
    own = _leaves(raw)
    checked = 0
    for key, value in own:
        full = key if is_global else (*group.split("/"), *key)
        if key and not any(_overlaps(full, t) for t in TEST_OVERRIDES):
            assert _at(own_base, key) == value, f"{group}={option}: {'.'.join(key)}"
            checked += 1
    set_here = {key for key, _ in own}
    for entry in defaults:  # same-group includes (e.g. experiment presets sharing a budget)
        if isinstance(entry, str) and entry != "_self_":
            inc = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{entry}.yaml"))
            assert isinstance(inc, dict)
            inc.pop("defaults", None)
            inc.pop("hydra", None)
            set_here |= {key for key, _ in _leaves(inc)}
    for entry in defaults:
        if not isinstance(entry, dict):
            continue
        for k, sub in entry.items():
            if sub is None or (k.startswith("/") or " " in k) and not k.startswith("override /"):
                continue
            if k.startswith("override /"):
                sub_group = k.removeprefix("override /")
            else:  # a sub-group of this group (e.g. model: `backbone: r50`)
                sub_group = f"{group}/{k}"
            sub_path = CONF / sub_group / f"{sub}.yaml"
            sub_raw = OmegaConf.to_container(OmegaConf.load(sub_path), resolve=False)
            assert isinstance(sub_raw, dict)
            sub_raw.pop("defaults", None)
            header = sub_path.read_text().split("\n", 1)[0]
            if header.startswith("# @package ") and "_global_" not in header:
                prefix = tuple(header.removeprefix("# @package ").strip().split("."))
            elif header.startswith("# @package _global_"):  # e.g. conf/task/*.yaml
                prefix = ()
            else:
                prefix = tuple(sub_group.split("/"))
            own_prefix = tuple(group.split("/"))
            for key, value in _leaves(sub_raw):
                if not key:
                    continue  # a file of defaults only (e.g. a composed model)
                full = (*prefix, *key) if is_global else key
                if prefix[: len(own_prefix)] == own_prefix and not k.startswith("override /"):
                    full = (*prefix[len(own_prefix) :], *key)  # relative to this option
                    if any(_overlaps(full, o) for o, _ in own if o):
                        continue  # the option itself sets this key
                elif any(_overlaps(full, s) for s in set_here):
                    continue  # the option itself sets this key
                assert _at(composed, (*prefix, *key)) == value, f"{sub_group}={sub}: {key}"
                checked += 1
    return checked


def _compose(overrides: list[str], name: str = "train") -> DictConfig:
    cfg = compose_config(overrides + ["paths.output_dir=."], config_name=name)
    return cfg


def test_every_yaml_belongs_to_a_group():
    files = {p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")}
    known = set(PRIMARY) | {"export.yaml"}  # the export command's root (cli/export.py)
    for group in GROUPS + [
        "hydra",
        "hydra/launcher",
        "model/optimizer",
        "model/scheduler",
        "model/criterion",
        "model/fusion",
        "model/backbone",
        "model/association",
        "local",
    ]:
        known |= {f"{group}/{o}.yaml" for o in _options(group) + _parts(group)}
    assert files <= known, f"configs outside the known groups: {sorted(files - known)}"


@pytest.mark.parametrize("name", sorted(PRIMARY))
def test_primary_configs_compose(name):
    name = name.removesuffix(".yaml")
    overrides = ["ckpt=x.ckpt"] if name != "train" else []
    if name == "predict":
        overrides.append("input=x")
    cfg = _compose(overrides, name)
    OmegaConf.resolve(cfg)
    assert cfg.task_name == name
    if name != "predict":
        assert cfg.data._target_ == "cropformer.data.datamodule.EntityDataModule"
        assert cfg.data.crop.mode == "fixed" and cfg.data.crop.num_test == 4  # data=synthetic
        assert cfg.trainer._target_ == "lightning.pytorch.trainer.Trainer"
    if name == "train":
        assert cfg.model._target_ == "cropformer.training.module.CropFormerModule"
        assert cfg.model.net.backbone.model_name == "regnetx_002"  # model=cropformer_tiny
        assert cfg.model.fusion.decoder == "B-OC" and cfg.model.fusion.double_sigmoid is True
    elif name == "eval":
        assert cfg.ckpt == "x.ckpt" and cfg.split == "val"
    else:
        assert cfg.input == "x" and cfg.ckpt == "x.ckpt"
    # one shared test-time group, all null (= the run's own views and fusion) in every command
    assert OmegaConf.to_container(cfg.inference) == {
        "short_side": None,
        "max_size": None,
        "num_crops": None,
        "crop_ratio": None,
        "fusion": {
            "decoder": None,
            "double_sigmoid": None,
            "merge_threshold": None,
            "merge_metric": None,
            "merge_canvas_size": None,
            # class-aware checkpoints only (conf/model/fusion/class_aware.yaml)
            "object_mask_threshold": None,
            "overlap_threshold": None,
            "top_k": None,
            "instance_score_threshold": None,
            "segment_pixels": None,
            "overlap_strict": None,
        },
    }


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
    checked = _assert_selects(cfg, group, option)
    assert checked > 0 or OmegaConf.load(CONF / group / f"{option}.yaml") == {}
    OmegaConf.resolve(cfg)
    if group in ("model",) and not option.endswith(HEAVY_MODELS):
        module = instantiate(cfg.model, _recursive_=False)
        assert sum(p.numel() for p in module.parameters()) > 0
        net = cfg.model.net
        assert type(module.net).__name__ == net._target_.rsplit(".", 1)[1]
        assert (module.net.association is None) == (option.startswith("mask2former"))
        assert module.net.num_queries == net.decoder.num_queries
        assert module.fusion.decoder == cfg.model.fusion.decoder
    elif group in ("data", "data/crop"):
        dm = instantiate(cfg.data, _recursive_=False)
        assert dm.crop == OmegaConf.to_container(cfg.data.crop)
        val = dm.sampler_for("val")
        assert val.num_views == (1 + cfg.data.crop.num_test if cfg.data.crop.mode != "none" else 1)
        assert val.short_sides == (cfg.data.test_short_side,)
    elif group == "task":
        # the default tiny CropFormer on the embedded data: 5 classes (+ no-object) or entity
        module = instantiate(cfg.model, _recursive_=False)
        classes = 1 if option == "entity" else cfg.data.num_classes
        assert module.net.decoder.class_head.out_features == classes + 1
        assert module.criterion.num_classes == classes and module.task == option
        assert type(module.fusion).__name__ == (
            "MultiViewFusion" if option == "entity" else "ClassAwareFusion"
        )
    elif group == "trainer" and option not in ("ddp", "gpu"):
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert trainer.max_steps == cfg.trainer.max_steps
    elif group in ("callbacks",):
        from cropformer.run.instantiators import instantiate_callbacks

        assert instantiate_callbacks(cfg.callbacks)
    elif group == "logger":
        from cropformer.run.instantiators import instantiate_loggers

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
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hydra/launcher=slurm", f"paths.output_dir={tmp_path}"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert (
        launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert launcher.tasks_per_node == 8 and launcher.gpus_per_node == 8
    assert launcher.nodes == cfg.trainer.num_nodes


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
