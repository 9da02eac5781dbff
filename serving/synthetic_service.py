"""A synthetic large catalogue behind the real HTTP app: for the serving benchmark at 1M items.

A bundle with ``"service": "synthetic"`` (written by ``bench/synthetic_catalogue.py``) holds
synthetic item-tower vectors in a real :class:`~recsys.index.faiss_index.ItemIndex` (HNSW), synthetic
user vectors, and a real :class:`~recsys.models.history.HistoryRecommender` fitted on synthetic
purchases. This service answers ``/v1/candidates`` with the production
:class:`~recsys.candidates.generator.CandidateGenerator` (its ``history``, ``two_tower`` and
``popularity`` sources and the same reciprocal-rank merge); only the two-tower *model* is absent:
its user vectors are a table. There is no ranker, content encoder or photo, so
``/v1/recommendations`` and ``/v1/search`` answer 422 saying so. Nothing here is used by a trained
bundle.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl
from PIL import Image

from recsys.bundle import Bundle, load_bundle
from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.query_candidates import QueryCandidates
from recsys.config import CandidatesConfig, IndexConfig
from recsys.data.interactions import IdIndex
from recsys.index.faiss_index import ItemIndex
from recsys.models.history import HistoryRecommender
from serving.service import (
    InvalidQueryError,
    ItemInfo,
    Query,
    RankedItem,
    ScoredItem,
    UnknownItemsError,
    UserSummary,
)

log = logging.getLogger(__name__)

FILTERABLE = ("product_type_name",)


@dataclass
class UserVectorTable:
    """What the two-tower source reads from a fitted two-tower: user ids and their tower vectors."""

    user_index: IdIndex
    user_vectors: np.ndarray


class SyntheticService:
    """Serves a synthetic catalogue bundle (see the module docstring)."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        path = bundle.path
        meta = bundle.manifest["synthetic"]
        self.meta = meta
        gen = CandidateGenerator(CandidatesConfig(**meta["candidates"]), IndexConfig(**meta["index"]))
        gen.history = HistoryRecommender.load(path / "history")
        with np.load(path / "users.npz", allow_pickle=False) as z:
            gen.two_tower = UserVectorTable(gen.history.user_index, z["user_vectors"])  # type: ignore[assignment]
            self._sample_users = z["sample_users"].tolist()
        if len(gen.two_tower.user_vectors) != len(gen.history.user_index):
            raise ValueError(f"{path}: {len(gen.two_tower.user_vectors)} user vectors for {len(gen.history.user_index)} users")
        gen.tower_index = ItemIndex.load(path / "index")
        gen.tower_index.set_breadth(IndexConfig(**meta["index"]).breadth(gen.tower_index.kind))
        self.generator = gen
        self.item_index = gen.history.item_index
        if not np.array_equal(gen.tower_index.item_ids, self.item_index.ids):
            raise ValueError(f"{path}: index rows and catalogue rows disagree")
        items = pl.read_parquet(path / "items.parquet")
        self._columns = {c: items[c].cast(pl.String).to_list() for c in ("prod_name", *FILTERABLE)}
        # Rows, filters, the repeat policy and visitors' sources: the same code as a trained bundle's.
        self.stage = QueryCandidates(gen, {c: self._columns[c] for c in FILTERABLE})
        faiss.omp_set_num_threads(max(1, int(os.environ.get("RECSYS_SERVE_THREADS", "0")) or (os.cpu_count() or 1)))
        log.info("serving synthetic bundle %s: %d items, %d users, %s index, search breadth %s", bundle.version, len(self.item_index),
                 len(gen.history.user_index), gen.tower_index.kind, gen.tower_index.breadth)

    @classmethod
    def load(cls, path: Path, version: str | None = None) -> "SyntheticService":
        return cls(load_bundle(path, version))

    @property
    def version(self) -> str:
        return self.bundle.version

    def candidates(self, query: Query) -> list[ScoredItem]:
        return self.stage.candidates(query)

    def recommendations(self, query: Query, n_candidates: int = 200) -> list[RankedItem]:
        raise InvalidQueryError("n_candidates", "the synthetic benchmark catalogue has no reranker; use /v1/candidates")

    def similar(self, item_id: str, k: int) -> list[ScoredItem]:
        row = self.item_index.get(item_id)
        if row is None:
            raise UnknownItemsError([item_id])
        index = self.generator.tower_index
        rows, scores = index.search(index.vector(int(row))[None], k + 1)
        found = [(str(index.item_ids[r]), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0 and r != row][:k]
        return [ScoredItem(i, s, {"similar": n}) for n, (i, s) in enumerate(found)]

    def search(self, text: str | None, image: Image.Image | None, text_weight: float, image_weight: float, k: int) -> list[ScoredItem]:
        raise InvalidQueryError("text" if text is not None else "image", "the synthetic catalogue has no content encoder")

    def item(self, item_id: str) -> ItemInfo:
        row = self.item_index.get(item_id)
        if row is None:
            raise UnknownItemsError([item_id])
        return ItemInfo(item_id, self._columns["prod_name"][row], {c: self._columns[c][row] for c in FILTERABLE}, False)

    def image_path(self, item_id: str) -> Path | None:
        return None

    def sample_users(self, n: int) -> list[UserSummary]:
        return [s for s in (self.user(u) for u in self._sample_users[:n]) if s is not None]

    def user(self, user_id: str) -> UserSummary | None:
        h = self.generator.history
        row = h.user_index.get(user_id)
        if row is None:
            return None
        start, end = h.history.indptr[row], h.history.indptr[row + 1]
        cols, vals = h.history.indices[start:end], h.history.data[start:end]
        recent = h.item_index.ids[cols[np.lexsort((cols, -vals))][:12]].tolist()
        return UserSummary(user_id, int(h.seen[row].sum()), recent)


def synthetic_summary(bundle: Bundle) -> str:
    return json.dumps({"version": bundle.version, "synthetic": {k: bundle.manifest["synthetic"].get(k) for k in ("n_items", "dim", "n_users")}})
