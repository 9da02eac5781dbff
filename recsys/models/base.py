"""The one small interface every recommender in the project honours.

``fit`` on :class:`~recsys.data.TrainingData`, ``recommend`` top-k for a batch of users (string
ids in, string ids out), ``save`` / ``load`` a directory without pickle (JSON + ``.npz`` with
``allow_pickle=False``). Unknown users are normal: a model returns what it can for them
(often a popularity fallback), never raises.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from recsys.atomic import write_dir
from recsys.data.interactions import IdIndex, TrainingData
from recsys.data.stats import item_counts, popularity_scores
from recsys.evaluation.metrics import top_k_indices
from recsys.models.serialization import (
    csr_from_arrays,
    csr_to_arrays,
    index_from_arrays,
    index_to_arrays,
    load_npz,
)

FORMAT_VERSION = 1


@dataclass
class Recommendations:
    """Ranked items per user, best first.

    Attributes:
        user_ids: the users asked about, in the order asked.
        item_ids: one ranked list of item ids per user (may be shorter than k, possibly empty).
        scores: the model's score for each listed item (higher is better).
    """

    user_ids: list[str]
    item_ids: list[list[str]]
    scores: list[list[float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        """user id -> ranked item ids."""
        return dict(zip(self.user_ids, self.item_ids))


class Recommender(ABC):
    """Base class: subclasses implement ``fit``, ``recommend``, ``_state`` and ``_from_state``."""

    name: ClassVar[str]

    @abstractmethod
    def fit(self, data: TrainingData) -> Self:
        """Learn from the training window. Returns self."""

    @abstractmethod
    def recommend(self, user_ids: Sequence[str], k: int, exclude_seen: bool = False) -> Recommendations:
        """Top-k items for each user.

        Args:
            user_ids: external user ids; unknown users get a fallback list, not an error.
            k: list length (positive).
            exclude_seen: drop items the user interacted with in training.
        """

    @abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able params, named numpy arrays) that fully describe the fitted model."""

    @classmethod
    @abstractmethod
    def _from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        """Rebuild a fitted model from what :meth:`_state` returned."""

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` + ``arrays.npz`` atomically (temp dir, then rename).

        Returns:
            The directory written.
        """
        params, arrays = self._state()
        meta = {"format_version": FORMAT_VERSION, "class": self.name, "params": params}
        return write_atomic_dir(Path(directory), meta, arrays)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Load a model saved by :meth:`save`.

        Raises:
            ValueError: the directory holds another model class or an unknown format version.
        """
        directory = Path(directory)
        meta = json.loads((directory / "model.json").read_text())
        if meta.get("class") != cls.name:
            raise ValueError(f"{directory} holds a {meta.get('class')!r} model, not {cls.name!r}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory}: unsupported format_version {meta.get('format_version')}")
        # Large arrays are memory-mapped: server workers share them through the page cache.
        return cls._from_state(meta["params"], load_npz(directory / "arrays.npz"))


def write_atomic_dir(directory: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write a model directory so readers see either the old complete one or the new complete one.

    Args:
        directory: the model folder (replaced if it exists).
        meta: written as ``model.json``.
        arrays: written as ``arrays.npz``.

    Returns:
        ``directory``.
    """

    def populate(tmp: Path) -> None:
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        np.savez(tmp / "arrays.npz", allow_pickle=True, **arrays)  # numpy's default; named so **arrays types as arrays

    return write_dir(directory, populate)


SCORE_BLOCK_FLOATS = 2**25  # most (users x items) scores one block of :meth:`ScoringRecommender.top_rows` holds
_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_SCORES = np.zeros(0, dtype=np.float64)


def _writable_scores(scores: np.ndarray) -> np.ndarray:
    """A block of scores this process may overwrite (seen items become -inf), in float32 or float64.

    float32 scores stay float32: widening is exact, so it changes no order, and the float64 copy
    of a 54-user block over the 100x rung's 619k items cost as much as scoring it. Other dtypes
    become float64; a view or a read-only array is copied.
    """
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        return scores.astype(np.float64)
    if not (scores.flags.owndata and scores.flags.writeable):
        return scores.copy()
    return scores


class ScoringRecommender(Recommender):
    """A recommender that scores every item for a user; top-k, seen-filtering and fallback are shared.

    Subclasses implement :meth:`score_users` for known users and set ``user_index``,
    ``item_index``, ``seen`` (CSR users x items) and ``fallback_scores`` (item popularity).
    """

    user_index: IdIndex
    item_index: IdIndex
    fallback_scores: np.ndarray

    @abstractmethod
    def score_users(self, user_rows: np.ndarray) -> np.ndarray:
        """(len(user_rows), n_items) scores for known users (rows of ``user_index``)."""

    def seen_rows(self, user_rows: np.ndarray) -> list[np.ndarray]:
        """Item rows each user interacted with in training (for exclude_seen)."""
        seen = self.seen
        return [seen.indices[seen.indptr[r] : seen.indptr[r + 1]] for r in user_rows]

    def recommend(self, user_ids: Sequence[str], k: int, exclude_seen: bool = False, batch_size: int = 256) -> Recommendations:
        """Top-k of :meth:`score_users` per known user; unknown users get the ``fallback_scores`` top k.

        Args:
            user_ids: external user ids.
            k: list length (positive).
            exclude_seen: drop items the user interacted with in training.
            batch_size: users scored per :meth:`score_users` call.

        Raises:
            ValueError: ``k`` is not positive.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        rows, scores = self.top_rows(user_ids, k, exclude_seen, batch_size)
        ids = self.item_index.ids
        return Recommendations(list(user_ids), [ids[r].tolist() for r in rows], [s.tolist() for s in scores])

    def top_rows(self, user_ids: Sequence[str], k: int, exclude_seen: bool = False, batch_size: int = 256) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """:meth:`recommend`'s lists as item rows (of ``item_index``) and float64 scores, one array each per user.

        Args:
            user_ids: external user ids (unknown users get the popularity fallback).
            k: list length (positive).
            exclude_seen: drop items the user interacted with in training.
            batch_size: most users scored per :meth:`score_users` call (fewer over a big catalogue).

        Returns:
            (rows per user, scores per user), best first.
        """
        rows = self.user_index.lookup(list(user_ids))
        out_rows: list[np.ndarray] = [_NO_ROWS] * len(rows)
        out_scores: list[np.ndarray] = [_NO_SCORES] * len(rows)
        known = np.flatnonzero(rows >= 0)
        # Users per block capped so a block's (users x items) scores stay ~256 MB in float64: 256
        # users over the 100x rung's 619k items were 1.3 GB a copy, and the scores, their float64
        # copy and the partition's indices made a 2-4 GB saw-tooth in evaluation.
        step = max(1, min(batch_size, SCORE_BLOCK_FLOATS // max(len(self.item_index), 1)))
        for start in range(0, len(known), step):
            pos = known[start : start + step]
            scores = _writable_scores(self.score_users(rows[pos]))
            if exclude_seen:
                for j, items in enumerate(self.seen_rows(rows[pos])):
                    scores[j, items] = -np.inf
            top = top_k_indices(scores, k)
            for j, p in enumerate(pos):
                keep = top[j][np.isfinite(scores[j, top[j]])]
                out_rows[p], out_scores[p] = keep.astype(np.int64, copy=False), scores[j, keep].astype(np.float64)
        unknown = np.flatnonzero(rows < 0)
        if len(unknown):
            top = top_k_indices(self.fallback_scores, k).astype(np.int64, copy=False)
            top_scores = np.asarray(self.fallback_scores[top], dtype=np.float64)
            for p in unknown:
                out_rows[p], out_scores[p] = top, top_scores
        return out_rows, out_scores

    # Shared state of every ScoringRecommender, so subclasses only store what is their own.
    seen: sp.csr_matrix

    def _fit_common(self, data: TrainingData, fallback_days: int = 2) -> None:
        """Set indexes, the seen matrix and a recent-popularity fallback from training data."""
        self.user_index, self.item_index = data.user_index, data.item_index
        self.seen = data.user_items
        recent = item_counts(data, fallback_days)
        self.fallback_scores = popularity_scores(recent, tie_breaker=item_counts(data))

    def _common_arrays(self) -> dict[str, np.ndarray]:
        return {
            **index_to_arrays("user", self.user_index),
            **index_to_arrays("item", self.item_index),
            **csr_to_arrays("seen", self.seen),
            "fallback_scores": self.fallback_scores,
        }

    def _load_common(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_index = index_from_arrays("user", arrays)
        self.item_index = index_from_arrays("item", arrays)
        self.seen = csr_from_arrays("seen", arrays)
        self.fallback_scores = arrays["fallback_scores"]
