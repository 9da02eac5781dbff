"""The FAISS item index: exact below the threshold, HNSW or IVF above it, ANN recall, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.config import IndexConfig
from recsys.index.faiss_index import ItemIndex, ann_recall, exact_top_k


def clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    """Unnormalised vectors around 50 centres: structure like item embeddings, with varied norms."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, d))
    return (centres[rng.integers(0, 50, n)] + 0.4 * rng.normal(size=(n, d))).astype(np.float32)


def test_small_catalogue_is_exact_and_matches_brute_force() -> None:
    vectors = clustered(500)
    ids = np.asarray([f"i{j}" for j in range(500)])
    index = ItemIndex.build(ids, vectors, IndexConfig(exact_max_items=1000))
    assert index.kind == "exact" and len(index) == 500
    queries = clustered(20, seed=1)
    rows, scores = index.search(queries, 10)
    brute = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    assert (rows == brute).mean() > 0.99  # float ties aside, the same order
    assert np.all(np.diff(scores, axis=1) <= 1e-5)
    assert index.search_ids(queries[:1], 3)[0] == ids[rows[0, :3]].tolist()


def test_large_catalogue_uses_hnsw_with_recall_at_100_above_098() -> None:
    vectors = clustered(6000, d=48)
    index = ItemIndex.build(np.arange(6000).astype(str), vectors, IndexConfig(exact_max_items=5000))
    assert index.kind == "hnsw"
    queries = clustered(100, d=48, seed=2)
    assert ann_recall(index, queries, vectors, k=100) >= 0.98


def test_ivf_reaches_recall_at_100_above_098_and_its_breadth_trades_recall() -> None:
    vectors = clustered(6000, d=48)
    index = ItemIndex.build(np.arange(6000).astype(str), vectors, IndexConfig(exact_max_items=5000, ann="ivf", nprobe=32))
    assert index.kind == "ivf" and index.breadth == 32
    queries = clustered(100, d=48, seed=2)
    assert ann_recall(index, queries, vectors, k=100) >= 0.98
    index.set_breadth(1)
    assert ann_recall(index, queries, vectors, k=100) < 0.98, "one cell of many cannot hold every neighbour"
    with pytest.raises(ValueError, match="breadth"):
        index.set_breadth(0)


@pytest.mark.parametrize("ann", ["hnsw", "ivf"])
def test_approximate_scores_are_inner_products_and_vectors_round_trip(ann: str) -> None:
    vectors = clustered(3000, d=16)
    index = ItemIndex.build(np.arange(3000).astype(str), vectors, IndexConfig(exact_max_items=100, ann=ann))
    queries = clustered(5, d=16, seed=5)
    rows, scores = index.search(queries, 10)
    expected = np.take_along_axis(queries @ vectors.T, rows, axis=1)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-3)  # the MIPS-to-L2 reduction undone exactly
    np.testing.assert_allclose(index.vector(7), vectors[7], rtol=1e-6)


def test_ann_recall_is_one_for_the_exact_index() -> None:
    vectors = clustered(300)
    index = ItemIndex.build(np.arange(300).astype(str), vectors)
    assert ann_recall(index, clustered(10, seed=3), vectors, k=50) == pytest.approx(1.0)
    assert exact_top_k(vectors[:2], vectors, 1).shape == (2, 1)


@pytest.mark.parametrize(("threshold", "ann"), [(10_000, "hnsw"), (100, "hnsw"), (100, "ivf")])
def test_save_load_round_trip(tmp_path: Path, threshold: int, ann: str) -> None:
    vectors = clustered(4000)
    index = ItemIndex.build(np.arange(4000).astype(str), vectors, IndexConfig(exact_max_items=threshold, ann=ann, nprobe=3))
    loaded = ItemIndex.load(index.save(tmp_path / "index"))
    queries = clustered(5, seed=4)
    assert loaded.kind == index.kind and loaded.breadth == index.breadth
    np.testing.assert_array_equal(loaded.search(queries, 20)[0], index.search(queries, 20)[0])
    assert loaded.item_ids.tolist() == index.item_ids.tolist()
    np.testing.assert_array_equal(loaded.vector(3), index.vector(3))
    assert not list(tmp_path.glob(".index*")), "no temp dirs left behind"


def test_bad_input_is_reported() -> None:
    with pytest.raises(ValueError, match="3 ids"):
        ItemIndex.build(np.asarray(["a", "b", "c"]), np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        ItemIndex.build(np.asarray(["a"]), np.full((1, 4), np.nan, dtype=np.float32))


def test_load_rejects_a_folder_that_is_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an item index"):
        ItemIndex.load(tmp_path)
