"""Semantic mIoU (and fwIoU, mACC, pACC) as a ``torchmetrics.Metric``.

Each image's confusion counts come from ``torchmetrics``' multiclass confusion matrix (ignore
pixels excluded); the summary follows detectron2's ``SemSegEvaluator`` that Mask2Former reports:
IoU per class over the pixels with a label, mIoU = mean IoU over the classes present in the ground
truth, fwIoU weighted by their pixel share, mACC the mean per-class accuracy, pACC the pixel
accuracy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cropformer.evaluation.per_image_rows import PerImageRowsMetric

IGNORE = 255


def confusion_counts(pred: Tensor, gt: Tensor, num_classes: int) -> Tensor:
    """Pixel counts ``[target, pred]`` over the pixels whose ground truth is not ``IGNORE``
    (torchmetrics' multiclass confusion matrix, as one bincount).

    Shape: pred, gt (H, W) class indices; returns (C, C) int64.

    Raises:
        ValueError: a class index outside [0, C) (ground truth: other than ``IGNORE``).
    """
    pred = pred.flatten().long().cpu()
    gt = gt.flatten().long().cpu()
    labelled = gt != IGNORE
    pred, gt = pred[labelled], gt[labelled]
    for name, values in (("prediction", pred), ("ground truth", gt)):
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
            raise ValueError(
                f"{name} has class indices outside [0, {num_classes}) "
                f"(min {int(values.min())}, max {int(values.max())})"
            )
    counts = torch.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


class SemanticIoUMetric(PerImageRowsMetric):
    """Accumulates semantic maps per image; ``compute`` gives mIoU, fwIoU, mACC, pACC (percent).

    Correct under DDP: per-image confusion entries are gathered and every image id counts once.

    Args:
        num_classes: C.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__(width=3)
        self.num_classes = int(num_classes)

    def update(self, image_id: int, pred: Tensor, gt: Tensor) -> None:  # type: ignore[override]
        """Add one image. Shape: pred, gt (H, W) class indices; gt ``IGNORE`` (255) = no label."""
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)}")
        conf = confusion_counts(pred, gt, self.num_classes)  # [target, pred]
        nz = torch.nonzero(conf)
        rows = torch.cat([nz.double(), conf[nz[:, 0], nz[:, 1]].double()[:, None]], 1)
        self.add_rows(image_id, rows)

    def compute(self) -> dict[str, float]:
        """``miou``, ``fwiou``, ``macc``, ``pacc`` in percent."""
        rows, num_images = self.unique_rows()
        c = self.num_classes
        conf = torch.zeros((c, c), dtype=torch.float64)
        if rows.numel():
            rows = rows.cpu()
            conf.index_put_((rows[:, 0].long(), rows[:, 1].long()), rows[:, 2], accumulate=True)
        tp = conf.diagonal()
        pos_gt = conf.sum(1)
        pos_pred = conf.sum(0)
        present = pos_gt > 0
        union = pos_gt + pos_pred - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.zeros_like(tp))
        acc = torch.where(present, tp / pos_gt.clamp(min=1), torch.zeros_like(tp))
        n = int(present.sum())
        total = float(pos_gt.sum())
        return {
            "miou": 100.0 * float(iou[present].sum()) / n if n else 0.0,
            "fwiou": 100.0 * float((iou * pos_gt)[present].sum()) / total if total else 0.0,
            "macc": 100.0 * float(acc[present].sum()) / n if n else 0.0,
            "pacc": 100.0 * float(tp.sum()) / total if total else 0.0,
            "sem_num_images": float(num_images),
        }
