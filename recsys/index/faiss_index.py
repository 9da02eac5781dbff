"""FAISS inner-product index over item-tower vectors: exact when small, HNSW or IVF when large.

A flat (exact) index scans every item: fine up to tens of thousands of items. Above
``exact_max_items`` an approximate index answers in sub-linear time: an HNSW graph, or an
inverted file (IVF: k-means cells of exact vectors, ``nprobe`` cells scanned per query), which on
a 1M-item catalogue reached recall@100 0.98 in about a third of HNSW's time at equal recall
(``bench/results/synthetic_index.md``). :func:`ann_recall` measures how much of the exact top k
an index returns, so the trade-off is a number, not a hope.

Inner product is not a metric, and HNSW over raw inner products lost recall on two-tower
vectors of uneven norms (0.966 at 100 on H&M); k-means cells over raw inner products are skewed
the same way. Both approximate indexes therefore store each item as ``[x, sqrt(M^2 - |x|^2)]`` and
search L2 with queries ``[q, 0]``: ``|q - x|^2 = |q|^2 + M^2 - 2 q.x``, so the L2 order is exactly
the inner-product order (Bachrach et al., RecSys 2014).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import faiss
import numpy as np

from recsys.atomic import write_dir
from recsys.config import IndexConfig
from recsys.index.screened import ScreenedSearch, best_k

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
APPROXIMATE = ("hnsw", "ivf")  # kinds stored as norm-augmented vectors searched by L2
EXACT_BATCH_MIN = 20  # from this many queries on, batch searches are matrix products (see ItemIndex.search_exact)
# Screening pays only while the bound is tight: on the 10x log ~4 never-bought items per user were
# rescored and the search took 0.6x the time; on the H&M week ~740 were and it took longer than
# scoring every item. Above this many per query (first batch), the index goes back to the plain search.
SCREEN_MAX_HITS = 64
RESCORE_EXTRA = 16  # results fetched beyond k before the row-by-row rescoring (near-ties at the cut)
RESCORE_BLOCK = 128  # queries rescored at a time (their gathered vectors: 128 x (k + 16) x d floats)


@dataclass
class ItemIndex:
    """Item ids plus a FAISS index whose row ``i`` is ``item_ids[i]``.

    Attributes:
        item_ids: external ids in index order.
        index: the FAISS index (IndexFlatIP, or IndexHNSWFlat / IndexIVFFlat over norm-augmented vectors).
        kind: "exact", "hnsw" or "ivf".
        max_norm: the largest item norm (the augmentation constant of the approximate kinds).
    """

    item_ids: np.ndarray
    index: faiss.Index
    kind: str
    max_norm: float = 0.0
    _flat: faiss.IndexFlatIP | None = field(default=None, repr=False, compare=False)  # exact twin of an HNSW index, made on its first batch
    _screen: ScreenedSearch | None = field(default=None, repr=False, compare=False)  # set by :meth:`screen_cold`

    @classmethod
    def build(cls, item_ids: np.ndarray, vectors: np.ndarray, config: IndexConfig | None = None, threads: int = 2) -> Self:
        """Index ``vectors`` (n x d, scored by inner product).

        Args:
            item_ids: one id per row.
            vectors: float32 item vectors.
            config: exact/HNSW threshold and HNSW parameters.
            threads: FAISS OpenMP threads (the machine is shared).

        Raises:
            ValueError: shapes disagree or the vectors are not finite.
        """
        config = config or IndexConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(item_ids):
            raise ValueError(f"index: {len(item_ids)} ids but vectors of shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("index: item vectors contain NaN or inf")
        faiss.omp_set_num_threads(threads)
        d = vectors.shape[1]
        if len(item_ids) <= config.exact_max_items:
            index: faiss.Index = faiss.IndexFlatIP(d)
            kind = "exact"
            index.add(vectors)
            return cls(np.asarray(item_ids, dtype=str), index, kind)
        norms = np.linalg.norm(vectors, axis=1)
        max_norm = float(norms.max()) if len(norms) else 0.0
        extra = np.sqrt(np.clip(max_norm**2 - norms**2, 0.0, None)).astype(np.float32)[:, None]
        augmented = np.ascontiguousarray(np.hstack([vectors, extra]))
        if config.ann == "ivf":
            return cls(np.asarray(item_ids, dtype=str), _ivf(augmented, config), "ivf", max_norm)
        hnsw = faiss.IndexHNSWFlat(d + 1, config.hnsw_m, faiss.METRIC_L2)
        hnsw.hnsw.efConstruction = config.ef_construction
        hnsw.hnsw.efSearch = config.ef_search
        hnsw.add(augmented)
        return cls(np.asarray(item_ids, dtype=str), hnsw, "hnsw", max_norm)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def _hnsw_index(self) -> faiss.IndexHNSW:
        """The index of an ``hnsw`` kind as its concrete class (FAISS hands that back on load)."""
        assert isinstance(self.index, faiss.IndexHNSW), f"a {self.kind} index has no HNSW graph"
        return self.index

    @property
    def _hnsw(self) -> faiss.HNSW:
        """The graph parameters of an ``hnsw`` index."""
        return self._hnsw_index.hnsw

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item rows and scores per query (rows -1 / scores -inf where fewer than k exist).

        Args:
            queries: (n, d) query vectors.
            k: results per query.

        Returns:
            (rows, scores): (n, min(k, len(self))) int64 rows and float32 inner products, best first.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.kind == "hnsw":
            # efSearch below k would cap the result list; widen it for this call.
            self._hnsw.efSearch = max(self._hnsw.efSearch, k)
        if self.kind in APPROXIMATE:
            padded = np.ascontiguousarray(np.hstack([q, np.zeros((len(q), 1), dtype=np.float32)]))
            dist, rows = self.index.search(padded, min(k, len(self)))
            # back to inner products: q.x = (|q|^2 + M^2 - |q - x|^2) / 2
            scores = (np.sum(q * q, axis=1, keepdims=True) + self.max_norm**2 - dist) / 2
            return rows, np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        if len(q) < EXACT_BATCH_MIN:
            # One query at a time below FAISS's BLAS threshold: a request's few queries are scored
            # the same whether one or several arrive together.
            parts = [self.index.search(q[i : i + 1], min(k, len(self))) for i in range(len(q))]
            return np.concatenate([p[1] for p in parts]), np.concatenate([p[0] for p in parts])
        return self.search_exact(q, k)

    def search_exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner-product top-k of a batch of queries over the stored vectors.

        Batch jobs (training folds, the precomputed candidates of every customer) query thousands
        of users at once, where FAISS's blocked exact search is ~15x cheaper per query than
        query-by-query scans and cheaper than an HNSW walk at high ``efSearch``, and exact. Its
        rounding can order exact near-ties differently from a single-query search; known customers
        are served from the batch-made table, so what is evaluated is what they are served.

        Args:
            queries: (n, d) query vectors.
            k: results per query.

        Returns:
            (rows, scores) as :meth:`search`; an IVF index (no stored matrix) is searched as usual.
        """
        if self.kind == "ivf":
            return self.search(queries, k)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        # BLAS rounds a query's scores differently with the batch around it (other kernels for other
        # block shapes: seen on an AVX-512 machine, a near-tie swapped between a 20-user batch and the
        # precomputed table's 2,048). So a few more are fetched, rescored row by row (einsum sums each
        # score alone, the same in any batch) and cut to k by (score, row).
        wanted = min(k, len(self))
        rows, _ = self._search_exact_blas(q, min(wanted + RESCORE_EXTRA, len(self)))
        vectors = self._screen.vectors if self._screen is not None else self.stored_vectors()
        out_rows = np.full((len(q), wanted), -1, dtype=np.int64)
        out_scores = np.full((len(q), wanted), -np.inf, dtype=np.float32)
        for lo in range(0, len(q), RESCORE_BLOCK):
            block = np.asarray(rows[lo : lo + RESCORE_BLOCK], dtype=np.int64)
            scores = np.einsum("nkd,nd->nk", vectors[np.maximum(block, 0)], q[lo : lo + RESCORE_BLOCK]).astype(np.float32)
            out_rows[lo : lo + RESCORE_BLOCK], out_scores[lo : lo + RESCORE_BLOCK] = best_k(wanted, block, scores)
        return out_rows, out_scores

    def _search_exact_blas(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's blocked exact search (or the screened one): the candidates :meth:`search_exact` rescores."""
        if self._screen is not None:
            rows, scores = self._screen.search(q, k)
            if self._screen.hits_per_query > SCREEN_MAX_HITS:
                log.info("batch search: %.0f never-bought items rescored per query (> %d), so screening is switched off", self._screen.hits_per_query, SCREEN_MAX_HITS)
                self._screen = None
            return rows, scores
        if self.kind == "exact":
            scores, rows = self.index.search(q, min(k, len(self)))
            return rows, scores
        if self._flat is None:  # the HNSW graph's vectors without their norm augmentation
            stored = self.stored_vectors()
            self._flat = faiss.IndexFlatIP(stored.shape[1])
            self._flat.add(np.ascontiguousarray(stored))
        scores, rows = self._flat.search(q, min(k, len(self)))
        return rows, scores

    def screen_cold(self, warm_mask: np.ndarray, rank: int) -> bool:
        """Let batch searches score only the ``warm_mask`` items in full and screen the rest (still exact).

        See :class:`~recsys.index.screened.ScreenedSearch`: the warm items set each user's k-th
        score, and the others are scored only where a low-rank bound says they can reach it.

        Args:
            warm_mask: (len(self),) True for items scored in full (e.g. bought in the window), in index order.
            rank: directions of the cold items' subspace (0: no screening).

        Returns:
            Whether screening is on (it is left off where it cannot pay: few cold items, or a
            rank not below the vector size; an IVF index keeps its own approximate batch search).
        """
        if self.kind == "ivf" or rank < 1:
            return False
        # The index's own memory, not a copy: at the 100x rung a copy was 1.1 GB of the label folds' peak.
        self._screen = ScreenedSearch.build(self.stored_vectors(), warm_mask, rank)
        if self._screen is not None:
            self._flat = None  # the screened search replaces the exact twin
        return self._screen is not None

    def stored_vectors(self) -> np.ndarray:
        """Every item vector as given to :meth:`build`: a read-only view of the index's own storage.

        No copy is made (``reconstruct_n`` copied the whole matrix, twice for an HNSW index). The
        view of an HNSW index skips its norm column, so its rows are strided. The array keeps the
        FAISS index alive (its ``base``), so it stays valid whatever happens to this object.

        Raises:
            ValueError: an IVF index, which stores its vectors by cell, not as one matrix.
        """
        if self.kind == "ivf":
            raise ValueError("index: an IVF index keeps no item matrix to view")
        flat = faiss.downcast_index(self._hnsw_index.storage) if self.kind == "hnsw" else self.index
        assert isinstance(flat, faiss.IndexFlat), f"a {self.kind} index stores no flat matrix"
        n, width = len(self), int(flat.d)
        address = faiss.rev_swig_ptr(flat.get_xb(), max(n * width, 1)).__array_interface__["data"][0]
        view = np.asarray(_IndexMemory(self.index, address, (n, width)))
        return view[:, :-1] if self.kind in APPROXIMATE else view

    @property
    def screened(self) -> bool:
        """Whether batch searches are screened (:meth:`screen_cold`)."""
        return self._screen is not None

    @property
    def breadth(self) -> int | None:
        """How much of an approximate index a query explores: HNSW ``efSearch`` or IVF ``nprobe`` (None when exact)."""
        if self.kind == "hnsw":
            return int(self._hnsw.efSearch)
        if self.kind == "ivf":
            return int(faiss.extract_index_ivf(self.index).nprobe)
        return None

    def set_breadth(self, value: int) -> None:
        """Set HNSW ``efSearch`` or IVF ``nprobe`` (the recall / speed trade-off); no-op for an exact index.

        Raises:
            ValueError: ``value`` is below 1.
        """
        if value < 1:
            raise ValueError(f"index: search breadth must be >= 1, got {value}")
        if self.kind == "hnsw":
            self._hnsw.efSearch = int(value)
        elif self.kind == "ivf":
            faiss.extract_index_ivf(self.index).nprobe = int(value)

    def vector(self, row: int) -> np.ndarray:
        """The item vector stored at ``row`` (as given to :meth:`build`, without the norm augmentation)."""
        # faiss's stub lists the torch overload first; without a buffer, numpy in gives numpy out.
        v: np.ndarray = self.index.reconstruct(int(row))  # type: ignore[assignment]
        return v[:-1] if self.kind in APPROXIMATE else v

    def search_ids(self, queries: np.ndarray, k: int, batch_exact: bool = False) -> list[list[str]]:
        """Top-k item ids per query.

        Args:
            queries: (n, d) query vectors.
            k: results per query.
            batch_exact: answer a batch of ``EXACT_BATCH_MIN`` or more queries by :meth:`search_exact`
                even when the index is approximate (batch jobs, where exact is also cheaper).

        Returns:
            One list of at most k ids per query, best first.
        """
        return [self.item_ids[r[r >= 0]].tolist() for r in self.search_rows(queries, k, batch_exact)]

    def search_rows(self, queries: np.ndarray, k: int, batch_exact: bool = False) -> np.ndarray:
        """:meth:`search_ids` as index rows: (n, min(k, len(self))) int64, -1 where fewer were found.

        Args:
            queries: (n, d) query vectors.
            k: results per query.
            batch_exact: as in :meth:`search_ids`.
        """
        rows, _ = self.search_exact(queries, k) if batch_exact and len(queries) >= EXACT_BATCH_MIN else self.search(queries, k)
        return np.asarray(rows, dtype=np.int64)

    def save(self, directory: str | Path) -> Path:
        """Write ``index.faiss`` + ``items.npz`` + ``index.json`` atomically (temp dir, then rename)."""

        def populate(tmp: Path) -> None:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            np.savez(tmp / "items.npz", item_ids=self.item_ids.astype(str))
            meta = {"format_version": FORMAT_VERSION, "kind": self.kind, "n": len(self), "max_norm": self.max_norm}
            (tmp / "index.json").write_text(json.dumps(meta))

        return write_dir(Path(directory), populate)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Read what :meth:`save` wrote.

        Raises:
            ValueError: missing files, a foreign format version, or ids that disagree with the index.
        """
        directory = Path(directory)
        meta_path = directory / "index.json"
        if not meta_path.is_file():
            raise ValueError(f"{directory}: not an item index (no index.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported format_version {meta.get('format_version')}")
        index = faiss.read_index(str(directory / "index.faiss"))
        with np.load(directory / "items.npz", allow_pickle=False) as z:
            ids = z["item_ids"]
        if len(ids) != index.ntotal:
            raise ValueError(f"{directory}: {len(ids)} ids for an index of {index.ntotal} vectors")
        return cls(ids, index, meta["kind"], float(meta.get("max_norm", 0.0)))


class _IndexMemory:
    """A FAISS index's float32 matrix as a read-only numpy buffer that keeps the index alive.

    ``np.asarray`` of this object is a view whose ``base`` is this object, which holds the index:
    a bare ``faiss.rev_swig_ptr`` view would point into freed memory once the index is gone.
    """

    def __init__(self, index: faiss.Index, address: int, shape: tuple[int, int]):
        self.index = index
        self.__array_interface__ = {"data": (address, True), "shape": shape, "typestr": "<f4", "version": 3}


def _ivf(augmented: np.ndarray, config: IndexConfig) -> faiss.Index:
    """An IVF-Flat index (L2) over norm-augmented vectors, cells trained on a fixed-seed sample."""
    n, d = augmented.shape
    lists = config.ivf_lists or int(2 ** round(np.log2(max(4.0 * np.sqrt(n), 1.0))))
    lists = max(1, min(lists, n // 39 or 1))  # FAISS wants >= 39 training points per cell
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, lists, faiss.METRIC_L2)
    sample = np.random.default_rng(0).choice(n, size=min(n, 64 * lists), replace=False)
    index.train(augmented[np.sort(sample)])
    index.add(augmented)
    index.make_direct_map()  # reconstruct(row) for :meth:`ItemIndex.vector`
    index.nprobe = min(config.nprobe, lists)
    return index


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k rows (FAISS flat search; the reference for :func:`ann_recall`).

    Args:
        queries: (n, d) query vectors.
        vectors: (m, d) item vectors.
        k: results per query.

    Returns:
        (n, k) int64 rows, best first (-1 where fewer than k exist).
    """
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, rows = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return rows


def ann_recall(index: ItemIndex, queries: np.ndarray, vectors: np.ndarray, k: int = 100) -> float:
    """Share of the exact top-k rows that the index returns, averaged over queries.

    Args:
        index: the index under test (built over ``vectors``).
        queries: query vectors.
        vectors: the indexed item vectors (for the exact reference).
        k: list length.
    """
    exact = exact_top_k(queries, vectors, k)
    approx, _ = index.search(queries, k)
    hits = [len(set(a[a >= 0].tolist()) & set(e[e >= 0].tolist())) / max(int((e >= 0).sum()), 1) for a, e in zip(approx, exact)]
    return float(np.mean(hits)) if hits else float("nan")
