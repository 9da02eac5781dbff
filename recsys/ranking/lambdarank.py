"""LightGBM LambdaRank reranker: one query group per user, saved as LightGBM's own text format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from recsys.atomic import atomic_path, write_json
from recsys.config import LambdaRankParams

__all__ = ["LambdaRankModel", "LambdaRankParams"]


class LambdaRankModel:
    """A LambdaRank booster plus the feature names and categorical columns it was trained on.

    Args:
        feature_names: column names of the feature matrix, in order.
        categorical: names of categorical columns (integer codes; NaN = missing).
        params: training settings.
    """

    def __init__(self, feature_names: list[str], categorical: list[str], params: LambdaRankParams | None = None):
        self.feature_names = feature_names
        self.categorical = [c for c in categorical if c in feature_names]
        self.params = params or LambdaRankParams()
        self.booster: lgb.Booster | None = None
        self.best_iteration: int = 0

    def _lgb_params(self) -> dict[str, Any]:
        p = self.params
        return {
            "objective": "lambdarank",
            "metric": "map",
            "eval_at": list(p.eval_at),
            "num_leaves": p.num_leaves,
            "learning_rate": p.learning_rate,
            "min_child_samples": p.min_child_samples,
            "feature_fraction": p.feature_fraction,
            "bagging_fraction": p.bagging_fraction,
            "bagging_freq": p.bagging_freq,
            "lambdarank_truncation_level": p.lambdarank_truncation_level,
            "seed": p.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": p.num_threads,
            "verbosity": -1,
        }

    def fit(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        groups: np.ndarray,
        valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        log_every: int = 50,
    ) -> "LambdaRankModel":
        """Train; rows of a group must be contiguous (``groups`` = rows per user, in order).

        Args:
            features: (rows, n_features) float32 with NaN for missing.
            labels: (rows,) relevance (1 = bought).
            groups: (n_groups,) group sizes summing to rows.
            valid: optional (features, labels, groups) for early stopping.
            log_every: print evaluation every this many rounds.
        """
        if features.shape[1] != len(self.feature_names):
            raise ValueError(f"features have {features.shape[1]} columns, expected {len(self.feature_names)}")
        if int(groups.sum()) != len(labels):
            raise ValueError(f"group sizes sum to {int(groups.sum())}, but there are {len(labels)} rows")
        train = lgb.Dataset(features, labels, group=groups, feature_name=self.feature_names, categorical_feature=self.categorical, free_raw_data=False)
        callbacks: list[Any] = [lgb.log_evaluation(log_every)] if log_every else []
        valid_sets, names = [], []
        if valid is not None:
            vx, vy, vg = valid
            valid_sets.append(lgb.Dataset(vx, vy, group=vg, reference=train, feature_name=self.feature_names, categorical_feature=self.categorical))
            names.append("valid")
            callbacks.append(lgb.early_stopping(self.params.early_stopping_rounds, verbose=False))
        self.booster = lgb.train(self._lgb_params(), train, num_boost_round=self.params.n_estimators, valid_sets=valid_sets, valid_names=names, callbacks=callbacks)
        self.best_iteration = self.booster.best_iteration or self.booster.current_iteration()
        return self

    def _require(self) -> lgb.Booster:
        if self.booster is None:
            raise RuntimeError("LambdaRankModel is not fitted")
        return self.booster

    def predict(self, features: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Ranking scores (higher = better) per row.

        Args:
            features: (rows, n_features) in :attr:`feature_names` order.
            threads: OpenMP threads (default: LightGBM's).

        Returns:
            (rows,) float64 scores (trees up to the best iteration).
        """
        extra: dict[str, Any] = {"num_threads": threads} if threads else {}
        return np.asarray(self._require().predict(features, num_iteration=self.best_iteration, **extra), dtype=np.float64)

    def contributions(self, features: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Per-feature SHAP contributions (rows, n_features + 1); the last column is the bias.

        They sum to :meth:`predict`'s score (up to rounding).

        Args:
            features: (rows, n_features) in :attr:`feature_names` order.
            threads: OpenMP threads (default: LightGBM's).
        """
        extra: dict[str, Any] = {"num_threads": threads} if threads else {}
        return np.asarray(self._require().predict(features, num_iteration=self.best_iteration, pred_contrib=True, **extra))

    def importance(self, kind: str = "gain") -> dict[str, float]:
        """Feature importance by total gain (or split count), largest first."""
        values = self._require().feature_importance(importance_type=kind, iteration=self.best_iteration)
        return dict(sorted(zip(self.feature_names, map(float, values)), key=lambda kv: -kv[1]))

    def save(self, directory: Path) -> Path:
        """Write ``ranker.txt`` (LightGBM text model) and ``ranker.json`` (names, params); no pickle."""
        directory.mkdir(parents=True, exist_ok=True)
        booster = self._require()
        with atomic_path(directory / "ranker.txt") as tmp:
            booster.save_model(str(tmp), num_iteration=self.best_iteration)
        meta = {"feature_names": self.feature_names, "categorical": self.categorical, "params": self.params.model_dump(mode="json"), "best_iteration": self.best_iteration}
        write_json(directory / "ranker.json", meta)
        return directory

    @classmethod
    def load(cls, directory: Path) -> "LambdaRankModel":
        """Read what :meth:`save` wrote (predicting with every saved tree)."""
        meta = json.loads((directory / "ranker.json").read_text())
        model = cls(meta["feature_names"], meta["categorical"], LambdaRankParams(**meta["params"]))
        model.booster = lgb.Booster(model_file=str(directory / "ranker.txt"))
        # The saved model holds exactly best_iteration trees; predict with all of them.
        model.best_iteration = model.booster.current_iteration()
        return model
