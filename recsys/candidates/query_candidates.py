"""A query's candidates: the first half of the query-to-list path, shared by every served catalogue.

A known customer gets the fitted sources' merged list (:meth:`CandidateGenerator.generate`); a
visitor gets the sources that can use the items of this visit
(:meth:`CandidateGenerator.visitor_lists`), with explicit search hits (words or a photo) as the
content source. Then the query's filters and repeat policy apply. The recommendation engine
(:mod:`features.engine`) reranks these; the synthetic load-test catalogue serves them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.merge import Candidate, merge_user
from recsys.candidates.precomputed import PrecomputedCandidates
from recsys.query import InvalidQueryError, Query, ScoredItem, UnknownItemsError

FILTER_HEADROOM = 4  # a filter or the repeat policy removes items: merge this many times more first


class QueryCandidates:
    """Merged, filtered candidates for a :class:`~recsys.query.Query`.

    Args:
        generator: the fitted candidate generator (its ``history`` holds each customer's items).
        filter_values: catalogue column -> value per item row (as strings; None when missing): the
            columns a query may filter on.
        exclude_seen: the repeat policy for queries that do not set their own (default: the generator's).
        precomputed: every customer's merged list, computed in training (known customers are served
            from it up to its depth); None computes every list live.

    Raises:
        ValueError: ``precomputed`` was built from another fold.
    """

    def __init__(
        self,
        generator: CandidateGenerator,
        filter_values: Mapping[str, Sequence[str | None]],
        exclude_seen: bool | None = None,
        precomputed: PrecomputedCandidates | None = None,
    ):
        if precomputed is not None and not precomputed.matches(generator):
            raise ValueError("precomputed candidates belong to another fold (customers or items differ from the generator's)")
        self.generator = generator
        self.precomputed = precomputed
        self.default_exclude_seen = generator.exclude_seen if exclude_seen is None else exclude_seen
        self.item_index = generator.history.item_index
        self.user_index = generator.history.user_index
        self.filter_values = dict(filter_values)

    def knows(self, user_id: str | None) -> bool:
        """Whether ``user_id`` is a customer with fitted history."""
        return user_id is not None and user_id in self.user_index

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Item rows of ``item_ids``.

        Raises:
            UnknownItemsError: naming the ids that are not in the catalogue.
        """
        rows = self.item_index.lookup(list(item_ids))
        unknown = [i for i, r in zip(item_ids, rows) if r < 0]
        if unknown:
            raise UnknownItemsError(unknown)
        return rows

    def check(self, query: Query) -> None:
        """Validate the query's item ids and filter columns.

        Raises:
            UnknownItemsError: a recent item is not in the catalogue.
            InvalidQueryError: a filter names a column that cannot be filtered on.
        """
        if query.recent_item_ids:
            self.rows(query.recent_item_ids)
        for column in query.filters:
            if column not in self.filter_values:
                allowed = ", ".join(self.filter_values) or "none"
                raise InvalidQueryError(f"filters.{column}", f"unknown catalogue column; filterable: {allowed}")

    def excludes_seen(self, query: Query) -> bool:
        """Whether this query leaves out what the user already had (its own setting, else the policy)."""
        return self.default_exclude_seen if query.exclude_seen is None else query.exclude_seen

    def size_for(self, query: Query, wanted: int) -> int:
        """How many candidates to merge so that ``wanted`` remain after the query's filters.

        Args:
            query: the query (its filters and repeat policy).
            wanted: candidates needed after filtering.

        Returns:
            ``max(wanted, size)``, times ``FILTER_HEADROOM`` when the query filters or excludes seen
            items that the generator's lists still hold (under the ``exclude`` repeat policy its
            sources already leave a customer's history out; this visit's items they do not).
        """
        size = max(wanted, self.generator.config.size)
        removes_seen = self.excludes_seen(query) and (not self.generator.exclude_seen or bool(query.recent_item_ids))
        return size * FILTER_HEADROOM if query.filters or removes_seen else size

    def merged(self, query: Query, size: int, search_hits: list[str] | None = None) -> list[Candidate]:
        """The query's merged candidates before filters.

        Args:
            query: the query (a known customer, or a visitor by recent items / words / photo).
            size: candidates to keep.
            search_hits: for a visitor with words or a photo, the search results (they replace the
                content source, and popularity is left out so it does not bury them).

        Returns:
            Up to ``size`` candidates, best first.

        Raises:
            InvalidQueryError: a visitor with words or a photo but no search hits were given
                (a catalogue without a content encoder).
        """
        gen = self.generator
        if self.knows(query.user_id):
            assert query.user_id is not None
            if self.precomputed is not None and size <= self.precomputed.depth:
                return self.precomputed.lookup(self.user_index.get(query.user_id), size)  # type: ignore[arg-type]
            return gen.generate([query.user_id], size)[query.user_id]
        if (query.text is not None or query.image is not None) and search_hits is None:
            field = "text" if query.text is not None else "image"
            raise InvalidQueryError(field, "this catalogue has no content encoder, so text/image queries are unavailable")
        rows = self.rows(query.recent_item_ids) if query.recent_item_ids else np.zeros(0, dtype=np.int64)
        lists = gen.visitor_lists(rows, max(size, gen.config.per_source))
        if search_hits is not None:
            lists["content"] = search_hits
            lists.pop("popularity", None)
        return merge_user(lists, size, gen.weights, gen.config.rrf_k)

    def seen(self, query: Query) -> set[str]:
        """Items the query's customer already has (their history) plus this visit's items."""
        seen = set(query.recent_item_ids)
        row = self.user_index.get(query.user_id) if query.user_id is not None else None
        if row is not None:
            h = self.generator.history.history
            seen |= set(self.item_index.ids[h.indices[h.indptr[row] : h.indptr[row + 1]]].tolist())
        return seen

    def filtered(self, candidates: list[Candidate], query: Query) -> list[Candidate]:
        """Candidates that pass the query's filters and repeat policy (``exclude_seen``), in order.

        Args:
            candidates: merged candidates, best first.
            query: the query (its filters, repeat policy, customer and visit items).

        Returns:
            The kept candidates, order unchanged.
        """
        exclude = self.excludes_seen(query)
        if not query.filters and not exclude:
            return candidates
        seen = self.seen(query) if exclude else set()
        out = []
        for c in candidates:
            if c.item_id in seen:
                continue
            if query.filters and not self.passes(c.item_id, query.filters):
                continue
            out.append(c)
        return out

    def passes(self, item_id: str, filters: Mapping[str, Sequence[str]]) -> bool:
        """Whether an item's catalogue values are among the allowed ones for every filtered column.

        Args:
            item_id: the item (an unknown item never passes).
            filters: column -> allowed values.

        Returns:
            True if every column's value is allowed.
        """
        row = self.item_index.get(item_id)
        if row is None:
            return False
        return all(self.filter_values[column][row] in allowed for column, allowed in filters.items())

    def candidates(self, query: Query, search_hits: list[str] | None = None) -> list[ScoredItem]:
        """The top ``query.k`` filtered candidates with their fused score and each source's 0-based rank.

        Args:
            query: the query.
            search_hits: see :meth:`merged`.

        Returns:
            Up to ``query.k`` items, best first.
        """
        self.check(query)
        cands = self.filtered(self.merged(query, self.size_for(query, query.k), search_hits), query)
        return [scored(c) for c in cands[: query.k]]


def scored(candidate: Candidate) -> ScoredItem:
    """A merged candidate as a served item (source ranks 0-based, as the API reports them).

    Args:
        candidate: a merged candidate (1-based source ranks).

    Returns:
        The served item.
    """
    return ScoredItem(candidate.item_id, float(candidate.score), {s: r - 1 for s, r in candidate.ranks.items()})
