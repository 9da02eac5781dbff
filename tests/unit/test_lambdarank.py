"""Protects the LambdaRank wrapper: it learns an obvious signal, round-trips without pickle, explains itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.ranking.lambdarank import LambdaRankModel, LambdaRankParams


def _data(seed: int, groups: int = 150, size: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(groups * size, 3)).astype(np.float32)
    x[:, 2] = rng.integers(0, 4, groups * size)  # a categorical column
    y = (x[:, 0] + 0.1 * rng.normal(size=groups * size) > 1.0).astype(np.float32)
    return x, y, np.full(groups, size)


def test_learns_and_round_trips(tmp_path: Path) -> None:
    x, y, g = _data(0)
    params = LambdaRankParams(n_estimators=60, num_leaves=7, min_child_samples=5, early_stopping_rounds=10)
    model = LambdaRankModel(["signal", "noise", "cat"], ["cat"], params).fit(x, y, g, valid=_data(1), log_every=0)
    vx, vy, _ = _data(2)
    scores = model.predict(vx)
    # positives outrank negatives almost always
    assert np.mean(scores[vy == 1][:, None] > scores[vy == 0][None, :]) > 0.9
    assert next(iter(model.importance())) == "signal"
    contrib = model.contributions(vx[:5])
    np.testing.assert_allclose(contrib.sum(axis=1), scores[:5], rtol=1e-6, atol=1e-6)
    loaded = LambdaRankModel.load(model.save(tmp_path / "ranker"))
    np.testing.assert_allclose(loaded.predict(vx), scores, rtol=1e-9, atol=1e-9)
    assert loaded.categorical == ["cat"]


def test_rejects_inconsistent_groups() -> None:
    x, y, g = _data(0, groups=5)
    with pytest.raises(ValueError, match="group sizes"):
        LambdaRankModel(["a", "b", "c"], []).fit(x, y, g[:-1])
