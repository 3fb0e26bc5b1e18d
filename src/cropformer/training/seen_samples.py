"""A debugging callback: the image ids each rank trains on (data sharding under DDP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class SeenSamples(Callback):
    """Record the image ids each rank trains on (``<run dir>/seen_samples/rank<r>.txt``).

    A debugging aid for data sharding under DDP: every rank should see its own disjoint share.
    Enable with ``+callbacks.seen_samples._target_=cropformer.training.seen_samples.SeenSamples``.
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
