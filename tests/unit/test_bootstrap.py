"""Protects the paired bootstrap used for every variant comparison."""

import numpy as np
import pytest

from recsys.evaluation.bootstrap import paired_bootstrap


def test_clear_improvement_is_significant_and_deterministic() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(500)
    b = a + 0.05 + rng.normal(0, 0.01, 500)
    r1 = paired_bootstrap(a, b, samples=500, seed=3)
    r2 = paired_bootstrap(a, b, samples=500, seed=3)
    assert r1 == r2
    assert r1.significant and r1.low > 0.04 and r1.high < 0.06
    assert r1.diff == pytest.approx(float((b - a).mean()))
    assert r1.p_value < 0.01


def test_no_difference_interval_contains_zero() -> None:
    rng = np.random.default_rng(2)
    a = rng.random(400)
    b = a[rng.permutation(400)]  # same distribution, pairing destroyed
    r = paired_bootstrap(a, b, samples=500, seed=0)
    assert r.low < 0 < r.high and not r.significant


def test_rejects_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap(np.ones(3), np.ones(4))
