"""Validation overlay panels: ``image | ground truth | prediction`` strips as PNG and to W&B.

Entities are coloured with the one palette of ``evaluation.writers`` (as predict.py colours them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from cropformer.evaluation.writers import colorize


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
