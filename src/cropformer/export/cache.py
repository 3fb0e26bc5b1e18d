"""Export on first use: a checkpoint's exported file in a cache next to the checkpoint.

``<checkpoint dir>/<checkpoint name>.exported/<format>-<precision>-<key>.<suffix>``, where the key
hashes what the file depends on (the checkpoint's name, size and modification time, the test
settings, the fusion options, the export format version and the torch version). A second run
with the same settings reuses the file; other settings get a file of their own. When the
checkpoint's folder is not writable the cache is ``$XDG_CACHE_HOME/cropformer/exported`` (one log
line says where).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from cropformer.export.files import FORMAT_VERSION, export_network, suffix_of

log = logging.getLogger(__name__)


def cache_dir_for(checkpoint: Path) -> Path:
    """The cache folder of ``checkpoint`` (next to it, or the user cache when read-only)."""
    beside = checkpoint.parent / f"{checkpoint.name}.exported"
    if beside.is_dir() and os.access(beside, os.W_OK) or os.access(checkpoint.parent, os.W_OK):
        return beside
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cropformer"
    digest = hashlib.sha1(str(checkpoint.resolve()).encode()).hexdigest()[:12]
    return root / "exported" / f"{checkpoint.name}-{digest}"


def exported_file(
    checkpoint: str | Path,
    net: nn.Module,
    metadata: Mapping[str, Any],
    *,
    fmt: str = "onnx",
    precision: str = "fp32",
    quantize: Callable[[Path, Path], None] | None = None,
) -> Path:
    """The exported file of ``checkpoint`` for these settings, exported now if not cached.

    Args:
        checkpoint: the checkpoint file ``net`` was loaded from (names and keys the cache).
        net: the loaded network (exported on a cache miss).
        metadata: what the file carries (``test_settings``, ``fusion``, ``num_views`` ...).
        fmt: ``onnx`` or ``openvino``.
        precision: ``fp32``, or ``int8`` (then ``quantize(fp32_file, int8_file)`` makes it).

    Returns:
        The path of the cached file.
    """
    path = Path(checkpoint)
    stat = path.stat()
    key_source = {
        "checkpoint": [path.name, stat.st_size, stat.st_mtime_ns],
        "metadata": metadata,
        "format_version": FORMAT_VERSION,
        "torch": __import__("torch").__version__,
    }
    key = hashlib.sha1(json.dumps(key_source, sort_keys=True, default=str).encode()).hexdigest()
    folder = cache_dir_for(path)
    base = folder / f"{fmt}-fp32-{key[:16]}{suffix_of(fmt)}"
    if not base.is_file():
        log.info(f"exporting {path.name} to {fmt} (first use; cached in {folder})")
        export_network(net, base, num_views=int(metadata["num_views"]), metadata=metadata, fmt=fmt)
    if precision == "fp32":
        return base
    if quantize is None:
        raise ValueError(f"precision={precision} needs a quantize function")
    target = folder / f"{fmt}-{precision}-{key[:16]}{suffix_of(fmt)}"
    if not target.is_file():
        log.info(f"quantizing {base.name} to {precision} (first use)")
        quantize(base, target)
    return target
