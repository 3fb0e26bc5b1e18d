"""Paired statistics of per-seed differences against scipy's own paired t-test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cropformer.evaluation.paired import paired


def test_interval_and_p_match_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    b = rng.normal(8.0, 1.0, size=8)
    a = b + rng.normal(1.0, 1.2, size=8)
    r = paired(a.tolist(), b.tolist())
    ref = stats.ttest_rel(a, b)
    assert r.t == pytest.approx(float(ref.statistic), rel=1e-10)
    assert r.p == pytest.approx(float(ref.pvalue), rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == pytest.approx((float(ci.low), float(ci.high)), rel=1e-10)
    assert r.n == 8 and r.mean == pytest.approx(float((a - b).mean()), abs=1e-12)
    assert r.boot_low < r.mean < r.boot_high


def test_the_issue_numbers_of_the_three_seed_headline():
    # the audit's figures for +2.66, +1.08, +3.44: t(2) = 3.44, p ~ 0.075, CI [-0.6, +5.4]
    r = paired([2.66, 1.08, 3.44], [0.0, 0.0, 0.0])
    assert r.t == pytest.approx(3.448, abs=0.001) and r.p == pytest.approx(0.0748, abs=1e-4)
    assert r.ci_low == pytest.approx(-0.594, abs=1e-3) and r.ci_high == pytest.approx(
        5.380, abs=1e-3
    )
    assert not r.excludes_zero()
    assert "95 % CI [-0.59, +5.38], p = 0.075, n = 3" in r.text()


def test_constant_difference_and_bad_input():
    r = paired([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert r.sd == 0.0 and r.p == 0.0 and math.isinf(r.t) and r.excludes_zero()
    with pytest.raises(ValueError, match="length"):
        paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired([1.0], [0.0])
