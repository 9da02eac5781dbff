"""The two-tower retriever on the project's :class:`~recsys.models.base.Recommender` interface.

``fit(data)`` never looks past ``data``: it holds out the last ``validation_days`` of the window,
trains on the rest with early stopping on Recall@k there, then retrains on the whole window
for the best number of epochs. User vectors (as of the window's end) and item vectors (whole
catalogue, cold items from content and metadata alone) are kept; a score is their dot product.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl
import torch

from recsys.config import ALSConfig, ConfigError, IndexConfig, ProjectConfig, TwoTowerConfig
from recsys.data.interactions import TrainingData
from recsys.data.sampling import sample_users
from recsys.index.faiss_index import SCREEN_MAX_HITS
from recsys.index.screened import ScreenedSearch
from recsys.memory import release_free_memory
from recsys.models.als_factors import ALSFactors
from recsys.models.base import ScoringRecommender
from recsys.two_tower.features import (
    ItemTable,
    build_item_table,
    inference_queries,
    training_examples,
    user_attributes,
)
from recsys.two_tower.model import TwoTower
from recsys.two_tower.spec import TowerSpec
from recsys.two_tower.train import TrainResult, ValidationSet, item_vectors, train, user_vectors
from recsys.vectors import ItemVectors

log = logging.getLogger(__name__)

USER_BATCH = 4096  # users per user-tower forward pass
USER_CHUNK = 32 * USER_BATCH  # users whose queries are built at once when every user gets a vector
SCREEN_MIN_USERS = 512  # top_rows for at least this many known users uses the screened exact search
SCREEN_RANK = IndexConfig.model_fields["screen_rank"].default  # its cold subspace: the batch index's default
SCREEN_BLOCK = 4096  # users per screened search


@dataclasses.dataclass
class FeatureSettings:
    """What the two-tower reads besides the interactions (from the project config).

    Attributes:
        item_categorical: catalogue columns embedded by the item tower.
        user_categorical: customer attribute columns embedded by the user tower.
        user_numeric: numeric customer attributes.
        text_columns: catalogue text columns (kept for the model card).
        content_path: the content stage's ItemVectors file (``content.vectors_path``), or None.
        content_kind: which vectors of that file feed the towers.
    """

    item_categorical: list[str]
    user_categorical: list[str]
    user_numeric: list[str]
    text_columns: list[str]
    content_path: str | None = None
    content_kind: str = "fused"

    @classmethod
    def from_config(cls, config: ProjectConfig) -> "FeatureSettings":
        """The settings of a project config.

        Args:
            config: the project config.

        Returns:
            Columns from ``data``, the vectors file from ``content.vectors_path``.
        """
        users = config.data.users
        path = Path(config.content.vectors_path)
        return cls(
            item_categorical=list(config.data.items.columns.categorical),
            user_categorical=list(users.categorical) if users else [],
            user_numeric=list(users.numeric) if users else [],
            text_columns=list(config.data.items.columns.text),
            content_path=str(path if path.is_absolute() else config.work_path / path),
            content_kind=config.retrieval.content_kind,
        )

    def vectors(self) -> ItemVectors | None:
        """The content stage's vectors, or None when it has written none (the towers then use no content block)."""
        if self.content_path is None or not Path(self.content_path).is_file():
            log.warning("no content vectors at %s: the two-tower trains without a content block", self.content_path)
            return None
        return ItemVectors.load(Path(self.content_path))


def holdout(data: TrainingData, days: int) -> tuple[TrainingData, dict[int, np.ndarray]]:
    """Split off the last ``days`` of a window: (earlier part, truth rows per earlier-part user row).

    Args:
        data: the training window.
        days: how many final days to hold out.

    Returns:
        (the window before the cut, user row -> held-out item rows), both in the earlier part's
        indexes; users or items unknown there are left out.

    Raises:
        ConfigError: either part would be empty.
    """
    cut = data.as_of - dt.timedelta(days=days)
    ts = pl.col("timestamp")
    inner = TrainingData.build(data.interactions.filter(ts < cut), data.items, data.users, as_of=cut)
    later = data.interactions.filter(ts >= cut)
    if inner.interactions.is_empty() or later.is_empty():
        raise ConfigError(
            f"two-tower: cannot hold out {days} day(s) of a window with {data.interactions.height} interactions "
            "(lower retrieval.two_tower.validation_days)"
        )
    grouped = later.group_by("user_id", maintain_order=True).agg(pl.col("item_id").unique(maintain_order=True))
    truth: dict[int, np.ndarray] = {}
    for user, items in zip(grouped["user_id"].to_list(), grouped["item_id"].to_list()):
        row = inner.user_index.get(user)
        if row is not None:
            rows = inner.item_index.lookup(items)
            truth[row] = rows[rows >= 0]
    return inner, truth


class TwoTowerRecommender(ScoringRecommender):
    """TorchRec two-tower retrieval (see :mod:`recsys.two_tower.model`).

    Args:
        config: two-tower hyper-parameters.
        als_config: settings of the ALS factors used as features.
        features: catalogue/customer columns and the content vector source.
        on_epoch: optional per-epoch callback (stage, epoch, metrics), e.g. MLflow logging.
    """

    name = "two_tower"

    def __init__(
        self,
        config: TwoTowerConfig | None = None,
        als_config: ALSConfig | None = None,
        features: FeatureSettings | None = None,
        on_epoch: Callable[[str, int, dict[str, float]], None] | None = None,
    ):
        self.config = config or TwoTowerConfig()
        self.als_config = als_config or ALSConfig()
        self.features = features or FeatureSettings([], [], [], [])
        self.on_epoch = on_epoch
        self.validation_result: TrainResult | None = None
        self.train_result: TrainResult | None = None
        self.last_tower: TwoTower | None = None  # the early-stopping run's tower, until the final run starts

    @classmethod
    def from_config(cls, config: ProjectConfig) -> Self:
        """An unfitted model with the project's two-tower, ALS and feature settings."""
        return cls(config.retrieval.two_tower, config.models.als, FeatureSettings.from_config(config))

    def _prepare(self, data: TrainingData, vectors: ItemVectors | None, als: ALSFactors | None) -> tuple[TowerSpec, ItemTable, ALSFactors, np.ndarray]:
        c, f = self.config, self.features
        als = als or ALSFactors.fit(data, self.als_config)
        items = build_item_table(data, vectors, als, f.item_categorical, f.content_kind)
        attrs = user_attributes(data, f.user_categorical, f.user_numeric)
        content_dim = items.dense.shape[1] - als.dim - 2
        spec = TowerSpec(
            n_users=data.n_users, n_items=data.n_items, category_sizes=tuple(items.vocab_sizes),
            categories=tuple(items.category_names), user_dense_dim=als.dim + content_dim + attrs.shape[1] + 2,
            item_dense_dim=items.dense.shape[1], als_dim=als.dim, content_dim=content_dim, id_dim=c.id_dim,
            category_dim=c.category_dim, hidden=tuple(c.hidden), output_dim=c.output_dim,
        )
        return spec, items, als, attrs

    def _callback(self, stage: str) -> Callable[[int, dict[str, float]], None] | None:
        if self.on_epoch is None:
            return None
        hook = self.on_epoch
        return lambda epoch, metrics: hook(stage, epoch, metrics)

    def early_stopping_run(
        self, data: TrainingData, truth: dict[int, np.ndarray], vectors: ItemVectors | None, keep_vectors: bool = True
    ) -> TrainResult:
        """Train on ``data`` with early stopping on Recall@k of ``truth`` (held-out items per user row).

        Also keeps, in memory only, the held-out users' ids (``holdout_user_ids``) and, with
        ``keep_vectors``, the run's user and item vectors (``holdout_user_vectors``,
        ``holdout_item_vectors``) so a caller can tune downstream stages on the same held-out
        window without training again.

        Args:
            data: the earlier part of the window (see :func:`holdout`).
            truth: user row -> held-out item rows, in ``data``'s indexes.
            vectors: content vectors, or None for no content block.
            keep_vectors: compute and keep the held-out vectors (the whole catalogue's item vectors
                are 1.1 GB at the 100x rung; ``make train`` never reads them).

        Returns:
            The run's result; ``best_epoch`` is the epoch count for the refit.
        """
        c = self.config
        spec, items, als, attrs = self._prepare(data, vectors, None)
        queries, targets = training_examples(data, items, als, attrs, c.recency_half_life_days, c.max_history, c.example_days, c.max_examples)
        rows = np.asarray(sample_users(sorted(truth), c.validation_users, c.seed, "two-tower validation users"), dtype=np.int64)
        val_queries = inference_queries(data, rows, items, als, attrs, c.recency_half_life_days, c.max_history)
        val = ValidationSet(val_queries, [truth[r] for r in rows])
        log.info("two-tower early-stopping run: %d examples, %d validation users", len(targets), len(rows))
        tower, result = train(spec, c, items, queries, targets, val, on_epoch=self._callback("validation"))
        self.last_tower = tower
        self.holdout_user_ids = data.user_index.ids[rows]
        if keep_vectors:
            self.holdout_user_vectors = user_vectors(tower, spec, items, val_queries)
            self.holdout_item_vectors = item_vectors(tower, spec, items)
        return result

    def select_epochs(self, data: TrainingData, vectors: ItemVectors | None = None, keep_holdout_vectors: bool = True) -> int:
        """The epoch count of the refit: the early-stopping run on the window's first days.

        Everything the run built (its held-out window, ALS fit, examples and tower) is freed before
        this returns; only its result and held-out users (and vectors, when kept) remain.

        Args:
            data: the training window.
            vectors: content vectors (read from the configured file when None).
            keep_holdout_vectors: keep the run's held-out user and item vectors (fusion-weight
                tuning reads them).

        Returns:
            The best epoch, or ``max_epochs`` when ``validation_days`` is 0 (no run).
        """
        c = self.config
        if not c.validation_days:
            return c.max_epochs
        vectors = vectors or self.features.vectors()
        inner, truth = holdout(data, c.validation_days)
        self.validation_result = self.early_stopping_run(inner, truth, vectors, keep_vectors=keep_holdout_vectors)
        # The run's tower (with its optimiser state) is not read again (~2 GB at the 100x rung).
        self.last_tower = None
        release_free_memory()
        return self.validation_result.best_epoch

    def fit(
        self,
        data: TrainingData,
        als: ALSFactors | None = None,
        vectors: ItemVectors | None = None,
        epochs: int | None = None,
        vector_users: np.ndarray | None = None,
    ) -> Self:
        """Fit on a window: early-stopping run on its first days, then a refit on all of it.

        Args:
            data: the training window.
            als: ALS factors already fitted on ``data`` (fitted here when None).
            vectors: content vectors (read from the configured file when None; without one the towers
                have no content block).
            epochs: the refit's epochs, chosen already by :meth:`select_epochs`; None runs it here.
            vector_users: rows of ``data.user_index`` whose vectors are computed; the others stay
                zero, so the fitted model answers only these users. None: every user. A label fold
                asks for its label users alone (10,000 of 1.2M at the 100x rung, where every
                user's vector was 2.1 GB and ~90 s per fold).
        """
        c = self.config
        self._fit_common(data)
        vectors = vectors or self.features.vectors()
        if epochs is None:
            epochs = self.select_epochs(data, vectors)
        spec, items, full_als, attrs = self._prepare(data, vectors, als)
        queries, targets = training_examples(data, items, full_als, attrs, c.recency_half_life_days, c.max_history, c.example_days, c.max_examples)
        log.info("two-tower final run: %d examples, %d epochs", len(targets), epochs)
        tower, self.train_result = train(spec, c, items, queries, targets, None, epochs=epochs, on_epoch=self._callback("final"))
        # The examples (~4 GB for 4M of them) must not outlive training: every user's query is built next.
        del queries, targets
        release_free_memory()  # else glibc keeps them mapped: 13.1 GB stayed resident after the 100x refit
        self.spec, self.tower, self.item_table, self.als = spec, tower, items, full_als
        self.item_vectors = item_vectors(tower, spec, items)
        self.user_vectors = self._every_user_vector(data, items, full_als, attrs, vector_users)
        return self

    def _every_user_vector(
        self, data: TrainingData, items: ItemTable, als: ALSFactors, attrs: np.ndarray, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Every user's vector as of the window's end (or only ``rows``'), the queries built ``USER_CHUNK`` users at a time.

        All 1.2M users' queries at once (their history rows, sorted and weighted copies, two sparse
        bags, the dense features) took the 100x rung's first label fold from 12 to 20.4 GB. A
        chunk is a whole number of ``user_vectors`` batches, so every batch, and every vector, is
        the one-pass result. Rows not asked for stay zero (and, never written, take no memory).
        """
        c = self.config
        wanted = np.arange(data.n_users, dtype=np.int64) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        out: np.ndarray | None = None
        for start in range(0, len(wanted), USER_CHUNK):
            chunk = wanted[start : start + USER_CHUNK]
            queries = inference_queries(data, chunk, items, als, attrs, c.recency_half_life_days, c.max_history)
            block = user_vectors(self.tower, self.spec, items, queries, batch_size=USER_BATCH)
            if out is None:
                out = np.zeros((data.n_users, block.shape[1]), dtype=np.float32)
            out[chunk] = block
            del queries, block
        if out is None:  # no user asked for: zero vectors as wide as the item vectors they meet
            out = np.zeros((data.n_users, self.item_vectors.shape[1]), dtype=np.float32)
        return out

    def score_users(self, user_rows: np.ndarray) -> np.ndarray:
        """Dot products of the user-tower and item-tower vectors."""
        return self.user_vectors[user_rows] @ self.item_vectors.T

    def top_rows(self, user_ids: Sequence[str], k: int, exclude_seen: bool = False, batch_size: int = 256) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """:meth:`ScoringRecommender.top_rows`, many known users searched without scoring every item.

        Scoring the whole catalogue for each user was most of ``evaluate`` at the 100x rung (10,000
        users x 619k items x 448 dimensions, 630 s). For ``SCREEN_MIN_USERS`` known users or more,
        the items bought in the window are scored in full and the never-bought ones screened by
        :class:`~recsys.index.screened.ScreenedSearch` (the candidate generator's batch search):
        the same top k, ordered by score then row, with scores summed by FAISS rather than numpy
        (near-ties can swap at float32 rounding). Seen items are dropped after a search deep
        enough to hold them all. Unknown users get the fallback as before.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        rows = self.user_index.lookup(list(user_ids))
        known = np.flatnonzero(rows >= 0)
        search = self._screened_search() if len(known) >= SCREEN_MIN_USERS else None
        if search is None:
            return super().top_rows(user_ids, k, exclude_seen, batch_size)
        ids = list(user_ids)
        unknown = np.flatnonzero(rows < 0)
        # Unknown users' fallback lists from the shared path; known users' lists replace theirs below.
        out_rows, out_scores = super().top_rows([ids[p] for p in unknown], k) if len(unknown) else ([], [])
        out_rows, out_scores = _scatter(len(rows), unknown, out_rows), _scatter(len(rows), unknown, out_scores)
        for start in range(0, len(known), SCREEN_BLOCK):
            pos = known[start : start + SCREEN_BLOCK]
            seen = self.seen_rows(rows[pos]) if exclude_seen else None
            depth = k + (max((len(s) for s in seen), default=0) if seen is not None else 0)
            found, scores = search.search(self.user_vectors[rows[pos]], depth)
            for j, p in enumerate(pos):
                keep = (found[j] >= 0) & np.isfinite(scores[j])
                if seen is not None and len(seen[j]):
                    keep &= ~np.isin(found[j], seen[j])
                out_rows[p], out_scores[p] = found[j][keep][:k], scores[j][keep][:k].astype(np.float64)
        if search.hits_per_query > SCREEN_MAX_HITS:  # still exact, but slower than scoring every item: not again
            log.info("two-tower top_rows: %.0f never-bought items rescored per user (> %d): screening off", search.hits_per_query, SCREEN_MAX_HITS)
            self.__dict__["_screen_cache"] = (self.item_vectors, None)
        return out_rows, out_scores

    def _screened_search(self) -> ScreenedSearch | None:
        """The batch search over ``item_vectors`` (built on first use, per process; None where screening cannot pay)."""
        cache = self.__dict__.get("_screen_cache")
        if cache is None or cache[0] is not self.item_vectors:
            warm = np.bincount(self.seen.indices, minlength=len(self.item_vectors)) > 0
            cache = (self.item_vectors, ScreenedSearch.build(self.item_vectors, warm, SCREEN_RANK))
            self.__dict__["_screen_cache"] = cache
        return cache[1]

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        spec = dataclasses.asdict(self.spec)
        params = {"config": self.config.model_dump(), "als_config": self.als_config.model_dump(), "features": dataclasses.asdict(self.features), "spec": spec}
        arrays = {**self._common_arrays(), "item_vectors": self.item_vectors, "user_vectors": self.user_vectors}
        arrays.update({f"tower.{k}": v.detach().numpy() for k, v in self.tower.state_dict().items()})
        return params, arrays

    @classmethod
    def _from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(TwoTowerConfig(**params["config"]), ALSConfig(**params["als_config"]), FeatureSettings(**_feature_settings(params["features"])))
        model._load_common(arrays)
        model.item_vectors, model.user_vectors = arrays["item_vectors"], arrays["user_vectors"]
        spec = TowerSpec.from_dict(params["spec"])
        model.spec = spec
        model.tower = TwoTower(spec)
        # Copies: the loaded arrays may be read-only memory maps, and the module owns its weights.
        state = {k.removeprefix("tower."): torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("tower.")}
        model.tower.load_state_dict(state)
        return model


def _scatter(n: int, positions: np.ndarray, values: list[np.ndarray]) -> list[np.ndarray]:
    """A list of ``n`` empty arrays with ``values`` placed at ``positions``."""
    out: list[np.ndarray] = [np.zeros(0)] * n
    for p, v in zip(positions, values):
        out[p] = v
    return out


def _feature_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved model's feature settings; those saved before the stand-in became a content backend
    carry its path and size, which no longer belong here."""
    return {k: v for k, v in saved.items() if k not in ("standin_path", "standin_dim")}
