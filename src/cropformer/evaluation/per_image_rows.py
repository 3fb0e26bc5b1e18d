"""A ``torchmetrics.Metric`` base that keeps per-image rows and counts every image once.

Class-aware metrics reduce to sums of per-image statistics (PQ's per-class TP/FP/FN/IoU, the
semantic confusion counts). Summing states would count an image twice when a distributed sampler
pads the last batches by repeating images, so each image's rows are kept (list states, gathered
with ``cat`` across ranks) with the image id and a token of the update that produced them; after
gathering, the rows of the first update of each image id (rank order, then update order) are
kept, the same rule as ``EntityAPMetric``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import Metric


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _cat(state: list[Tensor] | Tensor, width: int | None = None) -> Tensor:
    if isinstance(state, Tensor):
        return state
    if state:
        return torch.cat(state)
    shape = (0,) if width is None else (0, width)
    return torch.zeros(shape, dtype=torch.float64 if width else torch.int64)


class PerImageRowsMetric(Metric):
    """Rows of ``width`` float64 values per image, de-duplicated by image id at ``compute``.

    Args:
        width: values per row.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    row_image: list[Tensor]
    row_token: list[Tensor]
    rows: list[Tensor]

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = int(width)
        self.add_state("row_image", default=[], dist_reduce_fx="cat")
        self.add_state("row_token", default=[], dist_reduce_fx="cat")
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        self._updates = 0

    def add_rows(self, image_id: int, rows: Tensor) -> None:
        """Record the rows of one image (an image without rows still counts as seen)."""
        rows = rows.to(device=self.device, dtype=torch.float64).reshape(-1, self.width)
        # a marker row (all NaN) makes an image without statistics visible to de-duplication
        marker = torch.full((1, self.width), float("nan"), dtype=torch.float64, device=self.device)
        rows = torch.cat([marker, rows])
        token = _rank() * 2**40 + self._updates
        self._updates += 1
        n = rows.shape[0]
        self.row_image.append(
            torch.full((n,), int(image_id), dtype=torch.int64, device=self.device)
        )
        self.row_token.append(torch.full((n,), token, dtype=torch.int64, device=self.device))
        self.rows.append(rows)

    def unique_rows(self) -> tuple[Tensor, int]:
        """The rows of each image's first update (markers removed) and the number of images."""
        images = _cat(self.row_image)
        tokens = _cat(self.row_token)
        rows = _cat(self.rows, self.width)
        if images.numel() == 0:
            return rows[:0], 0
        first: dict[int, int] = {}
        for image_id, token in zip(images.tolist(), tokens.tolist()):
            first.setdefault(image_id, token)
        keep_tokens = torch.tensor(sorted(set(first.values())), device=tokens.device)
        keep = torch.isin(tokens, keep_tokens) & ~torch.isnan(rows).all(1)
        return rows[keep], len(first)
