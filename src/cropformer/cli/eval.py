"""``python eval.py ckpt=...``: evaluate a checkpoint on a split (AP^e, boundary AP)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cropformer.api import describe_settings, read_checkpoint, views_from_data_config
from cropformer.cli.runtime import eval_runtime_network, runtime_options, runtime_precision
from cropformer.cli.validate import check_data_paths, check_values, pixel_decoder_setting, require
from cropformer.inference.predictor import precision_parts, set_pixel_decoder_precision
from cropformer.run import provenance
from cropformer.run.boundary import user_errors_exit
from cropformer.run.checkpoint import checkpoint_step, resolve_ckpt
from cropformer.run.inference_settings import apply_to_data, fusion_settings
from cropformer.run.instantiators import instantiate_loggers
from cropformer.run.setup import readable, resolve_loader_settings, start_run
from cropformer.training.module import CropFormerModule
from cropformer.utils.atomic import write_json
from cropformer.utils.errors import Interrupted
from cropformer.utils.hardware import cpu_precision_warning
from cropformer.utils.precision import autocast_dtype, precision_of
from cropformer.utils.pylogger import RankedLogger

log = RankedLogger(__name__)


def _apply_precision(cfg: DictConfig) -> None:
    """``precision=bf16`` (as in predict.py) sets ``trainer.precision`` (the precision table's
    Lightning name of it); null keeps it. Checked by ``check_values``."""
    value = cfg.get("precision")
    entry = precision_of(value) if value is not None else None
    if entry is not None:
        OmegaConf.update(cfg, "trainer.precision", entry.trainer, merge=False)


def _check_data_classes(loaded: Any, cfg: DictConfig) -> None:
    """An official class-aware file (no class set of its own) is scored on the data's classes:
    as many as its class head predicts (the order is the data's: the official contiguous one)."""
    from cropformer.model.convert import class_head_mismatch, class_head_shape

    if loaded.task == "entity" or loaded.classes:
        return
    head = class_head_shape(loaded.state)
    assert head is not None  # a class-aware task comes from the class head
    given = OmegaConf.select(cfg, "data.num_classes", default=None)
    fix = f"evaluate on data with its {head[0] - 1} classes (data=<a config with classes>)"
    if given is None:
        raise class_head_mismatch(head, 1, source="data (no data.num_classes)", fix=fix)
    if int(given) != head[0] - 1:
        raise class_head_mismatch(head, int(given), source=f"data.num_classes={given}", fix=fix)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt`` on ``cfg.split``; write ``metrics.json`` and the COCO results json."""
    started = time.time()
    require(cfg, "ckpt", "pass ckpt=/path/to/file.ckpt, ckpt=last or ckpt=best (of train_task)")
    check_values(cfg)  # split, precision, pixel_decoder, inference views, data, trainer
    split = str(cfg.get("split", "val"))
    runtime = runtime_options(cfg)
    if runtime["runtime"] != "torch":  # its precision is the runtime's; the trainer stays fp32
        runtime["precision"] = runtime_precision(cfg)
    _apply_precision(cfg)
    pixel_decoder = pixel_decoder_setting(cfg.get("pixel_decoder", "auto"))
    run_dir = start_run(cfg, show_config=False)
    prov = provenance.start(cfg, run_dir)
    checkpoint = resolve_ckpt(cfg, cfg.get("train_task"))
    assert checkpoint is not None
    resolve_loader_settings(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)

    loaded = read_checkpoint(
        checkpoint,
        fusion=fusion_settings(cfg),
        model=cfg.get("model"),
        official_config=cfg.get("official_config"),
        official_task=cfg.get("official_task"),
    )
    module, info = CropFormerModule.from_loaded(loaded), loaded.info
    apply_to_data(cfg, training=False)
    _check_data_classes(loaded, cfg)
    task = str(getattr(module, "task", "entity"))
    if task != "entity" and "task" in cfg.data:
        # the split's ground truth with classes (e.g. the synthetic <split>_classes.json)
        OmegaConf.update(cfg, "data.task", task, merge=False)
    datamodule = instantiate(cfg.data, _recursive_=False)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=[],
        enable_checkpointing=False,
        _convert_="partial",
    )
    if trainer.global_rank == 0:
        datamodule.prepare_data()
    check_data_paths(datamodule, (split,))
    views = views_from_data_config(OmegaConf.to_container(cfg.data, resolve=True))  # type: ignore[arg-type]
    if runtime["runtime"] != "torch":
        module.use_network(
            eval_runtime_network(checkpoint, module, info.model, info.step, views, **runtime)
        )
    elif runtime["compile"]:
        import torch

        module.use_network(torch.compile(module.net, dynamic=True))
    precision = str(trainer.precision)
    set_pixel_decoder_precision(module.net, pixel_decoder, autocast_dtype(precision) is not None)
    log.info(f"eval {split}: {describe_settings(info, views, module.fusion, precision)}")
    log.info(f"precision {precision}: {precision_parts(module.net, precision)}")
    if trainer.strategy.root_device.type == "cpu" and (warning := cpu_precision_warning(precision)):
        log.warning(warning)
    run = trainer.validate if split == "val" else trainer.test
    try:
        run(model=module, datamodule=datamodule, verbose=False)
    except (SystemExit, KeyboardInterrupt) as err:
        if isinstance(err, SystemExit) and not trainer.interrupted:
            raise
        raise Interrupted(
            "evaluation stopped before its end, nothing was written (an AP needs every image); "
            "run the command again"
        ) from None
    metrics = {
        k.split("/", 1)[1]: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith(f"{split}/") and k != f"{split}/step"
    }
    summary = {
        **metrics,
        "split": split,
        "step": checkpoint_step(checkpoint),
        "checkpoint": str(checkpoint),
        "run_dir": str(run_dir),
        "minutes": round((time.time() - started) / 60.0, 2),
        "provenance": provenance.finish(prov),
    }
    if trainer.global_rank == 0:
        if cfg.get("save_predictions", True):
            results_path = run_dir / "coco_instances_results.json"
            write_json(results_path, module.metric_results())
            summary["results_json"] = str(results_path)
        write_json(run_dir / "metrics.json", summary)
        import json

        print(json.dumps(readable(summary)), flush=True)
    return summary


@user_errors_exit
def main(cfg: DictConfig) -> dict[str, Any]:
    """Entry point of ``eval.py``."""
    return evaluate(cfg)
