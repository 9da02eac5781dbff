"""A small but real :class:`~serving.service.RecommendationService`, trained in under a minute.

It exists so the HTTP layer, the web page, their tests and the load benchmark run against
genuine behaviour before (and independently of) the full training pipeline: on the last
``days`` days of the log it fits the user's own history, implicit ALS (with fold-in for
visitors), TF-IDF/SVD text vectors and photo descriptors (``serving/dev_content.py``), merges the
candidate sources by reciprocal-rank fusion and reranks them with a LightGBM LambdaRank model
trained on the last day, using the project's one implementation of the ranking features
(``features/ranking.py``). Reasons come from the features and LightGBM ``pred_contrib``.

It is saved as a regular verified bundle (``training/bundle.py``) whose manifest says
``"service": "dev"``, so the server loads, verifies and hot-reloads it exactly like a trained one.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import polars as pl
from PIL import Image

from features.content.standin import catalogue_text
from features.content.vectors import ItemVectors, l2_normalise
from features.ranking import CandidateSet, RankingFeatures, UserState, anonymous_state, build_item_table, user_states
from recsys.config import ALSConfig, ProjectConfig
from recsys.data import ImageStore, TrainingData, load_dataset
from recsys.data.stats import item_counts, popularity_scores
from recsys.evaluation.metrics import top_k_indices
from recsys.models.history import HistoryRecommender
from recsys.models.implicit_models import ALSRecommender
from recsys.ranking.lambdarank import LambdaRankModel, LambdaRankParams
from serving.dev_content import PHOTO_DIM, TextEncoder, catalogue_photos, photo_descriptor
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
from training.bundle import Bundle, load_bundle, write_bundle

log = logging.getLogger(__name__)

SERVICE_KIND = "dev"
SOURCES = ["history", "als", "content", "popularity"]
SOURCE_WEIGHTS = {"history": 1.0, "als": 1.0, "content": 1.0, "popularity": 0.5}
RRF_K = 10.0
DISPLAY_COLUMNS = [
    "product_type_name", "product_group_name", "colour_group_name", "graphical_appearance_name",
    "department_name", "index_group_name", "section_name", "detail_desc",
]


@dataclass(frozen=True)
class DevSettings:
    """How much data and model the development service uses.

    Attributes:
        days: window length; the last day labels the reranker, the days before are the history.
        als_factors, als_iterations: ALS size.
        per_source: items each candidate source proposes before the merge.
        rerank_users: at most this many label-day users train the reranker.
        rerank_rounds: LightGBM boosting rounds.
        image_weight: weight of the photo part in the fused vector.
        seed: randomness of ALS, SVD and the user sample.
    """

    days: int = 3
    als_factors: int = 32
    als_iterations: int = 8
    per_source: int = 100
    rerank_users: int = 1200
    rerank_rounds: int = 60
    image_weight: float = 0.5
    seed: int = 0


class DevService:
    """History + ALS + content candidates, LightGBM reranking; implements RecommendationService."""

    def __init__(
        self,
        version: str,
        data: TrainingData,
        images: ImageStore,
        history: HistoryRecommender,
        als: ALSRecommender,
        text_encoder: TextEncoder,
        vectors: ItemVectors,
        ranker: LambdaRankModel,
        features: RankingFeatures,
        meta: dict[str, Any],
    ):
        self._version = version
        self.data = data
        self.images = images
        self.history = history
        self.als = als
        self.text_encoder = text_encoder
        self.vectors = vectors
        self.ranker = ranker
        self.features = features
        self.meta = meta
        self.settings = DevSettings(**meta["settings"])
        self.index = data.item_index
        self.item_frame = data.items
        self.filter_columns = [c for c in meta["categorical"] if c in self.item_frame.columns]
        self.popularity = popularity_scores(
            item_counts(data.interactions, self.index, data.as_of, 2), tie_breaker=item_counts(data.interactions, self.index)
        )
        self.mean_price = features.items.price
        self._user_attributes = meta["user_attributes"]
        self._lock = threading.Lock()  # LightGBM's predict is not documented as thread-safe
        name_column = meta.get("name_column")
        wanted = dict.fromkeys(DISPLAY_COLUMNS + meta["categorical"] + meta["text_columns"])
        shown = [c for c in wanted if c in self.item_frame.columns and c != name_column]
        # item() is on every response's hot path: plain dicts, built once
        self._records = self.item_frame.select(shown).to_dicts() if shown else [{} for _ in range(self.item_frame.height)]
        self._names = self.item_frame[name_column].cast(pl.String).to_list() if name_column in self.item_frame.columns else [None] * len(self.index)
        self._summaries = self._user_summaries()
        # Every known user's feature state, built once: per request only a copy is needed.
        users = self.data.user_index.ids.tolist()
        self._states = dict(zip(users, user_states(self.data, users, self._attribute_columns(), {"als": self._als_vectors(users)})))

    # ----------------------------------------------------------------------------- building

    @classmethod
    def train(cls, config: ProjectConfig, settings: DevSettings = DevSettings()) -> "DevService":
        """Fit every component on the last ``settings.days`` days of the configured data."""
        start = time.perf_counter()
        dataset = load_dataset(config.data)
        end = dataset.interactions["timestamp"].max()
        assert isinstance(end, dt.datetime)
        label_day = dt.datetime.combine(end.date(), dt.time())
        first = label_day - dt.timedelta(days=settings.days - 1)
        window = dataset.interactions.filter(pl.col("timestamp") >= first)
        train_part = window.filter(pl.col("timestamp") < label_day)
        labels = window.filter(pl.col("timestamp") >= label_day)
        items = dataset.items.filter(pl.col("item_id").is_in(window["item_id"].unique().implode()))
        data = TrainingData.build(train_part, items, dataset.users, as_of=label_day)
        log.info("dev service: %d history rows, %d items, %d users", train_part.height, data.n_items, data.n_users)

        history = HistoryRecommender(2).fit(data)
        als = ALSRecommender(ALSConfig(factors=settings.als_factors, iterations=settings.als_iterations, seed=settings.seed)).fit(data)
        text_columns = list(config.data.items.columns.text)
        encoder, text = TextEncoder.fit(catalogue_text(data.items, text_columns), PHOTO_DIM, settings.seed)
        has = data.items["has_image"].fill_null(False).to_numpy() if "has_image" in data.items.columns else np.zeros(data.n_items, bool)
        paths = [dataset.images.path_for(i) if h else None for i, h in zip(data.item_index.ids.tolist(), has)]
        photos, has_photo = catalogue_photos(paths)
        vectors = _item_vectors(data.item_index.ids, photos, text, has_photo, settings.image_weight)
        users = config.data.users
        meta = {
            "settings": asdict(settings),
            "categorical": list(config.data.items.columns.categorical),
            "name_column": config.data.items.columns.name,
            "text_columns": text_columns,
            "user_attributes": {"categorical": list(users.categorical) if users else [], "numeric": list(users.numeric) if users else []},
            "image_root": str(dataset.images.root) if dataset.images.root else None,
            "image_template": dataset.images.template,
            "data_fingerprint": dataset.fingerprint,
        }
        meta["user_categories"] = _user_categories(data, meta["user_attributes"]["categorical"])
        features = _ranking_features(data, vectors, als, meta)
        service = cls("dev-training", data, dataset.images, history, als, encoder, vectors, _untrained_ranker(features), features, meta)
        service.ranker = service._fit_ranker(labels, settings)
        log.info("dev service trained in %.1f s", time.perf_counter() - start)
        return service

    def _fit_ranker(self, labels: pl.DataFrame, settings: DevSettings) -> LambdaRankModel:
        """LambdaRank on the label day: candidates of warm users, label = bought that day."""
        bought = labels.group_by("user_id").agg(pl.col("item_id").unique())
        warm = bought.filter(pl.col("user_id").is_in(list(self.data.user_index.ids)))
        warm = warm.sample(n=min(settings.rerank_users, warm.height), seed=settings.seed) if warm.height else warm
        states = user_states(self.data, warm["user_id"].to_list(), self._attribute_columns(), {"als": self._als_vectors(warm["user_id"].to_list())})
        blocks, ys, groups = [], [], []
        for state, truth in zip(states, warm["item_id"].to_list()):
            cand = self._candidate_set(state, None, 2 * settings.per_source, False, {})
            y = np.isin(self.index.ids[cand.item_rows], truth).astype(np.float32)
            if y.sum() == 0:
                continue
            blocks.append(self.features.compute([state], [cand]))
            ys.append(y)
            groups.append(len(y))
        if not blocks:
            raise ValueError("no label-day user has a bought item among their candidates: the window is too small")
        params = LambdaRankParams(num_leaves=15, n_estimators=settings.rerank_rounds, min_child_samples=20, seed=settings.seed, num_threads=1)
        model = LambdaRankModel(self.features.feature_names, self.features.categorical_features, params)
        return model.fit(np.concatenate(blocks), np.concatenate(ys), np.asarray(groups), log_every=0)

    # ----------------------------------------------------------------------------- bundle I/O

    def save_bundle(self, root: Path, version: str | None = None) -> Bundle:
        """Write the service as a verified bundle below ``root`` (and move ``latest`` to it)."""

        def populate(d: Path) -> None:
            (d / "data").mkdir()
            self.data.interactions.write_parquet(d / "data" / "interactions.parquet")
            self.data.items.write_parquet(d / "data" / "items.parquet")
            if self.data.users is not None:
                self.data.users.write_parquet(d / "data" / "users.parquet")
            self.history.save(d / "history")
            self.als.save(d / "als")
            (d / "content").mkdir()
            self.text_encoder.save(d / "content" / "text_encoder.npz")
            self.vectors.save(d / "content" / "vectors.npz")
            self.ranker.save(d / "ranker")
            (d / "dev.json").write_text(json.dumps({**self.meta, "as_of": self.data.as_of.isoformat()}, indent=2))

        return write_bundle(root, populate, {"service": SERVICE_KIND, "data_fingerprint": self.meta["data_fingerprint"]}, version)

    @classmethod
    def load(cls, path: Path) -> "DevService":
        """Load and verify (checksums) a bundle written by :meth:`save_bundle`.

        Raises:
            BundleError: missing files, checksum mismatch, or not a dev bundle.
        """
        bundle = load_bundle(path)
        meta = json.loads(bundle.file("dev.json").read_text())
        users_path = bundle.path / "data" / "users.parquet"
        data = TrainingData.build(
            pl.read_parquet(bundle.file("data/interactions.parquet")),
            pl.read_parquet(bundle.file("data/items.parquet")),
            pl.read_parquet(users_path) if users_path.is_file() else None,
            as_of=dt.datetime.fromisoformat(meta["as_of"]),
        )
        als = ALSRecommender.load(bundle.path / "als")
        vectors = ItemVectors.load(bundle.file("content/vectors.npz"))
        if not np.array_equal(als.item_index.ids, data.item_index.ids):
            raise ValueError(f"bundle {bundle.version}: ALS items do not match the catalogue slice")
        images = ImageStore(Path(meta["image_root"]) if meta["image_root"] else None, meta["image_template"])
        return cls(
            bundle.version, data, images, HistoryRecommender.load(bundle.path / "history"), als,
            TextEncoder.load(bundle.file("content/text_encoder.npz")), vectors, LambdaRankModel.load(bundle.path / "ranker"),
            _ranking_features(data, vectors, als, meta), meta,
        )

    # ----------------------------------------------------------------------------- the protocol

    @property
    def version(self) -> str:
        return self._version

    def candidates(self, query: Query) -> list[ScoredItem]:
        state, query_vector, from_query = self._state_for(query)
        cand = self._candidate_set(state, query_vector, query.k, query.exclude_seen, query.filters, from_query)
        return [
            ScoredItem(str(self.index.ids[row]), float(score), {s: int(cand.ranks[s][j]) for s in SOURCES if cand.ranks[s][j] >= 0})
            for j, (row, score) in enumerate(zip(cand.item_rows, cand.scores["merged"]))
        ]

    def recommendations(self, query: Query, n_candidates: int = 200) -> list[RankedItem]:
        state, query_vector, from_query = self._state_for(query)
        cand = self._candidate_set(state, query_vector, max(n_candidates, query.k), query.exclude_seen, query.filters, from_query)
        if not len(cand.item_rows):
            return []
        x = self.features.compute([state], [cand])
        with self._lock:
            scores = self.ranker.predict(x)
            top = np.argsort(-scores, kind="stable")[: query.k]
            contrib = self.ranker.contributions(x[top])
        names = self.features.feature_names
        col = {n: i for i, n in enumerate(names)}
        # A visitor described only by words or a photo: "similarity" means similarity to that query.
        text_sim = self._query_similarity(query_vector, cand.item_rows[top], "text") if from_query and query_vector is not None else None
        image_sim = self._query_similarity(query_vector, cand.item_rows[top], "image") if from_query and query_vector is not None else None
        out = []
        for n, j in enumerate(top):
            c = contrib[n, :-1]
            largest = np.argsort(-np.abs(c), kind="stable")[:5]
            reasons = Reasons(
                sources={s: int(cand.ranks[s][j]) for s in SOURCES if cand.ranks[s][j] >= 0},
                image_similarity=_finite(image_sim[n] if image_sim is not None else x[j, col["sim_image_centroid"]]),
                text_similarity=_finite(text_sim[n] if text_sim is not None else x[j, col["sim_text_centroid"]]),
                contributions=[(names[i], round(float(c[i]), 4)) for i in largest if c[i] != 0],
            )
            out.append(RankedItem(str(self.index.ids[cand.item_rows[j]]), float(scores[j]), reasons))
        return out

    def similar(self, item_id: str, k: int) -> list[ScoredItem]:
        row = self._row(item_id)
        sims = self.vectors.fused @ self.vectors.fused[row]
        sims[row] = -np.inf
        top = top_k_indices(sims, k)
        return [ScoredItem(str(self.index.ids[r]), float(sims[r]), {"content": n}) for n, r in enumerate(top)]

    def search(self, text: str | None, image: Image.Image | None, text_weight: float, image_weight: float, k: int) -> list[ScoredItem]:
        """Two stages: fetch 300 by the equally weighted query, then order by the requested weights."""
        vector = self._query_vector(text, image)
        if vector is None:
            raise InvalidQueryError("text", "give a text or an image to search for")
        first = top_k_indices(self.vectors.fused @ _fuse_query(vector, 0.5, 0.5), max(300, k))
        text_part = self._query_similarity(vector, first, "text")
        image_part = self._query_similarity(vector, first, "image")
        total = text_weight + image_weight if text_weight + image_weight > 0 else 1.0
        score = (text_weight * np.nan_to_num(text_part) + image_weight * np.nan_to_num(image_part)) / total
        order = np.argsort(-score, kind="stable")[:k]
        return [ScoredItem(str(self.index.ids[first[j]]), float(score[j]), {"search": int(j)}) for j in order]

    def item(self, item_id: str) -> ItemInfo:
        row = self._row(item_id)
        attributes: dict[str, str | float | None] = dict(self._records[row])
        price = self.mean_price[row]
        attributes["price"] = round(float(price), 4) if np.isfinite(price) else None
        return ItemInfo(item_id, self._names[row] or item_id, attributes, self.image_path(item_id) is not None)

    def image_path(self, item_id: str) -> Path | None:
        row = self.vectors.index.get(item_id)
        if row is None or not self.vectors.has_image[row]:
            return None
        path = self.images.path_for(item_id)
        return path if path is not None and path.is_file() else None

    def sample_users(self, n: int) -> list[UserSummary]:
        return self._summaries[:n]

    def user(self, user_id: str) -> UserSummary | None:
        row = self.data.user_index.get(user_id)
        if row is None:
            return None
        items = self._history_rows(row)
        return UserSummary(user_id, int(self.data.user_items[row].sum()), [str(self.index.ids[r]) for r in items[:20]])

    # ----------------------------------------------------------------------------- internals

    def _row(self, item_id: str) -> int:
        row = self.index.get(item_id)
        if row is None:
            raise UnknownItemsError([item_id])
        return row

    def _attribute_columns(self) -> list[str]:
        return self._user_attributes["categorical"] + self._user_attributes["numeric"]

    def _als_vectors(self, user_ids: list[str]) -> dict[str, np.ndarray]:
        rows = self.als.user_index.lookup(user_ids)
        return {u: self.als.user_factors[r] for u, r in zip(user_ids, rows) if r >= 0}

    def _history_rows(self, user_row: int) -> list[int]:
        """The user's items, most recent first (the history model's order)."""
        h = self.history.history[user_row]
        return [int(i) for i in h.indices[np.argsort(-h.data, kind="stable")]]

    def _state_for(self, query: Query) -> tuple[UserState, np.ndarray | None, bool]:
        """The user's feature state (known customer, or a visitor from context), any query vector, and
        whether the state's history was made up from the query alone."""
        unknown = [i for i in query.recent_item_ids if i not in self.index]
        if unknown:
            raise UnknownItemsError(unknown)
        for column in query.filters:
            if column not in self.filter_columns:
                raise InvalidQueryError(f"filters.{column}", f"unknown filter column; allowed: {', '.join(self.filter_columns)}")
        query_vector = self._query_vector(query.text, query.image, query.text_weight, query.image_weight)
        if query.user_id is not None and query.user_id in self._states:
            state = copy.copy(self._states[query.user_id])  # shallow: the arrays are replaced, never mutated
            if query.recent_item_ids:  # fresh context on top of the stored history
                extra = self.index.lookup(list(query.recent_item_ids))
                state.item_rows = np.concatenate([state.item_rows, extra])
                state.days_ago = np.concatenate([state.days_ago, np.zeros(len(extra))])
                state.prices = np.concatenate([state.prices, np.full(len(extra), np.nan)])
            return state, query_vector, False
        rows = [int(r) for r in self.index.lookup(list(query.recent_item_ids))]
        from_query = not rows and query_vector is not None
        if from_query:
            # A visitor known only by words or a photo: their closest catalogue items stand in for a
            # history, so the similarity features the ranker was trained on mean "close to the query".
            rows = [int(r) for r in top_k_indices(self.vectors.fused @ _fuse_query(query_vector, query.text_weight, query.image_weight), 3)[::-1]]
        vector = self.als.fold_in([self.index.ids[r] for r in rows]) if rows else None
        return anonymous_state(rows, self.data.as_of, {"als": vector} if vector is not None else None), query_vector, from_query

    def _query_vector(self, text: str | None, image: Image.Image | None, text_weight: float = 0.5, image_weight: float = 0.5) -> np.ndarray | None:
        """[photo part | text part] of a query (zeros for a missing part), or None without text and image."""
        if not (text and text.strip()) and image is None:
            return None
        d_img, d_txt = self.vectors.image.shape[1], self.vectors.text.shape[1]
        photo = photo_descriptor(image) if image is not None else np.zeros(d_img, np.float32)
        words = self.text_encoder.encode([text])[0] if text and text.strip() else np.zeros(d_txt, np.float32)
        return np.concatenate([photo, words])

    def _query_similarity(self, query_vector: np.ndarray, rows: np.ndarray, kind: str) -> np.ndarray:
        d_img = self.vectors.image.shape[1]
        part = query_vector[:d_img] if kind == "image" else query_vector[d_img:]
        if not part.any():
            return np.full(len(rows), np.nan)
        sims = getattr(self.vectors, kind)[rows] @ part
        return np.where(self.vectors.has_image[rows], sims, np.nan) if kind == "image" else sims

    def _candidate_set(
        self, state: UserState, query_vector: np.ndarray | None, k: int, exclude_seen: bool,
        filters: dict[str, tuple[str, ...]], pseudo_history: bool = False,
    ) -> CandidateSet:
        """Each source scores the catalogue; reciprocal-rank fusion merges the top ``per_source`` of each.

        ``pseudo_history``: the state's items stand for a query, not purchases (no "history" source).
        """
        n = len(self.index)
        allowed = np.ones(n, dtype=bool)
        for column, values in filters.items():
            allowed &= self.item_frame[column].cast(pl.String).is_in(list(values)).fill_null(False).to_numpy()[:n]
        if exclude_seen and len(state.item_rows):
            allowed[state.item_rows] = False
        per_source = max(self.settings.per_source, k)
        source_scores: dict[str, np.ndarray] = {}
        hist = state.item_rows
        if len(hist) and not pseudo_history:
            s = np.full(n, -np.inf)
            # most recent last in the state: later purchases score higher
            s[hist] = np.arange(1, len(hist) + 1, dtype=np.float64)
            source_scores["history"] = s
            source_scores["content"] = self.vectors.fused @ self.vectors.fused[hist[-10:]].mean(axis=0)
        if query_vector is not None:  # a stated preference outweighs the history centroid
            source_scores["content"] = self.vectors.fused @ _fuse_query(query_vector, 0.5, 0.5)
        user_vector = state.vectors.get("als")
        if user_vector is not None and np.any(user_vector):
            source_scores["als"] = self.als.item_factors @ user_vector
        source_scores["popularity"] = self.popularity.astype(np.float64)

        merged = np.zeros(n)
        ranks = {s: np.full(n, -1, dtype=np.int64) for s in SOURCES}
        scores = {s: np.full(n, np.nan) for s in SOURCES}
        for source, s in source_scores.items():
            s = np.where(allowed, s, -np.inf)
            top = top_k_indices(s, per_source)
            top = top[np.isfinite(s[top])]
            ranks[source][top] = np.arange(len(top))
            scores[source][top] = s[top]
            merged[top] += SOURCE_WEIGHTS[source] / (RRF_K + np.arange(len(top)))
        found = np.flatnonzero(merged > 0)
        order = found[np.argsort(-merged[found], kind="stable")][:k]
        return CandidateSet(order, {s: r[order] for s, r in ranks.items()}, {**{s: v[order] for s, v in scores.items()}, "merged": merged[order]})

    def _user_summaries(self) -> list[UserSummary]:
        """Customers with the richest photographed history first (deterministic)."""
        e = self.data.encoded.select("user_id", "item_idx").unique()
        has = self.vectors.has_image[e["item_idx"].to_numpy()]
        stats = (
            e.with_columns(pl.Series("photo", has))
            .group_by("user_id")
            .agg(pl.len().alias("n"), pl.col("photo").sum().alias("photos"))
            .filter(pl.col("photos") >= 4, pl.col("n") <= 40)  # very long baskets look like resellers
            .sort(["photos", "n", "user_id"], descending=[True, True, False])
            .head(24)
        )
        return [s for s in (self.user(u) for u in stats["user_id"].to_list()) if s is not None]


def ensure_dev_bundle(config: ProjectConfig, settings: DevSettings = DevSettings()) -> Path:
    """The development bundles folder ``<work_dir>/dev_bundles``, trained there first if it is empty."""
    root = config.work_path / "dev_bundles"
    if not (root / "latest").is_file():
        log.info("no development bundle in %s: training one on the last %d days (~30 s)", root, settings.days)
        DevService.train(config, settings).save_bundle(root)
    return root


def _finite(value: float | np.floating | None) -> float | None:
    return round(float(value), 4) if value is not None and np.isfinite(value) else None


def _fuse_query(vector: np.ndarray, text_weight: float, image_weight: float) -> np.ndarray:
    """Weight the photo and text halves of a query like :func:`_item_vectors` weights items."""
    d = len(vector) // 2
    total = text_weight + image_weight if text_weight + image_weight > 0 else 1.0
    return np.concatenate([np.sqrt(image_weight / total) * vector[:d], np.sqrt(text_weight / total) * vector[d:]])


def _item_vectors(ids: np.ndarray, photos: np.ndarray, text: np.ndarray, has_photo: np.ndarray, image_weight: float) -> ItemVectors:
    """Fused = [sqrt(w) photo | sqrt(1-w) text]: photo and text live in separate spaces, and this
    concatenation makes a fused cosine the weighted mean of the photo and the text cosines."""
    w = np.where(has_photo, image_weight, 0.0)[:, None]
    fused = l2_normalise(np.concatenate([np.sqrt(w) * photos, np.sqrt(1 - w) * text], axis=1))
    return ItemVectors(np.asarray(ids, dtype=str), photos * has_photo[:, None], text, fused, has_photo, "dev-tfidf-photo")


def _user_categories(data: TrainingData, columns: list[str]) -> dict[str, list[str]]:
    if data.users is None:
        return {}
    return {c: sorted(v for v in data.users[c].cast(pl.String).unique().to_list() if v is not None) for c in columns if c in data.users.columns}


def _ranking_features(data: TrainingData, vectors: ItemVectors, als: ALSRecommender, meta: dict[str, Any]) -> RankingFeatures:
    categorical = [c for c in meta["categorical"] if c in data.items.columns]
    table = build_item_table(data, categorical, vectors, {"als": als.item_factors})
    return RankingFeatures(table, meta["user_categories"], meta["user_attributes"]["numeric"], SOURCES)


def _untrained_ranker(features: RankingFeatures) -> LambdaRankModel:
    return LambdaRankModel(features.feature_names, features.categorical_features)
