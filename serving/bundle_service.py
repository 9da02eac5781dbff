"""The production :class:`~serving.service.RecommendationService`: everything loaded from one model bundle.

Candidates and features are computed by the same code as in training
(:class:`~recsys.candidates.generator.CandidateGenerator`, :func:`training.pipeline.feature_builder`,
:class:`~features.ranking.RankingFeatures`), over the same :class:`~recsys.data.TrainingData` the
serving fold was fitted on (rebuilt from the bundle's ``data/`` files), so a (user, item) pair
gets the same features here as in the offline evaluation.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from features.content.search import ContentSearch
from features.ranking import CandidateSet, UserState, UserStateLookup, anonymous_state
from recsys.bundle import Bundle, load_bundle
from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.merge import Candidate, merge_user
from recsys.config import ProjectConfig
from recsys.data import ImageStore, TrainingData
from recsys.evaluation.metrics import top_k_indices
from recsys.ranking.lambdarank import LambdaRankModel
from recsys.vectors import ItemVectors
from serving.service import (
    InvalidQueryError,
    ItemInfo,
    Query,
    RankedItem,
    Reasons,
    ScoredItem,
    UnknownItemsError,
    UserSummary,
)
from training.pipeline import _attributes, feature_builder
from training.reranker import candidate_set

log = logging.getLogger(__name__)

INFO_COLUMNS = ("product_type_name", "product_group_name", "colour_group_name", "department_name", "section_name", "garment_group_name", "detail_desc")
CONTRIBUTIONS_SHOWN = 5
QUERY_PROFILE_ITEMS = 3  # search hits that stand in for a words-or-photo visitor's history in the features


class BundleService:
    """Serves one verified bundle. Read-only after construction, so it is safe across threads.

    Args:
        bundle: a verified bundle (see :func:`recsys.bundle.load_bundle`).
    """

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        path = bundle.path
        self.config = ProjectConfig.model_validate_json((path / "config.json").read_text())
        items = pl.read_parquet(path / "data" / "items.parquet")
        history = pl.read_parquet(path / "data" / "history.parquet")
        users = pl.read_parquet(path / "data" / "users.parquet") if (path / "data" / "users.parquet").is_file() else None
        self.data = TrainingData.build(history, items, users, as_of=dt.datetime.fromisoformat(bundle.manifest["as_of"]))
        self.generator = CandidateGenerator.load(path / "generator")
        self.vectors = ItemVectors.load(path / "item_vectors.npz")
        self.features = feature_builder(self.config, self.data, self.generator, self.vectors)
        self.ranker = LambdaRankModel.load(path / "ranker")
        root = bundle.manifest.get("image_root")
        self.images = ImageStore(Path(root) if root else None, bundle.manifest.get("image_template", "{item_id}.jpg"))
        self.search_engine = ContentSearch(self.vectors, self._encoder(), self.config.content.search)
        self._item_rows = {c: items[c].cast(pl.String).to_list() for c in ("item_id", "prod_name", *INFO_COLUMNS) if c in items.columns}
        self._has_image = self.data.items["has_image"].to_numpy() if "has_image" in self.data.items.columns else np.zeros(self.data.n_items, bool)
        self._popular = top_k_indices(self.generator.history.fallback_scores, 500)
        self._attributes = _attributes(self.config)
        # Per-request work done once here: each user's window history as arrays (not a scan of the
        # window per request), and the factor models' user-vector tables.
        self._states = UserStateLookup(self.data, self._attributes)
        self._user_factors = [
            (name, model.user_index, getattr(model, matrix))
            for name, model, matrix in (("als", getattr(self.generator, "als", None), "user_factors"), ("two_tower", getattr(self.generator, "two_tower", None), "user_vectors"))
            if model is not None
        ]
        # CPU threads per request for LightGBM / FAISS: the cores divided among the server's workers.
        self.threads = max(1, int(os.environ.get("RECSYS_SERVE_THREADS", "0")) or (os.cpu_count() or 1))
        import faiss

        faiss.omp_set_num_threads(self.threads)
        self._lock = threading.Lock()  # the text encoder's torch modules are not re-entrant
        log.info("serving bundle %s: %d items, %d users with history", bundle.version, self.data.n_items, self.data.n_users)

    @classmethod
    def load(cls, path: Path, version: str | None = None) -> "BundleService":
        """Verify (checksums) and load a bundle directory or the ``latest`` under a bundles folder."""
        return cls(load_bundle(path, version))

    def _encoder(self):  # type: ignore[no-untyped-def]
        from features.content.encoders import build_encoder

        heads = self.bundle.path / "content_heads"
        if self.config.content.backend == "aligned" and not heads.is_dir():
            log.warning("bundle has no content heads: text/image search is disabled")
            return None
        return build_encoder(self.config.content, self.config.work_path, heads if heads.is_dir() else None)

    @property
    def version(self) -> str:
        return self.bundle.version

    # -- candidates -------------------------------------------------------------------------

    def _rows(self, item_ids: tuple[str, ...] | list[str]) -> np.ndarray:
        rows = self.data.item_index.lookup(list(item_ids))
        unknown = [i for i, r in zip(item_ids, rows) if r < 0]
        if unknown:
            raise UnknownItemsError(unknown)
        return rows

    def _state(self, user: str) -> UserState:
        """A known user's feature state (what ``features.ranking.user_states`` gives, precomputed)."""
        vectors = {}
        for name, index, table in self._user_factors:
            row = index.get(user)
            if row is not None:
                vectors[name] = table[row]
        return self._states.state(user, vectors)

    def _merged(self, query: Query, size: int, with_state: bool = True) -> tuple[UserState | None, list[Candidate]]:
        """The user state (when ``with_state``) and merged candidates for a known user or an anonymous context."""
        user = query.user_id
        if user is not None and user in self.data.user_index:
            state = self._state(user) if with_state else None
            if query.recent_item_ids:
                self._rows(query.recent_item_ids)  # validate; a known user's own history already covers them
            return state, self.generator.generate([user], size)[user]
        rows = self._rows(query.recent_item_ids) if query.recent_item_ids else np.zeros(0, dtype=np.int64)
        found = None
        if query.text is not None or query.image is not None:
            found = [s.item_id for s in self.search(query.text, query.image, query.text_weight, query.image_weight, size)]
        state = None
        if with_state:
            # Words or a photo alone give the ranking features nothing to compare candidates with;
            # the best search hits stand in for the visitor's history there (never as a source).
            profile = rows if len(rows) or not found else self.data.item_index.lookup(found[:QUERY_PROFILE_ITEMS])
            vectors: dict[str, np.ndarray] = {}
            if len(profile) and hasattr(self.generator, "als"):
                vectors["als"] = self.generator.als.fold_in([self.data.item_index.ids[r] for r in profile])
            state = anonymous_state(profile.tolist(), self.data.as_of, vectors)
        lists = self._context_lists(rows, found, size)
        return state, merge_user(lists, size, self.generator.weights, self.generator.config.rrf_k)

    def _context_lists(self, rows: np.ndarray, found: list[str] | None, size: int) -> dict[str, list[str]]:
        """Source lists for a visitor known only by context (recent items, search hits for a text/photo)."""
        ids = self.data.item_index.ids.astype(object)  # plain str ids in responses, not numpy scalars
        lists: dict[str, list[str]] = {}
        if len(rows):
            lists["history"] = [ids[r] for r in rows[::-1]]
            if hasattr(self.generator, "knn"):
                scores = np.asarray(self.generator.knn.similarity[rows].sum(axis=0)).ravel()
                lists["copurchase"] = [ids[r] for r in top_k_indices(scores, size) if scores[r] > 0]
            fused = self.vectors.aligned(ids[rows].tolist(), "fused").mean(axis=0)
            lists["content"] = self.search_engine.search_vectors(fused, None, size).item_ids
            if hasattr(self.generator, "als"):
                vec = self.generator.als.fold_in(ids[rows].tolist())
                lists["als"] = [ids[r] for r in top_k_indices(self.generator.als.item_factors @ vec, size)]
        if found is not None:
            # An explicit preference outranks the look of recent items as the content source.
            lists["content"] = found
        else:
            # Popularity is the fallback for a visitor we know nothing about; next to explicit words
            # or a photo its heavy merge weight would bury what they asked for.
            lists["popularity"] = [ids[r] for r in self._popular[:size]]
        return lists

    def _filter(self, cands: list[Candidate], query: Query, seen: set[str]) -> list[Candidate]:
        out = []
        for c in cands:
            if query.exclude_seen and c.item_id in seen:
                continue
            if query.filters and not self._passes(c.item_id, query.filters):
                continue
            out.append(c)
        return out

    def _passes(self, item_id: str, filters: dict[str, tuple[str, ...]]) -> bool:
        row = self.data.item_index.get(item_id)
        if row is None:
            return False
        for column, allowed in filters.items():
            values = self._item_rows.get(column)
            if values is None or values[row] not in allowed:
                return False
        return True

    def _seen(self, query: Query) -> set[str]:
        seen = set(query.recent_item_ids)
        if query.user_id is not None:
            row = self.data.user_index.get(query.user_id)
            if row is not None:
                seen |= set(self.data.item_index.ids[self.data.user_items[row].indices].tolist())
        return seen

    def _check_filters(self, query: Query) -> None:
        for column in query.filters:
            if column not in self._item_rows or column == "item_id":
                raise InvalidQueryError(f"filters.{column}", f"unknown catalogue column; filterable: {', '.join(c for c in self._item_rows if c != 'item_id')}")

    def candidates(self, query: Query) -> list[ScoredItem]:
        self._check_filters(query)
        # Ask for more than k when filtering, so a filter does not empty the list.
        size = max(query.k, self.generator.config.size) * (4 if query.filters or query.exclude_seen else 1)
        _, cands = self._merged(query, size, with_state=False)
        cands = self._filter(cands, query, self._seen(query) if query.exclude_seen else set())
        return [ScoredItem(c.item_id, float(c.score), {s: r - 1 for s, r in c.ranks.items()}) for c in cands[: query.k]]

    def recommendations(self, query: Query, n_candidates: int = 200) -> list[RankedItem]:
        self._check_filters(query)
        size = max(n_candidates, query.k) * (4 if query.filters or query.exclude_seen else 1)
        state, cands = self._merged(query, size)
        cands = self._filter(cands, query, self._seen(query) if query.exclude_seen else set())[: max(n_candidates, query.k)]
        if not cands:
            return []
        assert state is not None
        x = self._features(state, cands)
        # Rank every candidate by the booster's score (cheap), then explain only the k returned:
        # TreeSHAP contributions cost ~0.4-0.8 ms a row, i.e. most of a request for 200 rows.
        scores = self.ranker.predict(x, threads=self.threads)
        order = np.argsort(-scores, kind="stable")[: query.k]
        contrib = self.ranker.contributions(x[order], threads=self.threads)
        names = self.features.feature_names
        col = {n: i for i, n in enumerate(names)}
        out = []
        for i, j in enumerate(order):
            c = cands[j]
            top = np.argsort(-np.abs(contrib[i, :-1]))[:CONTRIBUTIONS_SHOWN]
            reasons = Reasons(
                sources={s: r - 1 for s, r in c.ranks.items()},
                image_similarity=_finite(x[j, col["sim_image_centroid"]]),
                text_similarity=_finite(x[j, col["sim_text_centroid"]]),
                contributions=[(names[t], float(contrib[i, t])) for t in top],
            )
            out.append(RankedItem(c.item_id, float(scores[j]), reasons))
        return out

    def _features(self, state: UserState, cands: list[Candidate]) -> np.ndarray:
        cset: CandidateSet = candidate_set(cands, self.data.item_index, self.features.sources)
        return self.features.compute([state], [cset])

    def feature_rows(self, user_id: str, item_ids: list[str]) -> np.ndarray:
        """The reranker's feature rows for a known user and given items, by the serving path.

        Exists so tests can check serving/training parity pair by pair.
        """
        state, cands = self._merged(Query(user_id=user_id), self.generator.config.size)
        assert state is not None
        by_id = {c.item_id: c for c in cands}
        return self._features(state, [by_id.get(i, Candidate(i, 0.0, {})) for i in item_ids])

    # -- content ------------------------------------------------------------------------------

    def similar(self, item_id: str, k: int) -> list[ScoredItem]:
        if self.vectors.index.get(item_id) is None:
            raise UnknownItemsError([item_id])
        found = self.search_engine.similar_items(item_id, k)
        return [ScoredItem(i, s, {"similar": r}) for r, (i, s) in enumerate(zip(found.item_ids, found.scores))]

    def search(self, text: str | None, image: Image.Image | None, text_weight: float, image_weight: float, k: int) -> list[ScoredItem]:
        if self.search_engine.encoder is None:
            raise InvalidQueryError("text" if text is not None else "image", "this model bundle has no content encoder, so text/image queries are unavailable")
        total = text_weight + image_weight
        rerank = text_weight / total if total > 0 and text is not None and image is not None else None
        with self._lock:
            found = self.search_engine.search(text, image, k, rerank_text_weight=rerank)
        return [ScoredItem(i, s, {"search": r}) for r, (i, s) in enumerate(zip(found.item_ids, found.scores))]

    # -- catalogue and users ------------------------------------------------------------------

    def item(self, item_id: str) -> ItemInfo:
        row = self.data.item_index.get(item_id)
        if row is None:
            raise UnknownItemsError([item_id])
        attrs: dict[str, str | float | None] = {c: self._item_rows[c][row] for c in INFO_COLUMNS if c in self._item_rows}
        price = self.features.items.price[row]
        attrs["price"] = float(price) if np.isfinite(price) else None
        name = self._item_rows.get("prod_name", self._item_rows["item_id"])[row] or item_id
        return ItemInfo(item_id, name, attrs, bool(self._has_image[row]))

    def image_path(self, item_id: str) -> Path | None:
        if self.data.item_index.get(item_id) is None:
            return None
        path = self.images.path_for(item_id)
        return path if path is not None and path.is_file() else None

    def sample_users(self, n: int) -> list[UserSummary]:
        counts = self.data.interactions.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False]).head(n)
        return [s for s in (self.user(u) for u in counts["user_id"].to_list()) if s is not None]

    def user(self, user_id: str) -> UserSummary | None:
        if user_id not in self.data.user_index:
            return None
        h = self.data.interactions.filter(pl.col("user_id") == user_id).sort("timestamp", descending=True, maintain_order=True)
        recent = h["item_id"].unique(maintain_order=True).head(12).to_list()
        return UserSummary(user_id, h.height, recent)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def manifest_summary(bundle: Bundle) -> str:
    """One line for logs: version, run id, headline metrics."""
    m = bundle.manifest.get("metrics", {})
    return json.dumps({"version": bundle.version, "mlflow_run_id": bundle.manifest.get("mlflow_run_id"), "reranked_map": m.get("reranked_map")})
