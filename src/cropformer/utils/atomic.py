"""Atomic file writes: a temporary file in the target's folder, then one rename over it.

A process killed while writing leaves the previous file (or none), never a truncated one; the
rename is atomic on POSIX file systems. Every writer of results, checkpoints and caches uses this.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Write json atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
