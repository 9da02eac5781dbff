"""The candidate generator: every source fitted on one window, merged into one list per user.

As a :class:`~recsys.models.base.Recommender` (registry name ``candidates``) it is evaluated by
the same harness as any model: ``recommend(users, k)`` returns the top k of the merged list.
:meth:`CandidateGenerator.generate` returns the full candidates with each source's rank.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from recsys.candidates import sources as src
from recsys.candidates.merge import Candidate, SourceLists, merge
from recsys.candidates.row_lists import RowLists
from recsys.config import CandidatesConfig, IndexConfig, ProjectConfig
from recsys.data.interactions import TrainingData
from recsys.index.faiss_index import EXACT_BATCH_MIN, ItemIndex
from recsys.models.base import Recommendations, Recommender, write_atomic_dir
from recsys.models.ease import EASERecommender
from recsys.models.history import HistoryRecommender
from recsys.models.implicit_models import ALSRecommender, ItemKNNRecommender
from recsys.models.serialization import load_npz
from recsys.two_tower.recommender import FeatureSettings, TwoTowerRecommender
from recsys.vectors import ItemVectors

log = logging.getLogger(__name__)

MAX_SEEN_PADDING = 500  # at most this many extra items per source make up for the ones a user already had


class CandidateGenerator(Recommender):
    """Several retrieval sources merged by weighted reciprocal-rank fusion.

    Args:
        config: sources, sizes and fusion weights.
        index_config: FAISS settings for the two-tower and content indexes.
        project: the project config (model settings of the parts fitted here).
        exclude_seen: the repeat policy: every source leaves out what the user already had
            (default: the project's ``repeats``).
    """

    name = "candidates"

    def __init__(
        self, config: CandidatesConfig, index_config: IndexConfig, project: ProjectConfig | None = None, exclude_seen: bool | None = None
    ):
        self.config = config
        self.index_config = index_config
        self.project = project
        self.exclude_seen = exclude_seen if exclude_seen is not None else (project is not None and project.repeats == "exclude")
        self.weights: dict[str, float] = dict(config.weights)
        self.timings: dict[str, float] = {}
        self._screen_tried_for: ItemIndex | None = None  # the tower index screening was set up for (a refit or load brings a new one)

    @classmethod
    def from_config(cls, config: ProjectConfig) -> Self:
        """The generator of a project config (sources, index, repeat policy).

        Args:
            config: the project config.

        Returns:
            An unfitted generator.
        """
        return cls(config.retrieval.candidates, config.retrieval.index, config)

    def fit(
        self,
        data: TrainingData,
        two_tower: TwoTowerRecommender | None = None,
        als: ALSRecommender | None = None,
        vectors: ItemVectors | None = None,
        tower_index: ItemIndex | None = None,
    ) -> Self:
        """Fit every configured source on ``data`` (pass already-fitted parts to reuse them).

        Args:
            data: the window.
            two_tower: a two-tower fitted on ``data``.
            als: an ALS fitted on ``data``.
            vectors: content vectors (else the configured file or the stand-in).
            tower_index: a FAISS index already built over ``two_tower``'s item vectors.
        """
        c, p = self.config, self.project
        wanted = set(c.sources)
        self.history = HistoryRecommender(c.popularity_days).fit(data)
        if "als" in wanted:
            self.als = als or ALSRecommender(p.models.als if p else None).fit(data)
        if "copurchase" in wanted:
            self.knn = ItemKNNRecommender(p.models.itemknn if p else None).fit(data)
        if "ease" in wanted:
            self.ease = EASERecommender(p.models.ease if p else None).fit(data)
        if "two_tower" in wanted:
            if two_tower is None:
                if p is None:
                    raise ValueError("candidates: the two_tower source needs a fitted two-tower or a project config")
                two_tower = TwoTowerRecommender.from_config(p).fit(data)
            self.two_tower = two_tower
            self.tower_index = tower_index or ItemIndex.build(two_tower.item_index.ids, two_tower.item_vectors, self.index_config)
            share_item_vectors(two_tower, self.tower_index)
        if "same_product" in wanted:
            column = c.product_column
            if column in data.items.columns:
                codes = data.items[column].to_list()
            else:  # optional metadata: without it the source proposes nothing
                log.warning("candidates: catalogue has no %r column (retrieval.candidates.product_column); same_product is empty", column)
                codes = [None] * data.n_items
            self.product_codes, self.product_groups = src.product_groups(codes, self.history.fallback_scores)
        if "content" in wanted and vectors is None and p is not None:
            vectors = FeatureSettings.from_config(p).vectors()
        if "content" in wanted and vectors is None:
            log.warning("candidates: no content vectors, so the content source proposes nothing")
        elif "content" in wanted:
            assert vectors is not None
            self.content = vectors.aligned(data.item_index.ids, p.retrieval.content_kind if p else "fused")
            # Items bought in the window: the assortment still on sale (a week-old catalogue entry
            # that nobody bought is rarely bought tomorrow).
            active = np.flatnonzero(np.diff(data.user_items.tocsc().indptr))
            self.content_index = ItemIndex.build(data.item_index.ids[active], self.content[active], self.index_config)
        return self

    def source_lists(self, user_ids: Sequence[str], k: int | None = None) -> dict[str, SourceLists]:
        """Each configured source's ranked list per user, as item ids (:meth:`source_rows`).

        Args:
            user_ids: external user ids.
            k: list length per source (default ``per_source``).

        Returns:
            source -> user id -> ranked item ids.
        """
        users = list(user_ids)
        ids = self.history.item_index.ids
        return {source: lists.to_id_lists(users, ids) for source, lists in self.source_rows(users, k).items()}

    def source_rows(self, user_ids: Sequence[str], k: int | None = None) -> dict[str, RowLists]:
        """Each configured source's ranked list per user as item rows of ``history.item_index`` (``k`` each, default ``per_source``).

        Under the repeat policy ``exclude_seen`` the history source is off and every other list
        leaves out the user's items (each source is asked for more to make up for them).

        Args:
            user_ids: external user ids.
            k: list length per source (default ``per_source``).

        Returns:
            source -> one list per user, in the order of ``user_ids``.
        """
        want = k or self.config.per_source
        users = list(user_ids)
        seen: RowLists | None = None
        if self.exclude_seen:
            seen = src.history_rows(self.history, users, 10**9)
        k = want + min(int(seen.lengths.max(initial=0)) if seen is not None else 0, MAX_SEEN_PADDING)
        n_items = len(self.history.item_index)
        out: dict[str, RowLists] = {}
        for source in self.config.sources:
            if source == "history" and self.exclude_seen:
                continue
            start = time.perf_counter()
            if source == "history":
                lists = src.history_rows(self.history, users, k)
            elif source == "als":
                lists = src.model_rows(self.als, users, k, self._row_map(self.als.item_index.ids))
            elif source == "ease":
                lists = src.model_rows(self.ease, users, k, self._row_map(self.ease.item_index.ids))
            elif source == "copurchase":
                lists = src.copurchase_rows(self.knn, self.history, users, k, self.config.recent_items, self._row_map(self.knn.item_index.ids))
            elif source == "two_tower":
                if len(users) >= EXACT_BATCH_MIN:
                    self._screen_tower_index()
                rows = self.two_tower.user_index.lookup(users)
                vectors = self.two_tower.user_vectors[np.clip(rows, 0, None)]
                lists = src.index_rows(self.tower_index, vectors, k, self._row_map(self.tower_index.item_ids), keep=rows >= 0)
            elif source == "content" and not hasattr(self, "content"):
                lists = RowLists.from_arrays([np.zeros(0, dtype=np.int64)] * len(users))
            elif source == "content":
                row_map = self._row_map(self.content_index.item_ids)
                lists = src.content_rows(self.content, self.content_index, self.history, users, k, self.config.recent_items, row_map)
            elif source == "same_product":
                lists = src.same_product_rows(self.product_codes, self.product_groups, self.history, users, k)
            elif source == "popularity":
                lists = src.popularity_rows(self.history, len(users), k)
            else:
                raise ValueError(f"candidates: unknown source {source!r}")
            out[source] = lists.without(seen, n_items, want) if seen is not None else lists.head(want) if k != want else lists
            self.timings[source] = time.perf_counter() - start
        return out

    def _row_map(self, item_ids: np.ndarray) -> np.ndarray | None:
        """The ``history.item_index`` row of each of a part's item rows (None: the part uses the same rows).

        Cached per ids array: a loaded part holds its own copy of the same ids, and comparing them
        on every request would cost a pass over the catalogue's strings per source.

        Raises:
            ValueError: the part lists items the history model does not know.
        """
        cache = self.__dict__.setdefault("_row_maps", {})
        hit = cache.get(id(item_ids))
        if hit is None or hit[0] is not item_ids:
            ours = self.history.item_index.ids
            row_map = None
            if not (item_ids is ours or (len(item_ids) == len(ours) and np.array_equal(item_ids, ours))):
                row_map = self.history.item_index.lookup(item_ids.tolist())
                if (row_map < 0).any():
                    raise ValueError(f"candidates: a fitted part lists {int((row_map < 0).sum())} items the history model does not know (e.g. {item_ids[int(np.argmin(row_map))]!r})")
            hit = cache[id(item_ids)] = (item_ids, row_map)
        return hit[1]

    def _screen_tower_index(self) -> None:
        """Screen the never-bought items of the tower index in batch searches (once; exact, see ``ItemIndex.screen_cold``)."""
        if self._screen_tried_for is self.tower_index or not self.index_config.screen_rank:
            return
        self._screen_tried_for = self.tower_index
        bought = np.bincount(self.history.history.indices, minlength=len(self.history.item_index)) > 0
        rows = self.history.item_index.lookup(self.tower_index.item_ids.tolist())
        warm = np.where(rows >= 0, bought[np.maximum(rows, 0)], False)
        start = time.perf_counter()
        if self.tower_index.screen_cold(warm, self.index_config.screen_rank):
            log.info("two-tower batch search: %d bought items in full, %d never-bought screened (rank %d), set up in %.1fs",
                     int(warm.sum()), int((~warm).sum()), self.index_config.screen_rank, time.perf_counter() - start)

    def visitor_lists(self, item_rows: np.ndarray, k: int | None = None) -> dict[str, list[str]]:
        """Each source's list for a visitor known only by the items of this visit (no fitted user row).

        Args:
            item_rows: the visit's item rows (of ``history.item_index``), oldest first; may be empty.
            k: list length per source (default ``per_source``).

        Returns:
            source -> ranked item ids, for the sources that can use the visit (history, copurchase,
            content, two_tower from the mean item-tower vector, als by fold-in) and popularity.
        """
        k = k or self.config.per_source
        ids = self.history.item_index.ids
        wanted = set(self.config.sources)
        lists: dict[str, list[str]] = {}
        if len(item_rows):
            if "history" in wanted:
                lists["history"] = src.visitor_history_list(item_rows, ids)
            if "copurchase" in wanted and hasattr(self, "knn"):
                lists["copurchase"] = src.visitor_copurchase_list(self.knn, item_rows, k)
            if "content" in wanted and hasattr(self, "content"):
                lists["content"] = src.visitor_vector_list(self.content_index, self.content[item_rows], k)
            if "two_tower" in wanted and hasattr(self, "two_tower"):
                vectors = np.stack([self.tower_index.vector(int(r)) for r in item_rows])
                lists["two_tower"] = src.visitor_vector_list(self.tower_index, vectors, k)
            if "ease" in wanted and hasattr(self, "ease"):
                lists["ease"] = src.visitor_ease_list(self.ease.weights, item_rows, ids, k)
            if "als" in wanted and hasattr(self, "als"):
                vector = self.als.fold_in(ids[item_rows].tolist())
                lists["als"] = src.visitor_factor_list(self.als.item_factors, vector, ids, k)
        lists["popularity"] = src.popularity_ids(self.history, k)
        return lists

    def generate(self, user_ids: Sequence[str], size: int | None = None) -> dict[str, list[Candidate]]:
        """Merged candidates per user with each source's rank.

        Args:
            user_ids: external user ids.
            size: candidates kept per user (default the configured ``size``).

        Returns:
            user id -> candidates, best fused score first.
        """
        lists = self.source_lists(user_ids)
        return merge(lists, list(user_ids), size or self.config.size, self.weights, self.config.rrf_k)

    def recommend(self, user_ids: Sequence[str], k: int, exclude_seen: bool = False) -> Recommendations:
        """The top ``k`` of each user's merged candidates (see :meth:`Recommender.recommend`).

        Raises:
            ValueError: ``k`` is not positive.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        merged = self.generate(user_ids, max(k, self.config.size))
        items, scores = [], []
        for user in user_ids:
            cands = merged[user]
            if exclude_seen:
                seen = set(self.history.item_index.ids[src.history_rows(self.history, [user], 10**6).rows].tolist())
                cands = [c for c in cands if c.item_id not in seen]
            items.append([c.item_id for c in cands[:k]])
            scores.append([c.score for c in cands[:k]])
        return Recommendations(list(user_ids), items, scores)

    # Composite storage: every part in its own subdirectory, this object's settings in model.json.
    def save(self, directory: str | Path) -> Path:
        """Write settings, content arrays, every fitted part and the built indexes under ``directory``.

        Returns:
            The directory written.
        """
        directory = Path(directory)
        meta = {"format_version": 1, "class": self.name, "params": self._params()}
        arrays: dict[str, np.ndarray] = {}
        if hasattr(self, "content"):
            arrays = {"content": self.content, "content_ids": self.content_index.item_ids}
        if hasattr(self, "product_codes"):
            arrays["product_codes"] = np.asarray(["" if c is None else str(c) for c in self.product_codes])
        out = write_atomic_dir(directory, meta, arrays)
        for part in ("history", "als", "knn", "ease", "two_tower"):
            if hasattr(self, part):
                getattr(self, part).save(out / part)
        # The built graphs travel with the models: rebuilding an HNSW graph over 105k items costs
        # ~40 s per load, and a loaded graph answers exactly like the one evaluated in training.
        # An exact index is only a copy of the vectors saved with its model (1.1 GB for the
        # two-tower at the 100x rung) and is rebuilt on load in a moment, so it is not saved.
        for part in ("tower_index", "content_index"):
            index = getattr(self, part, None)
            if index is not None and index.kind != "exact":
                index.save(out / part)
        return out

    def _params(self) -> dict[str, Any]:
        return {"config": self.config.model_dump(), "index": self.index_config.model_dump(), "weights": self.weights, "exclude_seen": self.exclude_seen}

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Load a generator saved by :meth:`save` (indexes are rebuilt if missing or stale).

        Raises:
            ValueError: the directory holds another model class.
        """
        directory = Path(directory)
        meta = json.loads((directory / "model.json").read_text())
        if meta.get("class") != cls.name:
            raise ValueError(f"{directory} holds a {meta.get('class')!r} model, not {cls.name!r}")
        params = meta["params"]
        model = cls(CandidatesConfig(**params["config"]), IndexConfig(**params["index"]), exclude_seen=bool(params.get("exclude_seen", False)))
        model.weights = dict(params["weights"])
        model.history = HistoryRecommender.load(directory / "history")
        for part, kind in (("als", ALSRecommender), ("knn", ItemKNNRecommender), ("ease", EASERecommender), ("two_tower", TwoTowerRecommender)):
            if (directory / part).is_dir():
                setattr(model, part, kind.load(directory / part))
        if hasattr(model, "two_tower"):
            model.tower_index = _saved_index(directory / "tower_index", model.two_tower.item_index.ids) or ItemIndex.build(
                model.two_tower.item_index.ids, model.two_tower.item_vectors, model.index_config
            )
        z = load_npz(directory / "arrays.npz")
        if "product_codes" in z:
            codes = [c or None for c in z["product_codes"].tolist()]
            model.product_codes, model.product_groups = src.product_groups(codes, model.history.fallback_scores)
        if "content" in z:
            model.content = z["content"]
            ids = z["content_ids"]
            rows = model.history.item_index.lookup(ids)
            model.content_index = _saved_index(directory / "content_index", ids) or ItemIndex.build(ids, model.content[rows], model.index_config)
        return model

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # pragma: no cover - save/load are overridden
        raise NotImplementedError

    @classmethod
    def _from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:  # pragma: no cover
        raise NotImplementedError


def _saved_index(directory: Path, item_ids: np.ndarray) -> ItemIndex | None:
    """The index saved beside the models, if present and over exactly these items (else None: rebuild)."""
    if not (directory / "index.json").is_file():
        return None
    index = ItemIndex.load(directory)
    if not np.array_equal(index.item_ids, np.asarray(item_ids, dtype=str)):
        log.warning("%s indexes other items than its models; rebuilding it", directory)
        return None
    return index


def share_item_vectors(tower: TwoTowerRecommender, index: ItemIndex) -> None:
    """Let the tower read its item vectors from an exact index's own storage: one matrix, not two.

    A flat FAISS index keeps its own copy of what it was built from (1.1 GB at the 100x rung's
    619k items). The freshly fitted tower's array is swapped for a read-only view of that copy,
    only where the two are equal; an approximate index stores other vectors (norm-augmented
    rows), so both stay. A loaded tower keeps its memory-mapped file (shared by server workers).
    Called as soon as the index is built (``training.retrieval.fit_retrieval``), so the two
    copies are never both alive through the other sources' fits; again (a no-op then) here.

    Args:
        tower: the fitted two-tower.
        index: an index built over its item vectors.
    """
    if index.kind != "exact":
        return
    stored = index.stored_vectors()
    if stored.shape == tower.item_vectors.shape and np.array_equal(stored, tower.item_vectors):
        tower.item_vectors = stored
