"""Protects the single implementation of the ranking metrics (hand-computed expectations)."""

import math

import numpy as np
import pytest

from recsys.evaluation import metrics
from recsys.evaluation.metrics import (
    average_precision_at_k,
    catalogue_coverage,
    dedupe,
    hit_rate_at_k,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
    top_k_indices,
)


def test_average_precision_competition_definition() -> None:
    # hits at ranks 1 and 3: (1/1 + 2/3) / min(2, 12)
    assert average_precision_at_k(["a", "x", "b"], {"a", "b"}, 12) == pytest.approx((1 + 2 / 3) / 2)
    # hit only at rank 2 of 3 relevant: (1/2) / 3
    assert average_precision_at_k(["x", "a", "y"], {"a", "b", "c"}, 12) == pytest.approx(0.5 / 3)


def test_average_precision_divides_by_k_when_truth_is_larger() -> None:
    truth = {f"t{i}" for i in range(20)}
    preds = [f"t{i}" for i in range(3)] + ["x"] * 0
    # 3 hits at ranks 1..3 with k=3 and 20 relevant -> divide by min(20, 3) = 3 -> 1.0
    assert average_precision_at_k(preds, truth, 3) == pytest.approx(1.0)
    # with k=12 the same 3 hits give 3 / 12
    assert average_precision_at_k(preds, truth, 12) == pytest.approx(3 / 12)


def test_duplicates_count_once() -> None:
    assert dedupe(["a", "a", "b", "a"]) == ["a", "b"]
    # the repeated "a" must not be a second hit, and "b" moves up to rank 2
    assert average_precision_at_k(["a", "a", "b"], {"a", "b"}, 12) == pytest.approx(1.0)
    assert recall_at_k(["a", "a", "a"], {"a", "b"}, 2) == pytest.approx(0.5)
    assert precision_at_k(["a", "a"], {"a"}, 2) == pytest.approx(0.5)


def test_recall_precision_hitrate() -> None:
    assert recall_at_k(["a", "b", "c"], {"a", "c", "z", "w"}, 2) == pytest.approx(1 / 4)
    assert precision_at_k(["a", "b", "c"], {"a", "c"}, 3) == pytest.approx(2 / 3)
    # a short list is not rewarded: 1 hit / k=5
    assert precision_at_k(["a"], {"a"}, 5) == pytest.approx(1 / 5)
    assert hit_rate_at_k(["x", "a"], {"a"}, 1) == 0.0
    assert hit_rate_at_k(["x", "a"], {"a"}, 2) == 1.0


def test_ndcg_hand_computed() -> None:
    dcg = 1 / math.log2(3)  # hit at rank 2
    idcg = 1 + 1 / math.log2(3)  # two relevant items
    assert ndcg_at_k(["x", "a", "y"], {"a", "b"}, 3) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["a", "b"], {"a", "b"}, 2) == pytest.approx(1.0)


def test_empty_truth_and_predictions() -> None:
    for fn in (average_precision_at_k, recall_at_k, ndcg_at_k):
        assert fn(["a"], set(), 5) == 0.0
        assert fn([], {"a"}, 5) == 0.0


def test_top_k_breaks_ties_by_lower_index() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    assert top_k_indices(scores, 3).tolist() == [1, 3, 0]
    batch = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 2.0]])
    assert top_k_indices(batch, 2).tolist() == [[0, 1], [1, 2]]
    assert top_k_indices(scores, 10).tolist() == [1, 3, 0, 2, 4]


def _reference_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Best first, ties by lower index, NaN last: a full stable sort of every row."""
    keyed = np.where(np.isnan(scores), -np.inf, scores)
    return np.stack([np.lexsort((np.arange(len(row)), np.isnan(raw), -row))[:k] for row, raw in zip(keyed, scores)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_k_on_large_blocks_matches_a_full_sort(dtype: type) -> None:
    # Large blocks take the torch.topk partition: it must pick the same items, in the same order,
    # as the small-block path, including ties at the k-th score, -inf (seen items) and NaN.
    rng = np.random.default_rng(3)
    scores = np.round(rng.standard_normal((8, 2**17)), 2).astype(dtype)  # two decimals: many ties
    assert scores.size >= metrics.TORCH_TOPK_MIN_SCORES
    scores[1, :1000] = -np.inf
    scores[3] = 0.5  # every score tied
    expected = _reference_top_k(scores, 100)
    assert np.array_equal(top_k_indices(scores, 100), expected)
    with_nan = scores.copy()
    with_nan[2, rng.choice(2**17, 50, replace=False)] = np.nan  # such a block is partitioned by numpy
    assert np.array_equal(top_k_indices(with_nan, 100), _reference_top_k(with_nan, 100))
    read_only = scores.copy()
    read_only.flags.writeable = False
    assert np.array_equal(top_k_indices(read_only, 100), expected)
    assert np.array_equal(top_k_indices(scores[4], 100), expected[4])  # one row is the small path


def test_coverage_and_novelty() -> None:
    recs = [["a", "b"], ["a", "c"]]
    assert catalogue_coverage(recs, 10, 2) == pytest.approx(0.3)
    assert catalogue_coverage(recs, 10, 1) == pytest.approx(0.1)
    pop = {"a": 2.0, "b": 1.0, "c": 1.0}  # total 4
    expected = np.mean([-math.log2(0.5), -math.log2(0.25), -math.log2(0.5), -math.log2(0.25)])
    assert novelty(recs, pop, 2) == pytest.approx(expected)
    # an item never seen in training counts like a single interaction
    assert novelty([["new"]], pop, 1) == pytest.approx(-math.log2(1 / 4))
