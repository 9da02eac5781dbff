"""The job rank 0 hands to the other torchrun ranks (recsys/two_tower/ranks.py): what they load is
what rank 0 trains on, array for array, memory-mapped; outside torchrun nothing is shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.config import TwoTowerConfig
from recsys.two_tower.features import ItemTable, Queries, ValidationSet
from recsys.two_tower.ranks import TrainingJob, rank_group, share
from recsys.two_tower.spec import TowerSpec


def _queries(rng: np.random.Generator, n: int, half: bool) -> Queries:
    lengths = rng.integers(0, 4, size=n)
    indptr = np.concatenate([np.zeros(1, np.int64), np.cumsum(lengths)])
    return Queries(
        user_rows=rng.integers(-1, 20, size=n).astype(np.int64),
        hist_indptr=indptr,
        hist_items=rng.integers(0, 12, size=int(indptr[-1])).astype(np.int32),
        hist_weights=rng.random(int(indptr[-1])).astype(np.float32),
        dense=rng.random((n, 5)).astype(np.float16 if half else np.float32),
    )


def _job(validation: bool) -> TrainingJob:
    rng = np.random.default_rng(0)
    items = ItemTable(
        item_ids=np.array([f"item-{i}" for i in range(12)], dtype=str),
        categories=rng.integers(0, 3, size=(12, 2)).astype(np.int64),
        category_names=["colour", "type"],
        vocab_sizes=[3, 3],
        dense=rng.random((12, 6)).astype(np.float32),
        known=rng.random(12) < 0.7,
        target_counts=rng.integers(0, 5, size=12).astype(np.float64),
    )
    spec = TowerSpec(n_users=20, n_items=12, category_sizes=(3, 3), categories=("colour", "type"), user_dense_dim=5, item_dense_dim=6, als_dim=2, content_dim=2, hidden=(8, 4))
    val = ValidationSet(_queries(rng, 4, half=False), [np.array([1, 3]), np.array([], dtype=np.int64), np.array([7]), np.array([0, 2, 5])]) if validation else None
    return TrainingJob(spec, TwoTowerConfig(max_epochs=3, batch_size=64), items, _queries(rng, 30, half=True), rng.integers(0, 12, size=30).astype(np.int64), val, None if validation else 2)


def _same_queries(a: Queries, b: Queries) -> None:
    for name in ("user_rows", "hist_indptr", "hist_items", "hist_weights", "dense"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_job_round_trip_is_exact_and_memory_mapped(tmp_path: Path) -> None:
    for validation in (True, False):
        job = _job(validation)
        loaded = TrainingJob.load(job.save(tmp_path / f"job-{validation}"))
        assert loaded.spec == job.spec and loaded.config == job.config and loaded.epochs == job.epochs
        for name in ("item_ids", "categories", "dense", "known", "target_counts"):
            assert np.array_equal(getattr(loaded.items, name), getattr(job.items, name)), name
        assert loaded.items.category_names == job.items.category_names and loaded.items.vocab_sizes == job.items.vocab_sizes
        _same_queries(loaded.queries, job.queries)
        assert isinstance(loaded.queries.dense, np.memmap) and not loaded.queries.dense.flags.writeable  # shared pages, never copied
        assert np.array_equal(loaded.targets, job.targets)
        if validation:
            assert job.validation is not None and loaded.validation is not None
            _same_queries(loaded.validation.queries, job.validation.queries)
            assert [t.tolist() for t in loaded.validation.truth] == [t.tolist() for t in job.validation.truth]
        else:
            assert loaded.validation is None


def test_outside_torchrun_nothing_is_shared(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with rank_group(tmp_path / "jobs") as rank:
        assert rank == 0
        assert share(_job(False)) is None
    assert not (tmp_path / "jobs").exists()
