"""The production :class:`~serving.service.RecommendationService`: everything loaded from one model bundle.

The bundle's fold (its ``data/`` files, candidate generator, content vectors and encoder, ranker)
becomes a :class:`~features.engine.RecommendationEngine`, the same object offline evaluation
ranks with; this class only adds what people see about items and customers, and forwards queries.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl
from PIL import Image

from features.content.backends import build_encoder
from features.content.encoders import ContentEncoder
from features.engine import RecommendationEngine
from recsys.bundle import Bundle, load_bundle
from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.precomputed import PRECOMPUTED_DIR, PrecomputedCandidates
from recsys.config import ProjectConfig
from recsys.data import ImageStore, TrainingData
from recsys.ranking.lambdarank import LambdaRankModel
from recsys.vectors import ItemVectors
from serving.service import ItemInfo, Query, RankedItem, ScoredItem, UnknownItemsError, UserSummary

log = logging.getLogger(__name__)

SAMPLE_MAX_ITEMS = 40
SAMPLE_MIN_PHOTOS = 4


@dataclass(frozen=True)
class ItemInfoColumns:
    """Which catalogue columns people see about an item (from the config, never a data set's names).

    Attributes:
        name: the display-name column, or None (the id is shown).
        attributes: the categorical and text columns shown beside it.
    """

    name: str | None
    attributes: tuple[str, ...]

    @classmethod
    def from_config(cls, config: ProjectConfig, present: list[str]) -> ItemInfoColumns:
        """The configured name, categorical and text columns that the catalogue has.

        Args:
            config: the project config (``data.items.columns``).
            present: the catalogue's columns.

        Returns:
            The columns to show.
        """
        cols = config.data.items.columns
        shown = dict.fromkeys(c for c in (*cols.categorical, *cols.text) if c in present and c != cols.name)
        return cls(cols.name if cols.name in present else None, tuple(shown), tuple(c for c in cols.display.values() if c in present))

    display: tuple[str, ...] = ()

    def all(self) -> list[str]:
        """Every column to read (the name first)."""
        return list(dict.fromkeys(([self.name] if self.name else []) + list(self.attributes) + list(self.display)))


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
        vectors = ItemVectors.load(path / "item_vectors.npz") if (path / "item_vectors.npz").is_file() else None
        # CPU threads per request for LightGBM / FAISS: the cores divided among the server's workers.
        self.threads = max(1, int(os.environ.get("RECSYS_SERVE_THREADS", "0")) or (os.cpu_count() or 1))
        faiss.omp_set_num_threads(self.threads)
        self.engine = RecommendationEngine(
            self.config, self.data, CandidateGenerator.load(path / "generator"), vectors,
            LambdaRankModel.load(path / "ranker"), self._encoder(), self.threads, self._precomputed(),
        )
        self.engine.warm_up()  # at load, not in the first request
        root = bundle.manifest.get("image_root")
        self.images = ImageStore(Path(root) if root else None, bundle.manifest.get("image_template", "{item_id}.jpg"))
        self.info_columns = ItemInfoColumns.from_config(self.config, items.columns)
        self._item_rows = {c: items[c].cast(pl.String).to_list() for c in self.info_columns.all() if c in items.columns}
        self._has_image = self.data.items["has_image"].to_numpy() if "has_image" in self.data.items.columns else np.zeros(self.data.n_items, bool)
        log.info("serving bundle %s: %d items, %d users with history", bundle.version, self.data.n_items, self.data.n_users)

    @classmethod
    def load(cls, path: Path, version: str | None = None) -> BundleService:
        """Verify (checksums) and load a bundle directory or the ``latest`` under a bundles folder."""
        return cls(load_bundle(path, version))

    def _precomputed(self) -> PrecomputedCandidates | None:
        folder = self.bundle.path / PRECOMPUTED_DIR
        if not folder.is_dir():
            log.info("bundle has no precomputed candidates: every customer's list is computed per request")
            return None
        return PrecomputedCandidates.load(folder)

    def _encoder(self) -> ContentEncoder | None:
        heads = self.bundle.path / "content_heads"
        if self.config.content.backend in ("aligned", "standin") and not heads.is_dir():
            log.warning("bundle has no content encoder: text/image search is disabled")
            return None
        return build_encoder(self.config.content, self.config.work_path, heads if heads.is_dir() else None)

    @property
    def version(self) -> str:
        return self.bundle.version

    # -- queries: the engine answers --------------------------------------------------------------

    def candidates(self, query: Query) -> list[ScoredItem]:
        return self.engine.candidates(query)

    def recommendations(self, query: Query, n_candidates: int = 200) -> list[RankedItem]:
        return self.engine.recommend(query, n_candidates)

    def feature_rows(self, user_id: str, item_ids: list[str]) -> np.ndarray:
        """The reranker's feature rows for a known user and given items, by the serving path (parity tests)."""
        return self.engine.feature_rows(user_id, item_ids)

    def similar(self, item_id: str, k: int) -> list[ScoredItem]:
        return self.engine.similar(item_id, k)

    def search(self, text: str | None, image: Image.Image | None, text_weight: float, image_weight: float, k: int) -> list[ScoredItem]:
        return self.engine.search(text, image, text_weight, image_weight, k)

    # -- catalogue and users ------------------------------------------------------------------

    def item(self, item_id: str) -> ItemInfo:
        row = self.data.item_index.get(item_id)
        if row is None:
            raise UnknownItemsError([item_id])
        attrs: dict[str, str | float | None] = {c: self._item_rows[c][row] for c in self.info_columns.attributes if c in self._item_rows}
        price = self.engine.features.items.price[row]
        attrs["price"] = float(price) if np.isfinite(price) else None
        name_column = self.info_columns.name
        name = (self._item_rows[name_column][row] if name_column in self._item_rows else None) or item_id
        display = {role: self._item_rows[c][row] for role, c in self.config.data.items.columns.display.items() if c in self._item_rows}
        return ItemInfo(item_id, name, attrs, bool(self._has_image[row]), {k: v for k, v in display.items() if v})

    def image_path(self, item_id: str) -> Path | None:
        if self.data.item_index.get(item_id) is None:
            return None
        path = self.images.path_for(item_id)
        return path if path is not None and path.is_file() else None

    def sample_users(self, n: int) -> list[UserSummary]:
        """Customers whose history shows best on the page: most items with a photo first.

        Very long histories (over ``SAMPLE_MAX_ITEMS`` distinct items) look like resellers and are
        left out; customers with fewer than ``SAMPLE_MIN_PHOTOS`` photographed items come after the rest.
        """
        e = self.data.encoded.select("user_id", "item_idx").unique()
        stats = (
            e.with_columns(pl.Series("photo", self._has_image[e["item_idx"].to_numpy()]))
            .group_by("user_id")
            .agg(pl.len().alias("items"), pl.col("photo").sum().alias("photos"))
            .filter(pl.col("items") <= SAMPLE_MAX_ITEMS)
            .with_columns((pl.col("photos") >= SAMPLE_MIN_PHOTOS).alias("shows"))
            .sort(["shows", "photos", "items", "user_id"], descending=[True, True, True, False])
            .head(n)
        )
        return [s for s in (self.user(u) for u in stats["user_id"].to_list()) if s is not None]

    def user(self, user_id: str) -> UserSummary | None:
        if user_id not in self.data.user_index:
            return None
        h = self.data.interactions.filter(pl.col("user_id") == user_id).sort("timestamp", descending=True, maintain_order=True)
        recent = h["item_id"].unique(maintain_order=True).head(12).to_list()
        return UserSummary(user_id, h.height, recent)


def manifest_summary(bundle: Bundle) -> str:
    """One line for logs: version, run id, headline metrics."""
    m = bundle.manifest.get("metrics", {})
    return json.dumps({"version": bundle.version, "mlflow_run_id": bundle.manifest.get("mlflow_run_id"), "reranked_map": m.get("reranked_map")})
