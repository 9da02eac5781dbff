"""Exact batch top-k over item vectors when most items were never bought.

On a big catalogue most items have no purchases in the window (212k of 256k on the 10x log),
and their tower vectors differ from each other only through metadata and content: they lie near
a low-dimensional subspace. Scoring them in full is most of an exact batch search, yet none of
them reached a customer's top 150 on that log. So the bought ("warm") items are scored in full,
which sets each user's k-th best score ``tau``, and the never-bought ("cold") items are screened
through a bound that cannot miss one:

    q.x = q.m + (P q).(P (x - m)) + q_perp . x_perp  <=  q.m + (P q).(P (x - m)) + |q_perp| |x_perp|

where ``m`` is the cold items' mean, ``P`` the top ``rank`` principal directions of ``x - m``
(orthonormal rows) and ``_perp`` the parts outside them (Cauchy-Schwarz). Only the cold items
whose bound reaches ``tau`` (less a rounding margin) are scored in full; with ``rank`` 128 that
was ~4 per user on the 10x log. The result is the exact top k, ordered by score, then row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import faiss
import numpy as np

# The bound is exact in real arithmetic; float32 products and a float32 basis are not. Items are
# kept when their bound is within this fraction of |q| * max|x - m| below tau, far above the
# rounding of 448-term float32 sums (~1e-5 relative) and far below the gaps seen (tau ~0.4,
# best cold score ~0.1 on the 10x log).
MARGIN = 1e-3
CHUNK = 65_536  # cold rows gathered at a time while building


@dataclass
class ScreenedSearch:
    """Warm items scored exactly, cold items screened by a low-rank bound (see the module docstring).

    Attributes:
        n_items: rows of the full item matrix.
        warm_rows: (n_warm,) rows scored in full.
        warm: FAISS flat inner-product index over the warm vectors.
        cold_rows: (n_cold,) rows screened first.
        vectors: (n_items, d) every item's vector (the caller's array, not a copy; cold rows are rescored from it).
        mean: (d,) mean of the cold vectors.
        basis: (rank, d) orthonormal directions.
        cold_radius: the largest norm of ``cold - mean`` (scales the rounding margin).
        screen: FAISS flat inner-product index over ``[coordinates of cold - mean in basis, norm outside it, 1]``.
    """

    n_items: int
    warm_rows: np.ndarray
    warm: faiss.IndexFlatIP
    cold_rows: np.ndarray
    vectors: np.ndarray
    mean: np.ndarray
    basis: np.ndarray
    cold_radius: float
    screen: faiss.IndexFlatIP
    _flat: faiss.IndexFlatIP | None = field(default=None, repr=False, compare=False)
    hits_per_query: float = field(default=0.0, compare=False)  # cold items rescored per query in the last search

    @classmethod
    def build(cls, vectors: np.ndarray, warm_mask: np.ndarray, rank: int, sample: int = 20_000, seed: int = 0) -> Self | None:
        """Split the items and fit the cold items' subspace.

        Args:
            vectors: (n_items, d) float32 item vectors, scored by inner product (kept by reference;
                rows may be strided, e.g. a view of an index's storage, since only rows are gathered).
            warm_mask: (n_items,) True for the items scored in full (e.g. bought in the window).
            rank: directions of the cold subspace.
            sample: cold items the principal directions are fitted on (fixed seed).
            seed: the sample's seed.

        Returns:
            The search, or None where it cannot pay: ``rank`` not below the dimension, or fewer
            cold items than warm ones.
        """
        vectors = np.asarray(vectors, dtype=np.float32)  # no contiguous copy: every use below gathers rows
        n, d = vectors.shape
        warm_mask = np.asarray(warm_mask, dtype=bool)
        if len(warm_mask) != n:
            raise ValueError(f"screened search: {len(warm_mask)} warm flags for {n} items")
        warm_rows, cold_rows = np.flatnonzero(warm_mask), np.flatnonzero(~warm_mask)
        if rank < 1 or rank >= d or len(cold_rows) <= len(warm_rows):
            return None
        # Cold rows are gathered CHUNK at a time: all of them at once was a 0.9 GB copy at the 100x rung.
        mean = sum((vectors[cold_rows[lo : lo + CHUNK]].sum(axis=0, dtype=np.float64) for lo in range(0, len(cold_rows), CHUNK)), np.zeros(d)) / len(cold_rows)
        rng = np.random.default_rng(seed)
        fit_rows = np.sort(rng.choice(cold_rows, size=min(sample, len(cold_rows)), replace=False))
        _, _, vt = np.linalg.svd(vectors[fit_rows].astype(np.float64) - mean, full_matrices=False)
        basis = vt[: min(rank, len(vt))]
        r = len(basis)
        # The screen's rows [coordinates in the basis, norm outside it, 1], written in place as float32.
        table = np.empty((len(cold_rows), r + 2), dtype=np.float32)
        table[:, r + 1] = 1.0
        radius = 0.0
        for lo in range(0, len(cold_rows), CHUNK):  # float64 projections (the cold set can be most of 1M items)
            centred = vectors[cold_rows[lo : lo + CHUNK]].astype(np.float64) - mean
            coords = centred @ basis.T
            table[lo : lo + CHUNK, :r] = coords
            # rounded up: the bound may only overestimate
            table[lo : lo + CHUNK, r] = np.linalg.norm(centred - coords @ basis, axis=1) * (1 + 1e-6)
            radius = max(radius, float(np.linalg.norm(centred, axis=1).max()))
        warm = faiss.IndexFlatIP(d)
        if len(warm_rows):
            warm.add(np.ascontiguousarray(vectors[warm_rows]))
        screen = faiss.IndexFlatIP(r + 2)
        screen.add(table)
        return cls(n, warm_rows.astype(np.int64), warm, cold_rows.astype(np.int64), vectors, mean.astype(np.float32), basis.astype(np.float32), radius, screen)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k rows and float32 inner products per query, best first (ties: lower row first).

        Args:
            queries: (n, d) query vectors.
            k: results per query (clipped to the item count).

        Returns:
            (rows, scores): (n, min(k, n_items)) int64 rows and float32 scores.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        n, kk = len(q), min(k, self.n_items)
        n_warm = len(self.warm_rows)
        if n_warm:
            warm_scores, local = self.warm.search(q, min(kk, n_warm))
            warm_rows = np.where(local >= 0, self.warm_rows[np.maximum(local, 0)], -1)
        else:
            warm_scores, warm_rows = np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        if warm_scores.shape[1] < kk:  # fewer warm items than k: every cold item is needed, so score them all
            cold_scores, cold_local = self._cold_flat().search(q, kk)
            return best_k(kk, np.hstack([warm_rows, self.cold_rows[cold_local]]), np.hstack([warm_scores, cold_scores]))
        tau = warm_scores[:, kk - 1]
        coords = q @ self.basis.T
        perp = np.linalg.norm(q - coords @ self.basis, axis=1)
        floor = tau - q @ self.mean - MARGIN * np.linalg.norm(q, axis=1) * max(self.cold_radius, 1e-12)
        # bound - floor > 0 as one inner product of [coords, |q_perp|, -floor] with [coords, residual, 1]:
        # FAISS's blocked range search then keeps the few hits without a (users x items) array.
        probe = np.ascontiguousarray(np.hstack([coords, perp[:, None], -floor[:, None]]), dtype=np.float32)
        lims, _, cold = self.screen.range_search(probe, 0.0)
        bounds = np.asarray(lims, dtype=np.int64)
        users = np.repeat(np.arange(n), bounds[1:] - bounds[:-1])
        hit_rows = self.cold_rows[cold]
        self.hits_per_query = len(users) / max(n, 1)
        cold_scores = np.zeros(len(users), dtype=np.float32)
        for u in np.flatnonzero(bounds[1:] > bounds[:-1]):  # per user over its hits (gathering q per pair doubled the traffic)
            lo, hi = bounds[u], bounds[u + 1]
            # einsum sums each row alone: BLAS can round equal rows differently by where they sit
            cold_scores[lo:hi] = np.einsum("ij,j->i", self.vectors[hit_rows[lo:hi]], q[u])
        owner = np.concatenate([np.repeat(np.arange(n), warm_rows.shape[1]), users])
        rows = np.concatenate([warm_rows.ravel(), hit_rows])
        scores = np.concatenate([warm_scores.ravel(), cold_scores.astype(np.float32)])
        return best_k(kk, rows, scores, owner, n)

    def _cold_flat(self) -> faiss.IndexFlatIP:
        """A flat index over the cold vectors (made on first use: only when there are fewer warm items than k)."""
        if self._flat is None:
            self._flat = faiss.IndexFlatIP(self.vectors.shape[1])
            self._flat.add(np.ascontiguousarray(self.vectors[self.cold_rows]))
        return self._flat


def best_k(k: int, rows: np.ndarray, scores: np.ndarray, owner: np.ndarray | None = None, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each owner's k best (row, score) pairs by score, then lower row.

    Args:
        k: kept per owner.
        rows: item rows; with ``owner`` None, an (n, m) matrix whose line i belongs to owner i.
        scores: their scores, shaped as ``rows``.
        owner: the owner of each entry of flat ``rows`` (None: the lines of a matrix).
        n: owners (with ``owner``).

    Returns:
        (rows, scores): (n, k), -1 / -inf after an owner's last entry.
    """
    if owner is None:
        n = len(rows)
        owner = np.repeat(np.arange(n), rows.shape[1])
        rows, scores = rows.ravel(), scores.ravel()
    assert n is not None
    valid = rows >= 0
    owner, rows, scores = owner[valid], rows[valid], scores[valid]
    order = np.lexsort((rows, -scores, owner))
    owner, rows, scores = owner[order], rows[order], scores[order]
    slot = np.arange(len(owner)) - np.searchsorted(owner, np.arange(n))[owner]
    keep = slot < k
    out_rows = np.full((n, k), -1, dtype=np.int64)
    out_scores = np.full((n, k), -np.inf, dtype=np.float32)
    out_rows[owner[keep], slot[keep]] = rows[keep]
    out_scores[owner[keep], slot[keep]] = scores[keep]
    return out_rows, out_scores.astype(np.float32)
