"""Atomic file writes: a temporary file in the target's folder, then one rename over it.

A process killed while writing leaves the previous file (or none), never a truncated one; the
rename is atomic on POSIX file systems. Every writer of results, checkpoints, predictions and
dataset files goes through :func:`atomic_path` (folders published whole, such as the synthetic
dataset cache, are renamed by their owners).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``final``'s content to; renamed over ``final`` when the block
    ends without an error, removed otherwise.

    The temporary name keeps ``final``'s suffix (writers that pick the format from it, such as
    PIL, still work) and is unique per process and call; ``final``'s folder is created.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp-{os.getpid()}-{time.time_ns()}{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2) -> Path:
    """Write ``data`` as json atomically (numpy/torch scalars as numbers, other objects as str)."""
    text = json.dumps(data, indent=indent, default=_json_default)
    return write_text(path, text + "\n" if indent is not None else text)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
