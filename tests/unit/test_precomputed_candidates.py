"""Precomputed candidates: the table a bundle serves known customers from, and the batch searches that make it.

Protects: the table holds exactly what the batch generator made (items, fused scores, per-source
ranks) and survives a save/load as memory-mapped arrays; queries read it only where it answers
them (known customer, no filter, within its depth) and compute the rest live; a table from
another fold is refused; the exact batch searches (two-tower / content index, sparse
co-purchase) return the true top-k.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from recsys.candidates import sources as src
from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.merge import merge_rows, merge_user
from recsys.candidates.row_lists import RowLists
from recsys.candidates.precomputed import PrecomputedCandidates
from recsys.candidates.query_candidates import QueryCandidates
from recsys.config import IndexConfig, ProjectConfig
from recsys.data import TrainingData, load_dataset, split_by_time
from recsys.data.interactions import IdIndex
from recsys.index.faiss_index import ItemIndex
from recsys.query import Query
from recsys.registry import build_model
from tests.conftest import make_shop, shop_config, write_standin_vectors

TWO_TOWER = {"id_dim": 8, "category_dim": 4, "hidden": [16], "output_dim": 8, "batch_size": 32, "max_epochs": 2, "validation_k": 10}
DEPTH = 25


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> CandidateGenerator:
    tmp = tmp_path_factory.mktemp("precomputed")
    config: ProjectConfig = shop_config(
        make_shop(tmp / "shop", n_users=80, n_items=40), tmp / "work",
        # 40 items over an exact_max_items of 10: the two-tower and content indexes are HNSW graphs.
        retrieval={"two_tower": TWO_TOWER, "candidates": {"size": 20, "per_source": 15, "product_column": "product_type"}, "index": {"exact_max_items": 10}},
    )
    ds = load_dataset(config.data)
    write_standin_vectors(config, ds.items)
    split = split_by_time(ds.interactions, config.split)
    model = build_model("candidates", config)
    assert isinstance(model, CandidateGenerator)
    return model.fit(TrainingData.build(split.history, ds.items, ds.users, as_of=split.test_start))


@pytest.fixture(scope="module")
def table(generator: CandidateGenerator) -> PrecomputedCandidates:
    return PrecomputedCandidates.build(generator, DEPTH, batch_size=32)  # several batches


def test_table_holds_what_the_batch_generator_makes(generator: CandidateGenerator, table: PrecomputedCandidates) -> None:
    users = generator.history.user_index.ids.tolist()
    made = generator.generate(users, DEPTH)
    assert table.rows.shape == (len(users), DEPTH)
    for row, user in enumerate(users):
        got = table.lookup(row, DEPTH)
        assert [c.item_id for c in got] == [c.item_id for c in made[user]]
        assert [c.ranks for c in got] == [c.ranks for c in made[user]]
        np.testing.assert_allclose([c.score for c in got], [c.score for c in made[user]], rtol=1e-6)
    assert [c.item_id for c in table.lookup(0, 5)] == [c.item_id for c in table.lookup(0, DEPTH)[:5]], "a shorter list is a prefix"
    # The build reports where its time went, one entry per source plus the fusion (the 100x projection reads them).
    assert set(table.build_seconds) == {*generator.config.sources, "fusion"} and all(v >= 0 for v in table.build_seconds.values())


def test_forked_workers_build_the_same_table(generator: CandidateGenerator) -> None:
    """Two forked workers (the 100x rung's 1.2M customers) fill exactly the rows one process
    fills, and a failing worker fails the build with its traceback."""
    one = PrecomputedCandidates.build(generator, DEPTH, batch_size=20)
    two = PrecomputedCandidates.build(generator, DEPTH, batch_size=20, workers=2)
    assert len(one.rows) // 20 >= 3, "the parent's batch and at least one batch per worker"
    np.testing.assert_array_equal(two.rows, one.rows)
    np.testing.assert_array_equal(two.scores, one.scores)
    np.testing.assert_array_equal(two.ranks, one.ranks)
    assert set(two.build_seconds) == set(one.build_seconds)


def test_a_failing_worker_fails_the_build(generator: CandidateGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = generator.source_rows

    def fails_after_the_first_batch(users: list[str], k: int | None = None) -> dict[str, RowLists]:
        calls["n"] += 1  # the parent's first batch succeeds; the forked workers' copies count on
        if calls["n"] > 1:
            raise ValueError("broken source")
        return real(users, k)

    monkeypatch.setattr(generator, "source_rows", fails_after_the_first_batch)
    with pytest.raises(RuntimeError, match="broken source"):
        PrecomputedCandidates.build(generator, DEPTH, batch_size=20, workers=2)


def test_a_killed_build_resumes_from_its_checkpoint(generator: CandidateGenerator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A build that dies partway (a session ends during the 100x rung's 1.5-hour precompute) leaves
    its finished batches in the checkpoint; the next build computes only the others and makes the
    same table as one uninterrupted build."""
    whole = PrecomputedCandidates.build(generator, DEPTH, batch_size=20)
    checkpoint = tmp_path / "checkpoint"
    real = generator.source_rows
    calls: list[list[str]] = []

    def dies_at_the_third_batch(users: list[str], k: int | None = None) -> dict[str, RowLists]:
        calls.append(list(users))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(users, k)

    monkeypatch.setattr(generator, "source_rows", dies_at_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        PrecomputedCandidates.build(generator, DEPTH, batch_size=20, checkpoint=checkpoint)
    n_batches = len(whole.rows) // 20
    assert n_batches >= 4
    calls.clear()
    resumed = PrecomputedCandidates.build(generator, DEPTH, batch_size=20, checkpoint=checkpoint)
    assert len(calls) == n_batches - 2, "the two finished batches are not computed again"
    assert calls[0][0] == generator.history.user_index.ids[40]
    assert resumed.computed_users == len(whole.rows) - 40
    np.testing.assert_array_equal(resumed.rows, whole.rows)
    np.testing.assert_array_equal(resumed.scores, whole.scores)
    np.testing.assert_array_equal(resumed.ranks, whole.ranks)
    # The seconds per part cover every batch, the two of the killed build included.
    assert set(resumed.build_seconds) == set(whole.build_seconds)


def test_a_checkpoint_of_another_layout_is_started_over(generator: CandidateGenerator, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    PrecomputedCandidates.build(generator, DEPTH, batch_size=20, checkpoint=checkpoint)
    deeper = PrecomputedCandidates.build(generator, DEPTH + 5, batch_size=20, checkpoint=checkpoint)
    assert deeper.computed_users == len(deeper.rows) and deeper.depth == DEPTH + 5
    again = PrecomputedCandidates.build(generator, DEPTH + 5, batch_size=20, checkpoint=checkpoint, workers=2)
    assert again.computed_users == 0, "every batch of the same layout is done"
    np.testing.assert_array_equal(again.rows, deeper.rows)
    (checkpoint / "layout.json").write_text("{not json")
    assert PrecomputedCandidates.build(generator, DEPTH, batch_size=20, checkpoint=checkpoint).computed_users == len(deeper.rows)


def test_forked_workers_fill_a_checkpoint(generator: CandidateGenerator, tmp_path: Path) -> None:
    one = PrecomputedCandidates.build(generator, DEPTH, batch_size=20)
    two = PrecomputedCandidates.build(generator, DEPTH, batch_size=20, workers=2, checkpoint=tmp_path / "checkpoint")
    assert isinstance(two.rows, np.memmap)
    np.testing.assert_array_equal(two.rows, one.rows)
    np.testing.assert_array_equal(two.ranks, one.ranks)
    assert set(two.build_seconds) == set(one.build_seconds)


def test_save_and_load_memory_mapped(table: PrecomputedCandidates, generator: CandidateGenerator, tmp_path: Path) -> None:
    table.save(tmp_path / "pc")
    loaded = PrecomputedCandidates.load(tmp_path / "pc")
    assert isinstance(loaded.rows, np.memmap), "workers share the table through the page cache"
    assert loaded.matches(generator) and loaded.sources == table.sources
    for row in (0, len(table.rows) - 1):
        assert loaded.lookup(row, DEPTH) == table.lookup(row, DEPTH)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "no temp folder left behind"


def test_a_checkpointed_table_is_saved_by_hard_links_and_outlives_its_checkpoint(generator: CandidateGenerator, tmp_path: Path) -> None:
    """The arrays a checkpoint holds are linked into the saved table, not copied (GBs at 1M customers)."""
    checkpoint = tmp_path / "checkpoint"
    built = PrecomputedCandidates.build(generator, DEPTH, batch_size=20, checkpoint=checkpoint)
    built.save(tmp_path / "pc")
    for name in ("rows", "scores", "ranks"):
        assert (tmp_path / "pc" / f"{name}.npy").stat().st_ino == (checkpoint / f"{name}.npy").stat().st_ino
    expected = [built.lookup(row, DEPTH) for row in range(len(built.rows))]
    shutil.rmtree(checkpoint)  # what the stage runner does once the table is saved
    loaded = PrecomputedCandidates.load(tmp_path / "pc")
    assert [loaded.lookup(row, DEPTH) for row in range(len(loaded.rows))] == expected


def test_a_view_of_a_checkpoint_array_is_copied_not_linked(generator: CandidateGenerator, tmp_path: Path) -> None:
    built = PrecomputedCandidates.build(generator, DEPTH, batch_size=20, checkpoint=tmp_path / "checkpoint")
    half = PrecomputedCandidates(built.item_ids, built.sources, built.rows[:, :3], built.scores[:, :3], built.ranks[:, :3], built.users_digest)
    half.save(tmp_path / "pc")
    rows = np.load(tmp_path / "pc" / "rows.npy")
    assert (tmp_path / "pc" / "rows.npy").stat().st_ino != (tmp_path / "checkpoint" / "rows.npy").stat().st_ino
    np.testing.assert_array_equal(rows, np.asarray(built.rows[:, :3]))


def test_queries_read_the_table_only_where_it_answers_them(generator: CandidateGenerator, table: PrecomputedCandidates, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = QueryCandidates(generator, {"product_type": ["x"] * len(generator.history.item_index)}, precomputed=table)
    user = generator.history.user_index.ids[3]
    calls: list[int] = []
    live = generator.generate
    monkeypatch.setattr(generator, "generate", lambda users, size=None: calls.append(size) or live(users, size))
    assert stage.merged(Query(user_id=user, k=10), DEPTH) == table.lookup(3, DEPTH)
    assert calls == [], "a known customer within the table's depth is a lookup"
    stage.merged(Query(user_id=user, k=10), DEPTH + 1)
    assert calls == [DEPTH + 1], "a longer list is computed live"
    filtered = Query(user_id=user, k=10, filters={"product_type": ["x"]})
    assert stage.size_for(filtered, 10) > DEPTH, "a filtered query merges more than the table holds, so it goes live"


def test_a_table_of_another_fold_is_refused(generator: CandidateGenerator, table: PrecomputedCandidates) -> None:
    other = PrecomputedCandidates(table.item_ids, table.sources, table.rows, table.scores, table.ranks, "0" * 16)
    with pytest.raises(ValueError, match="another fold"):
        QueryCandidates(generator, {}, precomputed=other)


def test_exact_batch_search_of_an_hnsw_index_is_the_true_top_k() -> None:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((300, 12)).astype(np.float32)
    queries = rng.standard_normal((40, 12)).astype(np.float32)
    index = ItemIndex.build(np.array([f"i{j}" for j in range(300)]), items, IndexConfig(exact_max_items=10))
    assert index.kind == "hnsw"
    rows, scores = index.search_exact(queries, 15)
    truth = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(np.sort(rows, axis=1), np.sort(truth, axis=1))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, truth, axis=1), rtol=1e-5)
    assert index.search_ids(queries, 15, batch_exact=True) == [index.item_ids[r].tolist() for r in rows]


def test_batch_copurchase_lists_are_the_true_top_k(generator: CandidateGenerator) -> None:
    users = generator.history.user_index.ids.tolist()
    rows = generator.history.user_index.lookup(users)
    dense = np.asarray((src.recent_items(generator.history, rows, 3) @ generator.knn.similarity).todense(), dtype=np.float32)
    lists = src.copurchase_rows(generator.knn, generator.history, users, 10, 3)
    for j in range(len(users)):
        order = np.lexsort((np.arange(dense.shape[1]), -dense[j]))[:10]
        np.testing.assert_array_equal(lists.of(j), order[dense[j, order] > 0])


def test_vectorised_merge_is_merge_user_exactly() -> None:
    """Same items, order (score, best rank, then id as a string), bit-identical sums, ranks; duplicates and zero weights."""
    rng = np.random.default_rng(1)
    ids = np.array([f"item{j}" for j in rng.permutation(60)])  # row order differs from string order
    index = IdIndex(ids)
    users = [f"u{i}" for i in range(30)]
    per_source = {
        source: {u: rng.choice(ids, size=rng.integers(0, 25)).tolist() for u in users if rng.random() > 0.1}  # repeats, gaps, missing users
        for source in ("a", "b", "c")
    }
    weights = {"a": 1.0, "b": 0.0, "c": 2.5}
    packed = {s: RowLists.from_arrays([index.lookup(lists.get(u, [])) for u in users]) for s, lists in per_source.items()}
    merged = merge_rows(packed, len(users), 12, weights, 10.0, index)
    assert merged.sources == ["a", "b", "c"]
    for i, user in enumerate(users):
        expected = merge_user({s: lists.get(user, []) for s, lists in per_source.items()}, 12, weights, 10.0)
        kept = merged.rows[i] >= 0
        assert ids[merged.rows[i][kept]].tolist() == [c.item_id for c in expected]
        assert merged.scores[i][kept].tolist() == [c.score for c in expected], "the same float sums, bit for bit"
        assert [{s: int(r) for s, r in zip(merged.sources, row) if r} for row in merged.ranks[i][kept]] == [c.ranks for c in expected]
    one_list = RowLists.from_arrays([np.array([0, 1])])
    with pytest.raises(ValueError, match="1 lists for 2 users"):
        merge_rows({"a": one_list}, 2, 5, {}, 10.0, index)
    with pytest.raises(ValueError, match="outside 0..59"):
        merge_rows({"a": RowLists.from_arrays([np.array([60])])}, 1, 5, {}, 10.0, index)
