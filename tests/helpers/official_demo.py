"""The official demo's id map, restated step by step for tests (qqlu/Entity
``demo_cropformer/demo_from_dirs.py``, read for its facts; no code of it here)."""

from __future__ import annotations

import numpy as np


def demo_restated(masks: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Keep ``score >= threshold``; sort the kept scores ascending; paint the kept mask at
    position ``j`` of the kept list with ``j + 1``, lowest score first, so the highest score wins
    where masks overlap. The demo's canvas is uint8; an int64 canvas here shows what it means to
    write (the uint8 limit is tested apart).

    Shape: masks (M, H, W) bool, scores (M,) -> (H, W) int64.
    """
    selected = np.flatnonzero(scores >= threshold)
    canvas = np.zeros(masks.shape[1:], dtype=np.int64)
    for j in np.argsort(scores[selected], kind="stable"):
        canvas[masks[selected[j]]] = j + 1
    return canvas


def midpoints(scores: np.ndarray) -> list[float]:
    """Thresholds halfway between consecutive distinct scores: each selects a different set."""
    distinct = np.unique(scores.astype(np.float64))
    return [float(v) for v in (distinct[:-1] + distinct[1:]) / 2]
