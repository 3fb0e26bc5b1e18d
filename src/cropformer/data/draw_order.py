"""The training order and view draws of a run, from the data seed alone.

Two runs with the same data seed (e.g. CropFormer and its Mask2Former baseline of one seed) see
the same images in the same order with the same view draws and flips, whatever random numbers
their models consume: the shuffle and the per-sample draw seeds come from a generator of their
own, not from torch's global RNG (which model initialisation, dropout and the losses' point
sampling advance differently for each model).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class SeededShuffle(Sampler[tuple[int, int]]):
    """Shuffled ``(index, draw_seed)`` pairs, a new permutation per epoch, fixed by ``seed``.

    ``EntityDataset`` takes the pair as its index: ``draw_seed`` fixes the sample's views, flip
    and pixel augmentation. The epoch is set by Lightning's ``set_epoch`` before each epoch and
    otherwise advances by one per pass, so wrapping samplers (DDP) that iterate it once per
    epoch also get a new order each epoch.

    Args:
        num_samples: dataset length.
        seed: the data seed.
    """

    def __init__(self, num_samples: int, *, seed: int) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples={num_samples} must be >= 0")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next pass."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> list[tuple[int, int]]:
        """The ``(index, draw_seed)`` pairs of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(self.num_samples)
        draws = rng.integers(0, 2**62, size=self.num_samples)
        return [(int(i), int(d)) for i, d in zip(perm, draws)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pairs = self.order(self.epoch)
        self.epoch += 1
        return iter(pairs)
