"""Paired comparison of two models over seeds: mean difference, its interval and p-value.

Two runs of one seed share the data order, view draws and initial weights (paired runs), so the
per-seed differences are the observations: a paired t interval (two-sided) and the t-test's p,
plus a percentile bootstrap interval of the mean difference as a distribution-free check.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PairedResult:
    """Summary of per-seed differences ``a - b`` (AP points)."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    t: float
    p: float
    boot_low: float
    boot_high: float
    confidence: float

    def excludes_zero(self) -> bool:
        """True when the t interval lies entirely on one side of 0."""
        return self.ci_low > 0.0 or self.ci_high < 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, digits: int = 2) -> str:
        """``+1.23 ± 0.45 (95 % CI [+0.80, +1.66], p = 0.004, n = 8)``."""
        f = f"{{:+.{digits}f}}"
        pct = round(self.confidence * 100)
        p = "p < 0.001" if self.p < 0.001 else f"p = {self.p:.3f}"
        return (
            f"{f.format(self.mean)} ± {self.sd:.{digits}f} ({pct} % CI [{f.format(self.ci_low)}, "
            f"{f.format(self.ci_high)}], {p}, n = {self.n})"
        )


def paired(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    bootstrap: int = 10000,
    seed: int = 0,
) -> PairedResult:
    """Paired t interval and test of ``mean(a - b)``; ``a[i]`` and ``b[i]`` share seed ``i``.

    Raises:
        ValueError: different lengths, fewer than 2 pairs, or a confidence outside (0, 1).
    """
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    if len(a) < 2:
        raise ValueError(f"a paired interval needs at least 2 seeds, got {len(a)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must lie in (0, 1)")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = int(d.size)
    mean = float(d.mean())
    sd = float(statistics.stdev(d.tolist()))
    se = sd / math.sqrt(n)
    q = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1))
    if se > 0:
        t = mean / se
        p = float(2.0 * stats.t.sf(abs(t), n - 1))
    else:  # every seed gives the same difference
        t = math.copysign(math.inf, mean) if mean else 0.0
        p = 0.0 if mean else 1.0
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(bootstrap, n))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return PairedResult(
        n=n,
        mean=mean,
        sd=sd,
        ci_low=mean - q * se,
        ci_high=mean + q * se,
        t=float(t),
        p=p,
        boot_low=float(np.quantile(means, alpha)),
        boot_high=float(np.quantile(means, 1.0 - alpha)),
        confidence=confidence,
    )
