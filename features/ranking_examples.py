"""From fitted retrieval to reranker input: the feature builder of a fold, and feature rows with labels.

Training (label folds), offline evaluation and serving build their rows here, over the one
feature implementation of :mod:`features.ranking`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from features.ranking import CandidateSet, RankingFeatures, UserState, build_item_table
from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.merge import Candidate
from recsys.config import ProjectConfig
from recsys.data.interactions import IdIndex, TrainingData
from recsys.ranking.lambdarank import LambdaRankModel
from recsys.vectors import ItemVectors

log = logging.getLogger(__name__)

USER_CATEGORICAL_LIMIT = 50  # customer attribute values kept as categories (the rest are "other")


def feature_builder(config: ProjectConfig, data: TrainingData, generator: CandidateGenerator, vectors: ItemVectors | None) -> RankingFeatures:
    """The shared feature builder for one fitted retrieval fold (training and serving call this).

    Args:
        config: the project config (catalogue and customer columns, candidate sources).
        data: the fold's training window.
        generator: the fold's fitted candidate generator (its ALS and two-tower give dot-product features).
        vectors: the content vectors, or None for a catalogue without content.

    Returns:
        The feature builder.
    """
    factors: dict[str, np.ndarray] = {}
    if hasattr(generator, "als"):
        factors["als"] = generator.als.item_factors
    if hasattr(generator, "two_tower"):
        factors["two_tower"] = generator.two_tower.item_vectors
    if hasattr(generator, "ease"):
        # EASE's score x_u B is a dot product too: the item's "vector" is its column of B.
        factors["ease"] = generator.ease.weights.T
    table = build_item_table(data, list(config.data.items.columns.categorical), vectors, factors)
    users = config.data.users
    categorical: dict[str, list[str]] = {}
    if users is not None and data.users is not None:
        for c in users.categorical:
            counts = data.users[c].cast(pl.String).value_counts(sort=True)
            categorical[c] = [v for v in counts[c].to_list() if v is not None][:USER_CATEGORICAL_LIMIT]
    numeric = list(users.numeric) if users is not None else []
    return RankingFeatures(table, categorical, numeric, list(config.retrieval.candidates.sources))


def user_vectors(generator: CandidateGenerator, user_ids: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Per factor model, the fitted vectors of the given users.

    Args:
        generator: a fitted candidate generator.
        user_ids: the users.

    Returns:
        model name -> {user id: vector}; users unknown to a model are absent.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, model, matrix in (
        ("als", getattr(generator, "als", None), "user_factors"),
        ("two_tower", getattr(generator, "two_tower", None), "user_vectors"),
    ):
        if model is None:
            continue
        rows = model.user_index.lookup(user_ids)
        vecs = getattr(model, matrix)
        out[name] = {u: vecs[r] for u, r in zip(user_ids, rows) if r >= 0}
    if hasattr(generator, "ease"):
        rows = generator.ease.user_index.lookup(user_ids)
        out["ease"] = {u: ease_user_vector(generator, int(r)) for u, r in zip(user_ids, rows) if r >= 0}
    return out


def ease_user_vector(generator: CandidateGenerator, user_row: int) -> np.ndarray:
    """A customer's binarised item vector ``x_u``, the user side of the ``score_ease`` feature.

    Args:
        generator: a fitted generator with an ``ease`` part.
        user_row: the customer's row.

    Returns:
        (n_items,) float32 with ones at the customer's items.
    """
    seen = generator.ease.seen
    x = np.zeros(seen.shape[1], dtype=np.float32)
    x[seen.indices[seen.indptr[user_row] : seen.indptr[user_row + 1]]] = 1.0
    return x


def user_attribute_columns(config: ProjectConfig) -> list[str]:
    """The customer attribute columns the features read (categorical, then numeric).

    Args:
        config: the project config.

    Returns:
        Column names of ``data.users`` (empty without a customer table).
    """
    users = config.data.users
    return list(users.categorical) + list(users.numeric) if users is not None else []


def candidate_set(candidates: Sequence[Candidate], item_index: IdIndex, sources: list[str]) -> CandidateSet:
    """One user's merged candidates as the arrays the feature code reads (ranks 0-based, -1 = absent).

    Args:
        candidates: the user's merged candidates.
        item_index: the item universe.
        sources: source names whose ranks are kept, in the feature builder's order.

    Returns:
        Item rows, per-source ranks and the merged scores.

    Raises:
        ValueError: a candidate is not in ``item_index``.
    """
    rows = item_index.lookup([c.item_id for c in candidates])
    if (rows < 0).any():
        unknown = [c.item_id for c, r in zip(candidates, rows) if r < 0][:5]
        raise ValueError(f"candidates contain items outside the item index: {unknown}")
    ranks = {s: np.asarray([c.ranks.get(s, 0) - 1 for c in candidates], dtype=np.int64) for s in sources}
    scores = {"merged": np.asarray([c.score for c in candidates], dtype=np.float64)}
    return CandidateSet(rows, ranks, scores)


@dataclass
class RankingExamples:
    """Feature rows of many users' candidates, grouped by user (contiguous), with labels."""

    user_ids: list[str]
    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    item_rows: np.ndarray

    def has_positive(self) -> np.ndarray:
        """Per group (user), whether any of its candidates is labelled positive.

        Returns:
            (n_groups,) bool.
        """
        if not len(self.groups):
            return np.zeros(0, dtype=bool)
        return np.add.reduceat(self.labels, np.concatenate([[0], np.cumsum(self.groups)[:-1]])) > 0

    def subset(self, keep: np.ndarray) -> "RankingExamples":
        """Keep the groups (users) where ``keep`` is True."""
        bounds = np.concatenate([[0], np.cumsum(self.groups)])
        rows = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in np.flatnonzero(keep)]) if keep.any() else np.zeros(0, dtype=np.int64)
        return RankingExamples([u for u, k in zip(self.user_ids, keep) if k], self.features[rows], self.labels[rows], self.groups[keep], self.item_rows[rows])


def concat_examples(parts: Sequence[RankingExamples]) -> RankingExamples:
    """Stack several label folds' examples (groups stay contiguous, in order).

    Args:
        parts: the folds' examples, in order (at least one).

    Returns:
        One set of examples (``parts[0]`` itself when there is only one).
    """
    if len(parts) == 1:
        return parts[0]
    return RankingExamples(
        [u for p in parts for u in p.user_ids],
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.groups for p in parts]),
        np.concatenate([p.item_rows for p in parts]),
    )


def build_examples(
    features: RankingFeatures,
    states: list[UserState],
    candidates: Mapping[str, Sequence[Candidate]],
    item_index: IdIndex,
    sources: list[str],
    truth: Mapping[str, Sequence[str]] | None = None,
    batch_users: int = 1000,
) -> RankingExamples:
    """Compute feature rows for every user's candidates (and labels when ``truth`` is given).

    Args:
        features: the shared feature builder.
        states: user states (their order is the group order).
        candidates: user id -> merged candidates.
        item_index: the item universe.
        sources: source names, in the feature builder's order.
        truth: user id -> items bought in the label window.
        batch_users: users per feature batch (progress is logged per batch).
    """
    start = time.perf_counter()
    blocks, labels, groups, rows_all = [], [], [], []
    for b in range(0, len(states), batch_users):
        batch = states[b : b + batch_users]
        sets = [candidate_set(candidates.get(s.user_id, []), item_index, sources) for s in batch]
        blocks.append(features.compute(batch, sets))
        for s, cs in zip(batch, sets):
            groups.append(len(cs.item_rows))
            rows_all.append(cs.item_rows)
            if truth is not None:
                bought = set(item_index.lookup(list(truth.get(s.user_id, []))).tolist())
                labels.append(np.asarray([r in bought for r in cs.item_rows], dtype=np.float32))
        done = min(b + batch_users, len(states))
        log.info("ranking features: %d/%d users, %.0f users/s", done, len(states), done / max(time.perf_counter() - start, 1e-9))
    x = np.concatenate(blocks) if blocks else np.zeros((0, len(features.feature_names)), dtype=np.float32)
    y = np.concatenate(labels) if labels else np.zeros(len(x), dtype=np.float32)
    rows = np.concatenate(rows_all) if rows_all else np.zeros(0, dtype=np.int64)
    return RankingExamples([s.user_id for s in states], x, y, np.asarray(groups, dtype=np.int64), rows)


def rerank(model: LambdaRankModel, examples: RankingExamples, item_ids: np.ndarray, k: int) -> dict[str, list[str]]:
    """Top-k items per user by ranker score (ties keep the merged order).

    Args:
        model: the fitted ranker.
        examples: feature rows of each user's candidates.
        item_ids: item id per item row.
        k: list length.

    Returns:
        user id -> up to ``k`` item ids.
    """
    scores = model.predict(examples.features) if len(examples.labels) else np.zeros(0)
    out: dict[str, list[str]] = {}
    start = 0
    for user, size in zip(examples.user_ids, examples.groups):
        s = scores[start : start + size]
        order = np.argsort(-s, kind="stable")[:k]
        out[user] = item_ids[examples.item_rows[start : start + size][order]].tolist()
        start += size
    return out
