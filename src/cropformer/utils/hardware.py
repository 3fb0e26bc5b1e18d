"""Loader defaults that follow the machine: ``num_workers: auto`` and ``pin_memory: auto``."""

from __future__ import annotations

import os
from typing import Any

#: upper bound of ``num_workers: auto`` (more workers than this rarely speed up one process)
MAX_AUTO_WORKERS = 8


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_num_workers(value: Any) -> int:
    """``auto`` -> min(8, usable CPUs - 1), leaving one core to the training process; else int."""
    if str(value) == "auto":
        return max(0, min(MAX_AUTO_WORKERS, usable_cpus() - 1))
    return int(value)


def auto_pin_memory(value: Any, use_cuda: bool | None = None) -> bool:
    """``auto`` -> pinned memory only when batches go to a CUDA device; else bool."""
    if str(value) == "auto":
        if use_cuda is None:
            import torch

            use_cuda = torch.cuda.is_available()
        return bool(use_cuda)
    return bool(value)
