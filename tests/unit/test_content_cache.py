"""The vector cache: hits, misses, duplicates, identities, and what an interrupted run keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.content.cache import VectorCache, cached_encode, content_hash


class Counting:
    """An encode function that records what it was asked to compute and can fail on demand."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_after = fail_after

    def __call__(self, batch: list[str]) -> np.ndarray:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append(list(batch))
        return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in batch], dtype=np.float32)

    @property
    def computed(self) -> list[str]:
        return [t for c in self.calls for t in c]


def texts(n: int) -> list[str]:
    return [f"item text {i}" for i in range(n)]


def test_second_run_computes_nothing_and_returns_the_same_vectors(tmp_path: Path) -> None:
    items = texts(10)
    keys = [content_hash(t) for t in items]
    first = Counting()
    a = cached_encode(items, keys, first, VectorCache(tmp_path, "enc-v1"), batch_size=3, progress=False)
    assert sorted(first.computed) == sorted(items) and [len(c) for c in first.calls] == [3, 3, 3, 1]
    second = Counting()
    b = cached_encode(items, keys, second, VectorCache(tmp_path, "enc-v1"), batch_size=3, progress=False)  # fresh process view
    assert second.calls == [] and np.array_equal(a, b)
    # Reordered inputs plus one new item: only the new one is computed.
    third = Counting()
    c = cached_encode(items[::-1] + ["new"], [*keys[::-1], content_hash("new")], third, VectorCache(tmp_path, "enc-v1"), 3, progress=False)
    assert third.computed == ["new"] and np.array_equal(c[:10], a[::-1])


def test_duplicates_are_computed_once_and_identity_separates_caches(tmp_path: Path) -> None:
    items = ["a", "b", "a", "a"]
    keys = [content_hash(t) for t in items]
    enc = Counting()
    out = cached_encode(items, keys, enc, VectorCache(tmp_path, "enc-v1"), batch_size=8, progress=False)
    assert enc.computed == ["a", "b"] and np.array_equal(out[0], out[2])
    other = Counting()
    cached_encode(items, keys, other, VectorCache(tmp_path, "enc-v2"), batch_size=8, progress=False)
    assert other.computed == ["a", "b"], "another encoder identity must not reuse enc-v1's vectors"
    assert len(VectorCache(tmp_path, "enc-v1")) == 2


def test_interrupted_run_keeps_finished_shards(tmp_path: Path) -> None:
    items = texts(20)
    keys = [content_hash(t) for t in items]
    with pytest.raises(KeyboardInterrupt):
        cached_encode(items, keys, Counting(fail_after=5), VectorCache(tmp_path, "enc"), batch_size=2, shard_batches=2, progress=False)
    cache = VectorCache(tmp_path, "enc")
    assert len(cache) == 8, "two finished shards of 2 batches x 2 items survive; the half shard is lost"
    assert not list(cache.dir.glob(".*")) or all(p.name == "identity.txt" for p in cache.dir.glob(".*"))
    resumed = Counting()
    out = cached_encode(items, keys, resumed, cache, batch_size=2, shard_batches=2, progress=False)
    assert len(resumed.computed) == 12 and set(resumed.computed).isdisjoint(items[:8])
    np.testing.assert_array_equal(out, Counting()(items))


def test_no_cache_still_encodes_and_mismatched_inputs_fail(tmp_path: Path) -> None:
    enc = Counting()
    out = cached_encode(["x", "y"], ["k1", "k2"], enc, None, batch_size=1, progress=False)
    assert out.shape == (2, 3) and enc.computed == ["x", "y"]
    with pytest.raises(ValueError, match="keys"):
        cached_encode(["x"], [], enc, None, batch_size=1, progress=False)


def test_unreadable_shard_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = VectorCache(tmp_path, "enc")
    cache.put_many(["k"], np.ones((1, 3), np.float32))
    (cache.dir / "shard-99999999999999999999-broken.npz").write_bytes(b"not a zip")
    reloaded = VectorCache(tmp_path, "enc")
    assert "k" in reloaded and "ignoring unreadable cache shard" in caplog.text
