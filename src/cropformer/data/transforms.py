"""Optional albumentations pixel-level transforms, applied with one draw to every view.

The geometric draws of a sample (flip, short side, crops) are the view sampler's
(``view_sampler.py``); an albumentations pipeline can add photometric augmentation
(``pixel_transform``), applied with the same random parameters to every view of the sample.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


def _instantiate(spec: Any) -> Any:
    """A transform object, or one built from ``{"_target_": "albumentations.X", **kwargs}``."""
    if not isinstance(spec, Mapping):
        return spec
    kwargs = {str(k): v for k, v in spec.items() if k != "_target_"}
    target = str(spec.get("_target_", ""))
    module, _, name = target.rpartition(".")
    if not module:
        raise ValueError(f"pixel transform {dict(spec)} needs a '_target_' like albumentations.X")
    cls = getattr(importlib.import_module(module), name)
    return cls(**kwargs)


def build_pixel_transform(transforms: Sequence[Any] | None) -> Callable[..., Any] | None:
    """Wrap albumentations pixel-level transforms (e.g. ColorJitter) into one Compose.

    Returns a callable ``(views, seed) -> views`` applying the same random parameters to every
    view (the Compose is re-seeded with the sample's seed before each view), or None.
    """
    if not transforms:
        return None
    import albumentations as A

    compose = A.Compose([_instantiate(t) for t in transforms])

    def apply(views: list[np.ndarray], seed: int) -> list[np.ndarray]:
        out = []
        for v in views:
            compose.set_random_seed(seed)
            out.append(compose(image=v)["image"])
        return out

    return apply
