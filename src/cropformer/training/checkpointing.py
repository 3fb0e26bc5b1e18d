"""Checkpoint writing in training: atomic saves and a periodic ``last.ckpt``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cropformer.utils.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file in the same folder, then rename over the target.

    A process killed while saving leaves the previous ``last.ckpt`` intact (rename is atomic on
    POSIX file systems); the temporary file is removed on failure.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())


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

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Ctrl-C: keep the steps done so far in ``last.ckpt`` (a single process only: with
        several, the others may already be gone and saving waits on them)."""
        if not isinstance(exception, KeyboardInterrupt) or trainer.world_size > 1:
            return
        step = trainer.global_step
        if step > 0 and step != self._last_saved and not getattr(trainer, "fast_dev_run", 0):
            trainer.save_checkpoint(self.dirpath / "last.ckpt", weights_only=False)
            self._last_saved = step
