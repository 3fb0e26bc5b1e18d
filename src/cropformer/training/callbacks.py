"""Callbacks and plugins: atomic checkpoints, periodic last.ckpt, overlays, progress output."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from cropformer.utils.pylogger import RankedLogger, file_logger

log = RankedLogger(__name__)
#: progress lines: the console (Hydra's handler) and the run's log file
progress_log = logging.getLogger("cropformer.progress")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file in the same folder, then rename over the target.

    A process killed while saving leaves the previous ``last.ckpt`` intact (rename is atomic on
    POSIX file systems); the temporary file is removed on failure.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()


class PeriodicCheckpoint(Callback):
    """Save ``<dirpath>/last.ckpt`` every ``every_n_train_steps`` optimizer steps."""

    def __init__(self, *, dirpath: str, every_n_train_steps: int = 100) -> None:
        if every_n_train_steps <= 0:
            raise ValueError(f"every_n_train_steps must be > 0, got {every_n_train_steps}")
        self.dirpath = Path(dirpath)
        self.every = every_n_train_steps
        self._last_saved = -1

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every == 0 and step != self._last_saved:
            if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
                return
            trainer.save_checkpoint(self.dirpath / "last.ckpt", weights_only=False)
            self._last_saved = step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the final weights always end up in last.ckpt (all ranks call: saving has a barrier)
        if trainer.global_step != self._last_saved and not getattr(trainer, "fast_dev_run", 0):
            trainer.save_checkpoint(self.dirpath / "last.ckpt", weights_only=False)
            self._last_saved = trainer.global_step


def _palette(n: int) -> np.ndarray:
    """Distinct colours for any number of entities (golden-ratio hue walk, no overflow)."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rgb = np.stack(
        [np.abs(((hues * 6 + off) % 6) - 3) - 1 for off in (0.0, 4.0, 2.0)], axis=-1
    ).clip(0, 1)
    return (rgb * 200 + 40).astype(np.uint8)


def colorize(id_map: np.ndarray) -> np.ndarray:
    """(H, W) int id map (-1 = none) -> (H, W, 3) uint8 colours (black for none)."""
    out = np.zeros((*id_map.shape, 3), dtype=np.uint8)
    if id_map.size and id_map.max() >= 0:
        colors = _palette(int(id_map.max()) + 1)
        mask = id_map >= 0
        out[mask] = colors[id_map[mask]]
    return out


class PredictionOverlays(Callback):
    """Save ``image | ground truth | prediction`` panels of the first validation images.

    The ground-truth panel exists only when the batches carry targets (``data.eval_targets=true``;
    by default evaluation reads the ground truth from the json, not the batch): otherwise the panels
    are ``image | prediction``. Each panel names its columns in a header strip. Written as PNG
    files under ``<run dir>/<dirname>/step<NNNNNN>/`` and logged to W&B when a ``WandbLogger`` is
    attached. Shown at the full view's resolution.
    """

    def __init__(self, *, num_images: int = 4, dirname: str = "overlays") -> None:
        self.num_images = num_images
        self.dirname = dirname
        self._panels: list[tuple[int, np.ndarray, str]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._panels = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.global_rank != 0 or len(self._panels) >= self.num_images or not outputs:
            return
        num_views = int(batch["boxes"].shape[1])
        for b, pred in enumerate(outputs):
            if len(self._panels) >= self.num_images:
                break
            panel, labels = _panel(batch, b, num_views, pred)
            self._panels.append((int(batch["image_ids"][b]), panel, " | ".join(labels)))

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._panels or trainer.sanity_checking:
            return
        from PIL import Image

        out_dir = Path(trainer.default_root_dir) / self.dirname / f"step{trainer.global_step:06d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        for image_id, panel, _ in self._panels:
            Image.fromarray(panel).save(out_dir / f"image{image_id}.png")
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.log_image(  # type: ignore[attr-defined]
                    key="val/overlays",
                    images=[p for _, p, _ in self._panels],
                    caption=[f"image {i}: {labels}" for i, _, labels in self._panels],
                    step=trainer.global_step,
                )


def _labelled(columns: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Columns side by side (4-px white gaps) under a header strip naming each one."""
    from PIL import Image, ImageDraw

    h = columns[0].shape[0]
    sep = np.full((h, 4, 3), 255, dtype=np.uint8)
    body = np.concatenate([x for c in columns for x in (c, sep)][:-1], axis=1)
    header = Image.new("RGB", (body.shape[1], 14), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    x = 0
    for column, label in zip(columns, labels):
        draw.text((x + 2, 1), label, fill=(0, 0, 0))
        x += column.shape[1] + 4
    return np.concatenate([np.asarray(header), body], axis=0)


def _panel(batch: Any, b: int, num_views: int, pred: Any) -> tuple[np.ndarray, list[str]]:
    """The overlay strip of image ``b`` of a batch at its full view's size, and its column labels.

    ``image | ground truth | prediction`` when the batch carries targets, else
    ``image | prediction``.
    """
    import torch.nn.functional as F

    n = b * num_views
    h, w = (int(v) for v in batch["view_sizes"][n])
    image = batch["images"][n, :, :h, :w].permute(1, 2, 0).float().clamp(0, 255)
    image = image.to(torch.uint8).cpu().numpy()
    id_map = pred["id_map"].to(torch.float32)[None, None]
    pred_small = F.interpolate(id_map, size=(h, w), mode="nearest")[0, 0].long().cpu().numpy()

    def blend(ids: np.ndarray) -> np.ndarray:
        color = colorize(ids)
        mixed = image.astype(np.float32) * 0.4 + color.astype(np.float32) * 0.6
        return np.where((ids >= 0)[..., None], mixed, image).astype(np.uint8)

    columns, labels = [image], ["image"]
    targets = batch.get("targets")
    if targets:
        gt = np.full((h, w), -1, dtype=np.int64)
        masks = targets[b]["masks"][:, 0, :h, :w].cpu().numpy()
        for k, m in enumerate(masks):
            gt[m] = k
        columns.append(blend(gt))
        labels.append("ground truth")
    columns.append(blend(pred_small))
    labels.append("prediction")
    return _labelled(columns, labels), labels


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


class SeenSamples(Callback):
    """Record the image ids each rank trains on (``<run dir>/seen_samples/rank<r>.txt``).

    A debugging aid for data sharding under DDP: every rank should see its own disjoint share.
    Enable with ``+callbacks.seen_samples._target_=cropformer.training.callbacks.SeenSamples``.
    """

    def __init__(self, *, dirname: str = "seen_samples") -> None:
        self.dirname = dirname
        self._ids: list[int] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._ids.extend(int(i) for i in batch["image_ids"])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = Path(trainer.default_root_dir) / self.dirname
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{trainer.global_rank}.txt").write_text("\n".join(map(str, self._ids)) + "\n")
