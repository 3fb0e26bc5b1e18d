"""CropFormer: high-quality entity segmentation on PyTorch Lightning + Hydra.

``from cropformer import load_segmenter`` (see ``cropformer.api``) is imported lazily, so
``import cropformer`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Entities", "Segmenter", "__version__", "load_segmenter"]


def __getattr__(name: str) -> Any:
    if name in ("load_segmenter", "Segmenter", "Entities"):
        from cropformer import api

        return getattr(api, name)
    raise AttributeError(f"module 'cropformer' has no attribute {name!r}")
