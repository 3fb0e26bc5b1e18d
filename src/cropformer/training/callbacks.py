"""Callbacks and plugins: atomic checkpoints, periodic last.ckpt, overlays, progress output."""

from __future__ import annotations

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

from cropformer.utils.pylogger import RankedLogger

log = RankedLogger(__name__)


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
            trainer.save_checkpoint(self.dirpath / "last.ckpt")
            self._last_saved = step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the final weights always end up in last.ckpt (all ranks call: saving has a barrier)
        if trainer.global_step != self._last_saved and not getattr(trainer, "fast_dev_run", 0):
            trainer.save_checkpoint(self.dirpath / "last.ckpt")
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

    The panels are written as PNG files under ``<run dir>/<dirname>/step<NNNNNN>/`` and logged to
    W&B when a ``WandbLogger`` is attached. Shown at the full view's resolution.
    """

    def __init__(self, *, num_images: int = 4, dirname: str = "overlays") -> None:
        self.num_images = num_images
        self.dirname = dirname
        self._panels: list[tuple[int, np.ndarray]] = []

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
            self._panels.append((int(batch["image_ids"][b]), _panel(batch, b, num_views, pred)))

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._panels or trainer.sanity_checking:
            return
        from PIL import Image

        out_dir = Path(trainer.default_root_dir) / self.dirname / f"step{trainer.global_step:06d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        for image_id, panel in self._panels:
            Image.fromarray(panel).save(out_dir / f"image{image_id}.png")
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.log_image(  # type: ignore[attr-defined]
                    key="val/overlays",
                    images=[p for _, p in self._panels],
                    caption=[f"image {i}: image | GT | prediction" for i, _ in self._panels],
                    step=trainer.global_step,
                )


def _panel(batch: Any, b: int, num_views: int, pred: Any) -> np.ndarray:
    """One ``image | GT | prediction`` strip for image ``b`` of a batch, at its full view's size."""
    import torch.nn.functional as F

    n = b * num_views
    h, w = (int(v) for v in batch["view_sizes"][n])
    image = batch["images"][n, :, :h, :w].permute(1, 2, 0).float().clamp(0, 255)
    image = image.to(torch.uint8).cpu().numpy()
    gt = np.full((h, w), -1, dtype=np.int64)
    targets = batch.get("targets")
    if targets:
        masks = targets[b]["masks"][:, 0, :h, :w].cpu().numpy()
        for k, m in enumerate(masks):
            gt[m] = k
    id_map = pred["id_map"].to(torch.float32)[None, None]
    pred_small = F.interpolate(id_map, size=(h, w), mode="nearest")[0, 0].long().cpu().numpy()

    def blend(ids: np.ndarray) -> np.ndarray:
        color = colorize(ids)
        mixed = image.astype(np.float32) * 0.4 + color.astype(np.float32) * 0.6
        return np.where((ids >= 0)[..., None], mixed, image).astype(np.uint8)

    sep = np.full((h, 4, 3), 255, dtype=np.uint8)
    return np.concatenate([image, sep, blend(gt), sep, blend(pred_small)], axis=1)


class PlainProgress(ProgressBar):
    """Progress as plain log lines every N steps (for SLURM logs and other non-TTY outputs)."""

    def __init__(self, log_every_n_steps: int = 20) -> None:
        super().__init__()
        self.every = max(1, log_every_n_steps)
        self._enabled = True
        self._start = time.time()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.time()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        step = trainer.global_step
        if not self._enabled or trainer.global_rank != 0 or step % self.every:
            return
        metrics = self.get_metrics(trainer, pl_module)
        loss = metrics.get("train/loss", metrics.get("loss", "?"))
        elapsed = time.time() - self._start
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else "?"
        print(f"step {step}/{total}  loss {loss}  elapsed {elapsed / 60:.1f} min", flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or trainer.global_rank != 0 or trainer.sanity_checking:
            return
        shown = {
            k: f"{float(v):.2f}"
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/")
        }
        print(f"validation at step {trainer.global_step}: {shown}", flush=True)


def make_progress_bar(
    *, mode: str = "auto", refresh_rate: int = 1, log_every_n_steps: int = 20
) -> ProgressBar:
    """``rich`` on a terminal, ``plain`` lines otherwise (``auto``); or the one asked for."""
    if mode not in ("auto", "rich", "plain"):
        raise ValueError(f"callbacks.progress.mode must be auto, rich or plain, got {mode!r}")
    if mode == "auto":
        mode = "rich" if sys.stdout.isatty() else "plain"
    if mode == "rich":
        return RichProgressBar(refresh_rate=refresh_rate)
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
