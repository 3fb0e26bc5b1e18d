"""Training progress output: step lines (plain, or beside the Rich bar), validation lines."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from cropformer.utils.pylogger import file_logger

#: progress lines: the console (Hydra's handler) and the run's log file
progress_log = logging.getLogger("cropformer.progress")


def _fmt_seconds(seconds: float) -> str:
    minutes = seconds / 60.0
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60.0:.1f} h"


class _StepRate:
    """Optimizer steps per second since training (re)started, and the time left."""

    def __init__(self) -> None:
        self.start_time = time.time()
        self.start_step = 0

    def reset(self, step: int) -> None:
        self.start_time, self.start_step = time.time(), step

    def line(self, trainer: L.Trainer, metrics: dict[str, Any]) -> str:
        """``step 20/900 | loss 12.345 | 1.27 it/s | elapsed 0.3 min | ETA 11.5 min``."""
        step = int(trainer.global_step)
        elapsed = time.time() - self.start_time
        rate = (step - self.start_step) / elapsed if elapsed > 0 else 0.0
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        loss = metrics.get("train/loss", metrics.get("loss"))
        parts = [f"step {step}/{total or '?'}"]
        parts.append(f"loss {float(loss):.4g}" if loss is not None else "loss -")
        parts.append(f"{rate:.2f} it/s" if rate >= 0.1 else f"{1 / rate:.1f} s/it" if rate else "-")
        parts.append(f"elapsed {_fmt_seconds(elapsed)}")
        if total and rate > 0:
            parts.append(f"ETA {_fmt_seconds((total - step) / rate)}")
        return " | ".join(parts)


def validation_line(trainer: L.Trainer, stage: str = "val") -> str:
    """``validation at step 900: val/entity_ap 29.51 | val/entity_ap50 ...`` (2 decimals)."""
    shown = []
    for key, value in trainer.callback_metrics.items():
        if not key.startswith(f"{stage}/") or key == f"{stage}/step":
            continue
        number = float(value)
        text = f"{number:.0f}" if key.endswith("num_images") else f"{number:.2f}"
        shown.append(f"{key} {text}")
    return f"validation at step {trainer.global_step}: " + " | ".join(shown)


def _emit(line: str) -> None:
    """A progress line to the log handlers (console + run log), or stdout when there are none."""
    if logging.getLogger().handlers:
        progress_log.info(line)
    else:
        print(line, flush=True)


class PlainProgress(ProgressBar):
    """Progress as log lines every N steps: console and the run's log file (SLURM logs, no TTY).

    Each line has the step, the loss, steps per second, elapsed time and the time left.
    """

    def __init__(self, log_every_n_steps: int = 20) -> None:
        super().__init__()
        self.every = max(1, log_every_n_steps)
        self._enabled = True
        self._rate = _StepRate()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rate.reset(int(trainer.global_step))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        step = trainer.global_step
        if not self._enabled or trainer.global_rank != 0 or step % self.every:
            return
        _emit(self._rate.line(trainer, self.get_metrics(trainer, pl_module)))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or trainer.global_rank != 0 or trainer.sanity_checking:
            return
        _emit(validation_line(trainer))


class RichProgressWithLog(RichProgressBar):
    """The Rich bar on the terminal; the same progress lines as :class:`PlainProgress` in the log
    file only (so ``train.log`` tells how a run went)."""

    def __init__(self, refresh_rate: int = 1, log_every_n_steps: int = 20) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.every = max(1, log_every_n_steps)
        self._rate = _StepRate()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._rate.reset(int(trainer.global_step))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if trainer.global_rank == 0 and trainer.global_step % self.every == 0:
            line = self._rate.line(trainer, self.get_metrics(trainer, pl_module))
            file_logger().info(line)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if trainer.global_rank == 0 and not trainer.sanity_checking:
            _emit(validation_line(trainer))


def make_progress_bar(
    *, mode: str = "auto", refresh_rate: int = 1, log_every_n_steps: int = 20
) -> ProgressBar:
    """``rich`` on a terminal, ``plain`` lines otherwise (``auto``); or the one asked for.

    Both write a progress line every ``log_every_n_steps`` steps to the run's log file.
    """
    if mode not in ("auto", "rich", "plain"):
        raise ValueError(f"callbacks.progress.mode must be auto, rich or plain, got {mode!r}")
    if mode == "auto":
        mode = "rich" if sys.stdout.isatty() else "plain"
    if mode == "rich":
        return RichProgressWithLog(refresh_rate=refresh_rate, log_every_n_steps=log_every_n_steps)
    return PlainProgress(log_every_n_steps=log_every_n_steps)
