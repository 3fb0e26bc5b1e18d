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


#: third-party log lines that carry no information about the run (advertisements)
NOISE_PREFIXES: tuple[str, ...] = ("💡 Tip:",)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE_PREFIXES)


def setup_console_logging() -> None:
    """Each log line once, no advertisements (call after Hydra configured logging).

    ``import lightning`` attaches its own console handler to the ``lightning`` logger, which also
    propagates to the root logger that Hydra set up (console + ``<task>.log``): every Lightning
    line was printed twice. When the root logger has handlers, Lightning's own console handlers are
    removed so its lines go through Hydra's handlers once, and into the run's log file.
    """
    root = logging.getLogger()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if root.handlers:
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())


def file_logger(name: str = "cropformer.file") -> logging.Logger:
    """A logger that writes only to the run's log files (the root logger's file handlers).

    For lines the console shows in another form (a Rich progress bar) or already printed (the
    one-line error of a failed run).
    """
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    for handler in list(logger.handlers):
        if handler not in files:
            logger.removeHandler(handler)
    for handler in files:
        if handler not in logger.handlers:
            logger.addHandler(handler)
    return logger
