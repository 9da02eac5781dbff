"""Paired bootstrap confidence intervals for differences between two variants on the same users."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """Mean difference B - A of a per-user metric with a bootstrap interval.

    Attributes:
        mean_a, mean_b: the two variants' means.
        diff: mean_b - mean_a.
        low, high: the (1 - alpha) percentile interval of the difference.
        relative: diff / mean_a (nan when mean_a is 0).
        p_value: two-sided bootstrap p-value for "no difference".
    """

    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    relative: float
    p_value: float

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, samples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> PairedDifference:
    """Resample users with replacement and recompute mean(b - a) each time.

    Args:
        a, b: per-user metric values of the two variants, aligned on the same users.
        samples: bootstrap resamples.
        alpha: 0.05 gives a 95% interval.
        seed: RNG seed (results are deterministic for a seed).

    Raises:
        ValueError: the arrays differ in length or are empty.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two non-empty 1-d arrays of equal length, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    d = b - a
    idx = rng.integers(0, d.size, size=(samples, d.size))
    means = d[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    observed = float(d.mean())
    # Two-sided p-value from the centred bootstrap distribution.
    p = float(np.mean(np.abs(means - observed) >= abs(observed))) if observed != 0 else 1.0
    mean_a = float(a.mean())
    return PairedDifference(mean_a, float(b.mean()), observed, float(low), float(high), observed / mean_a if mean_a else float("nan"), p)


def bootstrap_mean_interval(values: np.ndarray, samples: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean.

    Args:
        values: the sample.
        samples: bootstrap resamples.
        alpha: 1 - coverage (0.05: a 95% interval).
        seed: resampling seed.

    Returns:
        (low, high).
    """
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(samples, v.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
