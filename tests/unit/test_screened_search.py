"""Protects the screened batch search: the exact top k over every item, although the never-bought
("cold") items are only scored where a low-rank bound says they can reach a user's k-th score."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from recsys.config import IndexConfig
from recsys.index.faiss_index import ItemIndex
from recsys.index.screened import ScreenedSearch


def reference(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k by float64 score, ties to the lower row."""
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(np.arange(vectors.shape[0]), scores.shape), -scores), axis=1)[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def catalogue(seed: int = 0, n_warm: int = 300, n_cold: int = 2_000, d: int = 48, rank: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warm items spread over every direction; cold items near a low-rank subspace, as metadata-only
    tower vectors are, a few of them long enough to enter some users' top k."""
    rng = np.random.default_rng(seed)
    warm = rng.standard_normal((n_warm, d))
    directions = rng.standard_normal((rank, d))
    cold = 0.3 * rng.standard_normal((n_cold, rank)) @ directions / np.sqrt(d) + 0.001 * rng.standard_normal((n_cold, d))
    queries = rng.standard_normal((64, d))
    strong = rng.choice(n_cold, size=20, replace=False)
    cold[strong] *= 60.0  # in the same subspace, long enough to beat most warm items for some users
    cold[strong[:4]] = cold[strong[4:8]]  # exact duplicates: ties go to the lower row
    vectors = np.vstack([warm, cold]).astype(np.float32)
    mask = np.zeros(len(vectors), dtype=bool)
    mask[:n_warm] = True
    perm = rng.permutation(len(vectors))  # warm and cold interleaved in row order
    return vectors[perm], mask[perm], queries.astype(np.float32)


@pytest.mark.parametrize("rank", [2, 6, 20])
def test_screened_lists_are_the_exact_top_k_whatever_the_rank(rank: int) -> None:
    vectors, warm, queries = catalogue()
    search = ScreenedSearch.build(vectors, warm, rank)
    assert search is not None
    rows, scores = search.search(queries, 50)
    want_rows, want_scores = reference(queries, vectors, 50)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert (rows == want_rows).all()
    assert (~warm[rows]).any(), "some cold items are in the top k, so the screen had something to find"


def test_fewer_warm_items_than_k_scores_every_cold_item() -> None:
    vectors, warm, queries = catalogue(n_warm=10, n_cold=500)
    search = ScreenedSearch.build(vectors, warm, 4)
    assert search is not None
    rows, _ = search.search(queries, 40)
    assert (rows == reference(queries, vectors, 40)[0]).all()


def test_no_warm_item_at_all() -> None:
    vectors, _, queries = catalogue(n_cold=400)
    search = ScreenedSearch.build(vectors, np.zeros(len(vectors), dtype=bool), 4)
    assert search is not None
    assert (search.search(queries, 30)[0] == reference(queries, vectors, 30)[0]).all()


def test_it_is_left_off_where_it_cannot_pay() -> None:
    vectors, warm, _ = catalogue()
    assert ScreenedSearch.build(vectors, warm, vectors.shape[1]) is None, "a rank as large as the vectors screens nothing"
    assert ScreenedSearch.build(vectors, np.ones(len(vectors), dtype=bool), 4) is None, "no cold majority"
    with pytest.raises(ValueError, match="warm flags"):
        ScreenedSearch.build(vectors, warm[:-1], 4)


@pytest.mark.parametrize("config", [IndexConfig(), IndexConfig(exact_max_items=100, hnsw_m=8, ef_construction=40)], ids=["exact", "hnsw"])
def test_an_index_with_screening_gives_the_same_batch_lists(config: IndexConfig) -> None:
    vectors, warm, queries = catalogue(seed=1)
    ids = np.asarray([f"item{i}" for i in range(len(vectors))])
    index = ItemIndex.build(ids, vectors, config)
    before_rows, before_scores = index.search_exact(queries, 60)
    assert index.screen_cold(warm, 6) and index.screened
    after_rows, after_scores = index.search_exact(queries, 60)
    # The same items with the same scores; FAISS orders exact ties (duplicate vectors here) its own way.
    assert all(set(a) == set(b) for a, b in zip(after_rows, before_rows))
    np.testing.assert_allclose(after_scores, before_scores, rtol=1e-5, atol=1e-5)
    assert index.search_ids(queries, 60, batch_exact=True) == [ids[r].tolist() for r in after_rows]
    assert index.search_ids(queries[:1], 60) == index.search_ids(queries[:1], 60), "single queries still walk the index"
    assert not ItemIndex.build(ids, vectors, config).screen_cold(warm, 0), "rank 0 turns it off"


def test_a_loose_bound_switches_screening_off_after_one_exact_batch() -> None:
    """Cold items spread over every direction leave the bound loose: the batch is still exact, and
    the index goes back to the plain search, which is then cheaper."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3_000, 32)).astype(np.float32)
    warm = np.zeros(len(vectors), dtype=bool)
    warm[:500] = True
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    index = ItemIndex.build(np.asarray([f"i{r}" for r in range(len(vectors))]), vectors)
    plain_rows, _ = index.search_exact(queries, 20)
    assert index.screen_cold(warm, 4)
    rows, _ = index.search_exact(queries, 20)
    assert all(set(a) == set(b) for a, b in zip(rows, plain_rows))
    assert not index.screened, "more than SCREEN_MAX_HITS rescored per query"


@pytest.mark.parametrize("config", [IndexConfig(), IndexConfig(exact_max_items=100, hnsw_m=8, ef_construction=40)], ids=["exact", "hnsw"])
def test_the_screen_reads_the_index_own_vectors_without_a_copy(config: IndexConfig) -> None:
    """A copy of every item vector was 1.1 GB of the 100x label folds' peak; the view is the same
    matrix, read-only, and keeps the FAISS index that owns it alive."""
    vectors, warm, queries = catalogue(seed=2)
    index = ItemIndex.build(np.asarray([f"item{i}" for i in range(len(vectors))]), vectors, config)
    stored = index.stored_vectors()
    np.testing.assert_array_equal(stored, vectors)
    assert not stored.flags.owndata and not stored.flags.writeable
    assert index.screen_cold(warm, 6)
    screen = index._screen
    assert screen is not None and screen.vectors.ctypes.data == stored.ctypes.data, "the screen keeps the view, not a copy"
    expected, _ = reference(queries, vectors, 40)
    rows, _ = index.search_exact(queries, 40)
    assert all(set(a) == set(b) for a, b in zip(rows, expected))
    del index, screen
    gc.collect()
    np.testing.assert_array_equal(stored, vectors)  # still valid: the view holds the FAISS index


def test_an_ivf_index_has_no_matrix_to_view() -> None:
    vectors, _, _ = catalogue(seed=4)
    index = ItemIndex.build(np.asarray([f"i{r}" for r in range(len(vectors))]), vectors, IndexConfig(exact_max_items=100, ann="ivf", ivf_lists=8))
    with pytest.raises(ValueError, match="IVF"):
        index.stored_vectors()
