"""``python train.py``: fit CropFormer / Mask2Former, evaluate, write checkpoints and metrics."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cropformer.cli.validate import check_data_paths, check_values, require
from cropformer.model.checkpoint_io import checkpoint_kind, read_checkpoint_header
from cropformer.run import provenance
from cropformer.run.boundary import user_errors_exit
from cropformer.run.checkpoint import (
    check_resume_matches,
    checkpoint_step,
    read_wandb_id,
    resolve_ckpt,
    run_dir_of,
    write_wandb_id,
)
from cropformer.run.inference_settings import apply_to_data, apply_to_model
from cropformer.run.instantiators import instantiate_callbacks, instantiate_loggers
from cropformer.run.setup import readable, resolve_loader_settings, show_config_tree, start_run
from cropformer.training.checkpointing import AtomicCheckpointIO
from cropformer.training.module import load_init_weights
from cropformer.utils.atomic import write_json
from cropformer.utils.errors import Interrupted, UserError
from cropformer.utils.hardware import cpu_precision_warning
from cropformer.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

#: what a smoke run (debug=smoke, make smoke) says about itself
SMOKE = (
    "2 steps on a few tiny scenes to check that training, evaluation and checkpoints run; "
    "not a result"
)


def check_world_size(cfg: DictConfig, trainer: L.Trainer) -> None:
    """The global batch must split evenly over all processes."""
    batch_size = int(cfg.data.batch_size)
    world = int(trainer.world_size)
    if batch_size % world:
        raise UserError(
            f"data.batch_size={batch_size} (global images per step) is not divisible by the "
            f"{world} processes (trainer.devices x trainer.num_nodes); use a multiple of {world}"
        )


def is_lightning_checkpoint(path: Path) -> bool:
    """A checkpoint of this platform (resumable), not an official or converted weights file."""
    try:
        return checkpoint_kind(read_checkpoint_header(path)) == "lightning"
    except Exception as err:
        raise UserError(f"ckpt={path}: cannot read it as a checkpoint ({err})") from err


def build(cfg: DictConfig, wandb_id: str | None = None) -> dict[str, Any]:
    """Instantiate datamodule, LightningModule, callbacks, loggers and trainer from ``cfg``."""
    datamodule = instantiate(cfg.data, _recursive_=False)
    model = instantiate(cfg.model, _recursive_=False)
    model.set_data_config(OmegaConf.to_container(cfg.data, resolve=True))
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"), wandb_id=wandb_id)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        _convert_="partial",
    )
    return {"datamodule": datamodule, "model": model, "trainer": trainer, "loggers": loggers}


def _store_wandb_id(loggers: list[Any], run_dir: Path, trainer: L.Trainer) -> None:
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and trainer.global_rank == 0:
            write_wandb_id(run_dir, str(logger.experiment.id))


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and evaluate) as the config says. Returns the final metrics and run facts.

    Returns:
        dict with ``entity_ap`` (percent, NaN when no validation ran), the other AP keys found,
        ``run_dir``, ``minutes``, ``best_checkpoint``, ``last_checkpoint``.
    """
    started = time.time()
    check_values(cfg)
    run_dir = start_run(cfg, show_config=None)
    prov = provenance.start(cfg, run_dir)
    if cfg.get("smoke"):
        log.info(f"smoke run: {SMOKE}")
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)

    ckpt_path = resolve_ckpt(cfg, str(cfg.task_name), exclude=run_dir)
    start_weights = None
    if ckpt_path is not None and not is_lightning_checkpoint(ckpt_path):
        # an official or converted file holds weights only: start a new training from them
        log.info(f"ckpt={ckpt_path} holds network weights only: a new training starts from them")
        start_weights, ckpt_path = ckpt_path, None
    wandb_id = read_wandb_id(run_dir_of(ckpt_path)) if ckpt_path is not None else None
    if ckpt_path is not None:
        check_resume_matches(cfg, ckpt_path)
        log.info(f"resuming from {ckpt_path}" + (f" (W&B run {wandb_id})" if wandb_id else ""))

    resolve_loader_settings(cfg)
    apply_to_data(cfg, training=True)
    apply_to_model(cfg)
    validate_at_end(cfg)
    objects = build(cfg, wandb_id=wandb_id)
    datamodule, model, trainer = objects["datamodule"], objects["model"], objects["trainer"]
    check_world_size(cfg, trainer)
    warn_cpu_precision(cfg, trainer)
    if start_weights is not None:
        load_init_weights(model.net, str(start_weights))
    elif ckpt_path is None and cfg.get("train", True):
        model.init_weights()  # model.init_checkpoint, read when a training starts, never on load
    if trainer.global_rank == 0:
        datamodule.prepare_data()
    stages = tuple(s for s, on in (("train", cfg.get("train")), ("val", True)) if on)
    stages += ("test",) if cfg.get("test") else ()
    check_data_paths(datamodule, stages)
    # shown once the objects are built and the data found: a failure before is one line
    show_config_tree(cfg, default=True)
    _store_wandb_id(objects["loggers"], run_dir, trainer)

    metrics: dict[str, Any] = {}
    if cfg.get("train", True):
        with interrupt_report(trainer, run_dir):
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
        steps = _final_step(trainer, run_dir)
        val_step = trainer.callback_metrics.get("val/step")
        if (val_step is None or int(val_step) != steps) and not trainer.fast_dev_run:
            # the final weights were not evaluated yet (val interval not hit at the last step)
            trainer.validate(model=model, datamodule=datamodule, verbose=False)
        metrics.update(_stage_metrics(trainer, "val"))
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update(_stage_metrics(trainer, "test"))

    checkpoint_cb = trainer.checkpoint_callback
    last = run_dir / "checkpoints" / "last.ckpt"
    summary: dict[str, Any] = {
        "entity_ap": metrics.get("val/entity_ap", math.nan),
        **{k.replace("/", "_"): v for k, v in metrics.items()},
        "steps": _final_step(trainer, run_dir),
        "skipped_steps": int(getattr(model, "skipped_steps", 0)),
        "best_checkpoint": _absolute(getattr(checkpoint_cb, "best_model_path", "") or None),
        "last_checkpoint": str(last) if last.is_file() else None,
        "run_dir": str(run_dir),
        "minutes": round((time.time() - started) / 60.0, 2),
        "provenance": provenance.finish(prov),
    }
    if trainer.fast_dev_run:
        summary["fast_dev_run"] = True
    if cfg.get("smoke"):
        summary["smoke"] = True
    _finish_loggers(objects["loggers"])
    if trainer.global_rank == 0:
        write_json(run_dir / "metrics.json", summary)
        if cfg.get("summary", True):
            _print_summary(summary)
    return summary


def warn_cpu_precision(cfg: DictConfig, trainer: L.Trainer) -> None:
    """``trainer.precision=16|bf16`` on a CPU without the units: predict/eval's one warning line.

    Lightning runs fp16 autocast on CPU as bf16 (``16-mixed`` becomes ``bf16-mixed``), so the
    line names both what was asked and what runs.
    """
    if trainer.strategy.root_device.type != "cpu":
        return
    asked, runs = str(OmegaConf.select(cfg, "trainer.precision")), str(trainer.precision)
    warning = cpu_precision_warning(runs)
    if warning:
        if asked != runs:
            warning = f"trainer.precision={asked} runs as {runs} on CPU (Lightning); {warning}"
        log.warning(warning.replace(f"precision={runs}", f"trainer.precision={runs}", 1))


@contextlib.contextmanager
def interrupt_report(trainer: L.Trainer, run_dir: Path) -> Iterator[None]:
    """Ctrl-C during ``trainer.fit``: one line naming what was saved and how to resume.

    Lightning catches the KeyboardInterrupt, calls the callbacks' ``on_exception`` (which save
    ``last.ckpt``, ``PeriodicCheckpoint``) and exits; this turns that exit into ``Interrupted``.
    """
    try:
        yield
    except (SystemExit, KeyboardInterrupt) as err:
        if isinstance(err, SystemExit) and not trainer.interrupted:
            raise
        last = run_dir / "checkpoints" / "last.ckpt"
        step = int(trainer.global_step)
        if last.is_file():
            saved = checkpoint_step(last)
            raise Interrupted(
                f"training stopped at step {step}; saved {last} (step {saved}); resume with "
                f"`python train.py ckpt={last}` and the same overrides"
            ) from None
        raise Interrupted(
            f"training stopped at step {step} before any checkpoint was saved; run the command "
            "again to start over"
        ) from None


def validate_at_end(cfg: DictConfig) -> None:
    """``trainer.max_steps`` below ``trainer.val_check_interval``: validate at the last step.

    Otherwise no validation runs during training and no best checkpoint is saved.
    """
    steps = OmegaConf.select(cfg, "trainer.max_steps")
    interval = OmegaConf.select(cfg, "trainer.val_check_interval")
    if not cfg.get("train", True) or not isinstance(interval, int) or isinstance(interval, bool):
        return
    if isinstance(steps, int) and 0 < steps < interval:
        log.info(
            f"trainer.val_check_interval={interval} > trainer.max_steps={steps}: validating "
            f"(and saving the best checkpoint) at step {steps} instead"
        )
        cfg.trainer.val_check_interval = steps


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def _final_step(trainer: L.Trainer, run_dir: Path) -> int:
    """The last optimizer step; fork/spawn launchers leave the launching process at step 0."""
    step = int(trainer.global_step)
    last = run_dir / "checkpoints" / "last.ckpt"
    if step == 0 and last.is_file():
        import torch

        step = int(torch.load(last, map_location="cpu", weights_only=False)["global_step"])
    return step


def _finish_loggers(loggers: list[Any]) -> None:
    """Close W&B runs so their files are complete (several runs may share one process)."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            if wandb.run is not None:
                wandb.finish()


def _stage_metrics(trainer: L.Trainer, stage: str) -> dict[str, float]:
    out = {}
    for key, value in trainer.callback_metrics.items():
        if key.startswith(f"{stage}/"):
            out[key] = float(value)
    return out


#: the validation numbers of class-aware tasks shown in the summary (summary key: label)
CLASS_AWARE_SUMMARY = {"val_pq": "PQ (val)", "val_ap": "AP (val)", "val_miou": "mIoU (val)"}


def _print_summary(summary: dict[str, Any]) -> None:
    import json

    best = summary["best_checkpoint"] or (
        "none (fast_dev_run saves no checkpoint)"
        if summary.get("fast_dev_run")
        else "none (no validation ran during training)"
    )
    ap = summary["entity_ap"]
    smoke = f" (smoke run: {SMOKE})" if summary.get("smoke") else ""
    # class-aware tasks report PQ / AP / mIoU instead of AP^e
    shown = [k for k in CLASS_AWARE_SUMMARY if isinstance(summary.get(k), float)]
    if shown:
        headline = [f"{CLASS_AWARE_SUMMARY[k]:<14}: {summary[k]:.2f}" for k in shown]
    else:
        headline = [
            f"AP^e (val)    : {ap:.2f}" if isinstance(ap, float) else f"AP^e (val)    : {ap}"
        ]
    headline[0] += smoke
    lines = [
        "",
        f"run directory : {summary['run_dir']}",
        f"steps         : {summary['steps']} ({summary['minutes']} min)",
        *headline,
        *(
            [f"AP^e (test)   : {summary['test_entity_ap']:.2f}"]
            if isinstance(summary.get("test_entity_ap"), float)
            else []
        ),
        f"last ckpt     : {summary['last_checkpoint']}",
        f"best ckpt     : {best}",
    ]
    print("\n".join(lines), flush=True)
    keys = (
        (*shown, "run_dir", "minutes", "steps", "smoke")
        if shown
        else ("entity_ap", "run_dir", "minutes", "steps", "smoke")
    )
    short = readable({k: summary[k] for k in keys if k in summary})
    print(json.dumps(short), flush=True)


@user_errors_exit
def main(cfg: DictConfig) -> float:
    """Entry point of ``train.py``; returns the optimized metric (for sweepers)."""
    require(cfg, "task_name", "set task_name=<name>")
    summary = train(cfg)
    key = str(cfg.get("optimized_metric") or "val/entity_ap").replace("/", "_")
    value = summary.get(key, summary.get("entity_ap", math.nan))
    return float(value) if value is not None else math.nan
