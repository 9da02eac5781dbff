"""Every known customer's merged candidates, computed in batches when the model is trained.

A known customer's candidates depend only on the fitted fold (their history and the fitted
sources), never on the request, so they are computed once for all customers in large batches
(the generator's source lists, fused by :func:`~recsys.candidates.merge.merge_arrays`: the same
lists as :meth:`CandidateGenerator.generate`, the call offline evaluation scores) and stored as
arrays. Serving a known customer is then a row lookup instead of seven source queries (two ANN
searches, an exact ALS product over the catalogue, a sparse co-purchase product, the fusion):
~0.1 ms instead of ~25 ms of CPU on the H&M fold. Visitors, filtered queries and lists longer
than the stored depth still take the live path.

Storage is plain ``.npy`` files (no pickle) opened memory-mapped, so the server's worker
processes share one copy in the page cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Self

import numpy as np

from recsys.atomic import write_dir
from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.merge import Candidate, merge_arrays
from recsys.index.faiss_index import EXACT_BATCH_MIN

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PRECOMPUTED_DIR = "precomputed_candidates"  # its folder in a training stage and in a bundle
NO_RANK = 0  # ranks are stored 1-based; 0 = the source did not propose the item


class PrecomputedCandidates:
    """Merged candidate lists of every customer of a fitted generator, best first.

    Args:
        item_ids: the generator's item ids (``history.item_index`` order).
        sources: source names, the order of the last axis of ``ranks``.
        rows: (n_users, depth) int32 item rows, -1 after a shorter list.
        scores: (n_users, depth) float32 fused scores.
        ranks: (n_users, depth, n_sources) 1-based rank per source (0 = not proposed).
        users_digest: digest of the user ids the rows belong to (checked against the generator).
    """

    def __init__(self, item_ids: np.ndarray, sources: list[str], rows: np.ndarray, scores: np.ndarray, ranks: np.ndarray, users_digest: str):
        self.item_ids, self.sources = item_ids, list(sources)
        self.rows, self.scores, self.ranks = rows, scores, ranks
        self.users_digest = users_digest
        self.build_seconds: dict[str, float] = {}  # per source and "fusion", set by :meth:`build`

    @property
    def depth(self) -> int:
        """Candidates stored per customer (the longest list served from here)."""
        return int(self.rows.shape[1])

    @classmethod
    def build(cls, generator: CandidateGenerator, depth: int, batch_size: int = 2048) -> Self:
        """Generate and store the merged candidates of every customer the generator knows.

        Args:
            generator: a fitted generator.
            depth: candidates kept per customer.
            batch_size: customers per batch of source lists and fusion (progress is logged per
                batch); every batch has at least ``EXACT_BATCH_MIN`` customers (when there are that
                many), so all are searched the same way (exactly: see ``ItemIndex.search_exact``).

        Returns:
            The table.
        """
        user_ids = generator.history.user_index.ids
        sources: list[str] = [s for s in generator.config.sources if not (s == "history" and generator.exclude_seen)]
        n = len(user_ids)
        rows = np.full((n, depth), -1, dtype=np.int32)
        scores = np.zeros((n, depth), dtype=np.float32)
        # A source's list is at most per_source long, so its ranks fit a byte at the usual sizes.
        ranks = np.zeros((n, depth, len(sources)), dtype=np.uint8 if generator.config.per_source < 256 else np.uint16)
        item_rows = generator.history.item_index
        start = time.perf_counter()
        bounds = list(range(0, n, batch_size)) + [n]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < EXACT_BATCH_MIN:
            del bounds[-2]  # a short last batch joins the one before, so every batch is searched exactly
        seconds: dict[str, float] = {}
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            batch = user_ids[lo:hi].tolist()
            lists = generator.source_lists(batch)
            for source, spent in generator.timings.items():
                seconds[source] = seconds.get(source, 0.0) + spent
            fusion_start = time.perf_counter()
            merged = merge_arrays(lists, batch, depth, generator.weights, generator.config.rrf_k, item_rows)
            seconds["fusion"] = seconds.get("fusion", 0.0) + time.perf_counter() - fusion_start
            if merged.sources != sources:
                raise ValueError(f"precomputed candidates: the generator's sources {merged.sources} are not {sources}")
            rows[lo:hi] = merged.rows
            scores[lo:hi] = merged.scores
            ranks[lo:hi] = merged.ranks
            done = hi
            elapsed = time.perf_counter() - start
            log.info("precomputed candidates: %d/%d customers, %.0f/s, %.0fs left", done, n, done / elapsed, (n - done) * elapsed / done)
        log.info("precomputed candidates: seconds per part %s", ", ".join(f"{k} {v:.1f}" for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])))
        table = cls(item_rows.ids, sources, rows, scores, ranks, users_digest(user_ids))
        table.build_seconds = seconds
        return table

    def lookup(self, user_row: int, size: int) -> list[Candidate]:
        """One customer's first ``size`` candidates.

        Args:
            user_row: the customer's row in the generator's ``history.user_index``.
            size: how many (at most :attr:`depth`).

        Returns:
            The candidates, best first, exactly as :meth:`CandidateGenerator.generate` made them.
        """
        row = np.asarray(self.rows[user_row, :size])
        kept = int(np.count_nonzero(row >= 0))
        ids = self.item_ids[row[:kept]].tolist()
        scores = np.asarray(self.scores[user_row, :kept], dtype=np.float64).tolist()
        sources = self.sources
        # Plain lists, not a numpy call per candidate: this is most of a known customer's request.
        return [
            Candidate(item, score, {sources[s]: r for s, r in enumerate(ranks) if r})
            for item, score, ranks in zip(ids, scores, np.asarray(self.ranks[user_row, :kept]).tolist())
        ]

    def matches(self, generator: CandidateGenerator) -> bool:
        """Whether this table belongs to ``generator`` (same customers and items, in the same order)."""
        return (
            self.users_digest == users_digest(generator.history.user_index.ids)
            and len(self.item_ids) == len(generator.history.item_index)
            and bool(np.array_equal(self.item_ids, generator.history.item_index.ids))
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``meta.json`` and the arrays as ``.npy`` files (atomically: temp folder, then rename)."""

        def populate(tmp: Path) -> None:
            np.save(tmp / "rows.npy", self.rows)
            np.save(tmp / "scores.npy", self.scores)
            np.save(tmp / "ranks.npy", self.ranks)
            np.save(tmp / "item_ids.npy", self.item_ids.astype(str))
            meta = {"format_version": FORMAT_VERSION, "sources": self.sources, "users_digest": self.users_digest, "depth": self.depth, "users": len(self.rows)}
            (tmp / "meta.json").write_text(json.dumps(meta))

        return write_dir(directory, populate)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Open a saved table memory-mapped (pages are read as customers are served).

        Raises:
            ValueError: an unknown format version.
        """
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory}: precomputed candidates format {meta.get('format_version')}, expected {FORMAT_VERSION}")
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ("rows", "scores", "ranks")}
        item_ids = np.load(directory / "item_ids.npy", allow_pickle=False)
        return cls(item_ids, meta["sources"], arrays["rows"], arrays["scores"], arrays["ranks"], meta["users_digest"])


def users_digest(user_ids: np.ndarray) -> str:
    """A short digest of an ordered user-id list (ties a table to the fold it was built from).

    Args:
        user_ids: the ids, in row order.

    Returns:
        16 hex digits.
    """
    h = hashlib.sha256()
    for chunk in range(0, len(user_ids), 100_000):
        h.update("\n".join(user_ids[chunk : chunk + 100_000].tolist()).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
