"""A logger that only speaks on rank 0 (or on a chosen rank) under multi-process training."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any


def _rank() -> int:
    # Lightning sets these for every process it launches; torchrun and SLURM set the others.
    for key in ("LOCAL_RANK", "RANK", "SLURM_PROCID"):
        value = os.environ.get(key)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                continue
    return 0


class RankedLogger(logging.LoggerAdapter):
    """``logging`` adapter that prefixes the rank and, by default, logs on rank 0 only."""

    def __init__(
        self,
        name: str = __name__,
        rank_zero_only: bool = True,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(logger=logging.getLogger(name), extra=extra)
        self.rank_zero_only = rank_zero_only

    def log(  # type: ignore[override]
        self, level: int, msg: object, *args: Any, rank: int | None = None, **kwargs: Any
    ) -> None:
        if not self.isEnabledFor(level):
            return
        current = _rank()
        if self.rank_zero_only and current != 0:
            return
        if rank is not None and current != rank:
            return
        msg, kwargs = self.process(msg, kwargs)  # type: ignore[assignment]
        self.logger.log(level, f"[rank: {current}] {msg}", *args, **kwargs)
