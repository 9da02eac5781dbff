"""The recommendation engine: one object turns a query into a ranked list with reasons.

Candidates (:class:`~recsys.candidates.query_candidates.QueryCandidates`), the repeat policy and
filters, the ranking features (:mod:`features.ranking`, :mod:`features.ranking_examples`) and the
LightGBM ranker, plus content search and similar items. The HTTP service
(``serving/bundle_service.py``) only translates requests into :class:`~recsys.query.Query`
objects; the offline evaluation of ``recsys train`` ranks its test users with
:meth:`RecommendationEngine.rank_users`, over the same features and ranker.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
from PIL import Image

from features.content.encoders import ContentEncoder
from features.content.search import ContentSearch
from features.ranking import UserState, UserStateLookup, anonymous_state, user_states
from features.ranking_examples import (
    build_examples,
    candidate_set,
    ease_user_vector,
    feature_builder,
    rerank,
    user_attribute_columns,
    user_vectors,
)
from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.merge import Candidate
from recsys.candidates.precomputed import PrecomputedCandidates
from recsys.candidates.query_candidates import QueryCandidates, scored
from recsys.config import ProjectConfig
from recsys.data.interactions import TrainingData
from recsys.query import InvalidQueryError, Query, RankedItem, Reasons, ScoredItem, UnknownItemsError
from recsys.ranking.lambdarank import LambdaRankModel
from recsys.vectors import ItemVectors

CONTRIBUTIONS_SHOWN = 5
RANK_BLOCK = 2048  # users whose feature rows are built and ranked at once in batch ranking
QUERY_PROFILE_ITEMS = 3  # search hits that stand in for a words-or-photo visitor's history in the features


class RecommendationEngine:
    """Candidates, features and ranker of one fitted fold behind one query-to-list interface.

    Read-only after construction, so it is safe across threads (the text encoder is locked).

    Args:
        config: the project config the fold was trained with.
        data: the fold's training window (history before ``data.as_of``).
        generator: the fold's fitted candidate generator.
        vectors: the catalogue's content vectors, or None (no content features, search or similar items).
        ranker: the trained LambdaRank model.
        encoder: embeds search words and photos into ``vectors``' space; None disables text/image queries.
        threads: CPU threads per request for LightGBM.
        precomputed: every customer's merged candidates from training (None: all computed live).
    """

    def __init__(
        self,
        config: ProjectConfig,
        data: TrainingData,
        generator: CandidateGenerator,
        vectors: ItemVectors | None,
        ranker: LambdaRankModel,
        encoder: ContentEncoder | None = None,
        threads: int = 1,
        precomputed: PrecomputedCandidates | None = None,
    ):
        self.config, self.data, self.generator, self.vectors, self.ranker = config, data, generator, vectors, ranker
        self.threads = threads
        self.features = feature_builder(config, data, generator, vectors)
        if ranker.feature_names != self.features.feature_names:
            raise ValueError("the ranker was trained on other feature columns than this fold's feature builder makes")
        self.search_engine = ContentSearch(vectors, encoder, config.content.search) if vectors is not None else None
        columns = [c for c in config.data.items.columns.categorical if c in data.items.columns]
        self.candidate_stage = QueryCandidates(generator, {c: data.items[c].cast(pl.String).to_list() for c in columns}, precomputed=precomputed)
        self._attributes = user_attribute_columns(config)
        self._states_lookup: UserStateLookup | None = None  # see :meth:`warm_up`
        self._states_lock = threading.Lock()
        self._user_factors = [
            (name, model.user_index, getattr(model, matrix))
            for name, model, matrix in (("als", getattr(generator, "als", None), "user_factors"), ("two_tower", getattr(generator, "two_tower", None), "user_vectors"))
            if model is not None
        ]
        self._encoder_lock = threading.Lock()  # the encoders' torch modules are not re-entrant

    def warm_up(self) -> None:
        """Do the per-request work that can be done once: group every customer's window history.

        A server calls this at load, before its first request; batch ranking (:meth:`rank_users`,
        offline evaluation) never needs it, and at the 100x rung it held 1.2 GB of evaluate's peak.
        """
        self._user_states()

    def _user_states(self) -> UserStateLookup:
        if self._states_lookup is None:
            with self._states_lock:
                if self._states_lookup is None:
                    self._states_lookup = UserStateLookup(self.data, self._attributes)
        return self._states_lookup

    # -- a query ------------------------------------------------------------------------------

    def candidates(self, query: Query) -> list[ScoredItem]:
        """The query's merged candidates (after filters and the repeat policy), best first.

        Args:
            query: a known customer, or a visitor by recent items, words and/or a photo.

        Returns:
            Up to ``query.k`` items with their fused score and each source's 0-based rank.

        Raises:
            UnknownItemsError: a recent item is not in the catalogue.
            InvalidQueryError: an unknown filter column, or words/a photo without a content encoder.
        """
        self.candidate_stage.check(query)
        size = self.candidate_stage.size_for(query, query.k)
        cands = self.candidate_stage.filtered(self._merged(query, size), query)
        return [scored(c) for c in cands[: query.k]]

    def recommend(self, query: Query, n_candidates: int = 200) -> list[RankedItem]:
        """The query's candidates reranked by the ranker, each with the reasons behind it.

        Args:
            query: as for :meth:`candidates`.
            n_candidates: candidates the ranker scores.

        Returns:
            Up to ``query.k`` items, best first; reasons name the sources, the content similarities
            and the largest feature contributions.

        Raises:
            UnknownItemsError, InvalidQueryError: as for :meth:`candidates`.
        """
        self.candidate_stage.check(query)
        wanted = max(n_candidates, query.k)
        hits = self._search_hits(query, self.candidate_stage.size_for(query, wanted))
        cands = self._merged(query, self.candidate_stage.size_for(query, wanted), hits)
        cands = self.candidate_stage.filtered(cands, query)[:wanted]
        if not cands:
            return []
        x = self._feature_matrix(self._state(query, hits), cands)
        # Rank every candidate by the booster's score (cheap), then explain only the k returned:
        # TreeSHAP contributions cost ~0.4-0.8 ms a row, i.e. most of a request for 200 rows.
        scores = self.ranker.predict(x, threads=self.threads)
        if hits is not None and not query.recent_item_ids:
            scores = _with_request_order(scores, len(cands), self.generator.config.rrf_k)
        order = np.argsort(-scores, kind="stable")[: query.k]
        contrib = self.ranker.contributions(x[order], threads=self.threads)
        names = self.features.feature_names
        col = {n: i for i, n in enumerate(names)}
        out = []
        for i, j in enumerate(order):
            top = np.argsort(-np.abs(contrib[i, :-1]), kind="stable")[:CONTRIBUTIONS_SHOWN]
            reasons = Reasons(
                sources={s: r - 1 for s, r in cands[j].ranks.items()},
                image_similarity=_finite(x[j, col["sim_image_centroid"]]),
                text_similarity=_finite(x[j, col["sim_text_centroid"]]),
                contributions=[(names[t], float(contrib[i, t])) for t in top],
            )
            out.append(RankedItem(cands[j].item_id, float(scores[j]), reasons))
        return out

    def feature_rows(self, user_id: str, item_ids: list[str]) -> np.ndarray:
        """The ranker's feature rows for a known customer and given items, by the per-request path.

        Args:
            user_id: a known customer.
            item_ids: catalogue items (those the sources did not propose get no source ranks).

        Returns:
            (len(item_ids), n_features) float32.
        """
        query = Query(user_id=user_id)
        by_id = {c.item_id: c for c in self._merged(query, self.generator.config.size)}
        return self._feature_matrix(self._state(query, None), [by_id.get(i, Candidate(i, 0.0, {})) for i in item_ids])

    # -- many known users at once (offline evaluation) ----------------------------------------

    def rank_users(
        self, user_ids: Sequence[str], k: int, candidates: Mapping[str, Sequence[Candidate]] | None = None
    ) -> dict[str, list[str]]:
        """Top-k reranked lists of many known customers, in batches (what offline evaluation scores).

        Args:
            user_ids: customers of the fold's window.
            k: list length.
            candidates: their merged candidates when already generated (else generated here).

        Returns:
            user id -> k item ids; where fewer than k candidates were ranked, the merged order fills up.
        """
        out: dict[str, list[str]] = {}
        users = list(user_ids)
        # Blocks of users: a user's feature rows do not depend on who else is ranked with them (the
        # server ranks one at a time), and 10,000 test users' rows at once were gigabytes of the
        # 100x rung's evaluation peak.
        for start in range(0, len(users), RANK_BLOCK):
            block = users[start : start + RANK_BLOCK]
            cands = candidates if candidates is not None else self.generator.generate(block)
            states = user_states(self.data, block, self._attributes, user_vectors(self.generator, block))
            examples = build_examples(self.features, states, cands, self.data.item_index, self.features.sources)
            ranked = rerank(self.ranker, examples, self.data.item_index.ids, k)
            for u in block:
                primary = ranked.get(u, [])
                seen = set(primary)
                out[u] = (primary + [c.item_id for c in cands.get(u, []) if c.item_id not in seen])[:k]
            del states, examples, ranked
        return out

    # -- content ------------------------------------------------------------------------------

    def similar(self, item_id: str, k: int) -> list[ScoredItem]:
        """Items closest to ``item_id`` by fused content vector.

        Args:
            item_id: the item to match.
            k: results wanted.

        Returns:
            Up to ``k`` items, closest first, each with its 0-based ``similar`` rank.

        Raises:
            UnknownItemsError: the item has no content vector.
        """
        if self.search_engine is None or self.search_engine.vectors.index.get(item_id) is None:
            raise UnknownItemsError([item_id])
        found = self.search_engine.similar_items(item_id, k)
        return [ScoredItem(i, s, {"similar": r}) for r, (i, s) in enumerate(zip(found.item_ids, found.scores))]

    def search(self, text: str | None, image: Image.Image | None, text_weight: float, image_weight: float, k: int) -> list[ScoredItem]:
        """Multimodal search: words, a photo, or both (their weights set the second stage's mix).

        Args:
            text: query words, or None.
            image: query photo, or None.
            text_weight: weight of the words (used only when both are given).
            image_weight: weight of the photo (used only when both are given).
            k: results wanted.

        Returns:
            Up to ``k`` items, best first, each with its 0-based ``search`` rank.

        Raises:
            InvalidQueryError: this catalogue has no content encoder.
            ValueError: neither ``text`` nor ``image`` is given.
        """
        if self.search_engine is None or self.search_engine.encoder is None:
            raise InvalidQueryError("text" if text is not None else "image", "this model bundle has no content encoder, so text/image queries are unavailable")
        total = text_weight + image_weight
        rerank_weight = text_weight / total if total > 0 and text is not None and image is not None else None
        with self._encoder_lock:
            found = self.search_engine.search(text, image, k, rerank_text_weight=rerank_weight)
        return [ScoredItem(i, s, {"search": r}) for r, (i, s) in enumerate(zip(found.item_ids, found.scores))]

    # -- internals ----------------------------------------------------------------------------

    def _search_hits(self, query: Query, size: int) -> list[str] | None:
        if self.candidate_stage.knows(query.user_id) or (query.text is None and query.image is None):
            return None
        return [s.item_id for s in self.search(query.text, query.image, query.text_weight, query.image_weight, size)]

    def _merged(self, query: Query, size: int, hits: list[str] | None = None) -> list[Candidate]:
        if hits is None and not self.candidate_stage.knows(query.user_id) and (query.text is not None or query.image is not None):
            hits = self._search_hits(query, size)
        return self.candidate_stage.merged(query, size, hits)

    def _state(self, query: Query, hits: list[str] | None) -> UserState:
        """A known customer's feature state, or a visitor's from this visit's items."""
        user = query.user_id
        if self.candidate_stage.knows(user):
            assert user is not None
            vectors = {name: table[row] for name, index, table in self._user_factors if (row := index.get(user)) is not None}
            if hasattr(self.generator, "ease") and (row := self.generator.ease.user_index.get(user)) is not None:
                vectors["ease"] = ease_user_vector(self.generator, row)
            return self._user_states().state(user, vectors)
        rows = self.candidate_stage.rows(query.recent_item_ids) if query.recent_item_ids else np.zeros(0, dtype=np.int64)
        # Words or a photo alone give the features nothing to compare candidates with; the best
        # search hits stand in for the visitor's history there (never as a source).
        profile = rows if len(rows) or not hits else self.data.item_index.lookup(hits[:QUERY_PROFILE_ITEMS])
        factors: dict[str, np.ndarray] = {}
        if len(profile) and hasattr(self.generator, "als"):
            factors["als"] = self.generator.als.fold_in([self.data.item_index.ids[r] for r in profile])
        if len(profile) and hasattr(self.generator, "ease"):
            factors["ease"] = np.zeros(self.data.n_items, dtype=np.float32)
            factors["ease"][profile] = 1.0
        return anonymous_state(profile.tolist(), self.data.as_of, factors)

    def _feature_matrix(self, state: UserState, cands: list[Candidate]) -> np.ndarray:
        return self.features.compute([state], [candidate_set(cands, self.data.item_index, self.features.sources)])


def _with_request_order(scores: np.ndarray, n: int, rrf_k: float) -> np.ndarray:
    """Fuse the ranker's order with the search order for a visitor known only by words or a photo.

    The ranker learned from customers' histories; for a visitor without one, it mostly sees
    popularity and would float popular items that match the words poorly. Reciprocal-rank fusion
    of its order with the search order (the candidates' own order) keeps what was asked for on top.
    """
    ranker_rank = np.empty(n, dtype=np.float64)
    ranker_rank[np.argsort(-scores, kind="stable")] = np.arange(1, n + 1)
    return 1.0 / (rrf_k + ranker_rank) + 1.0 / (rrf_k + np.arange(1, n + 1))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
