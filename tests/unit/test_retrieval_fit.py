"""training.retrieval: the one retrieval fit (equal or tuned fusion weights) and run_retrieval on top of it."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from features.content.standin import build_standin_vectors
from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.merge import merge
from recsys.config import ProjectConfig
from recsys.data import TrainingData, load_dataset, split_by_time
from recsys.index.faiss_index import ItemIndex
from recsys.two_tower.recommender import TwoTowerRecommender
from recsys.vectors import ItemVectors
from tests.conftest import make_shop, shop_config
from training import retrieval
from training.retrieval import RetrievalFit, fit_retrieval, run_retrieval

TWO_TOWER: dict[str, Any] = {"id_dim": 8, "category_dim": 4, "hidden": [16], "output_dim": 8, "batch_size": 32, "max_epochs": 2, "validation_k": 10}
RETRIEVAL: dict[str, Any] = {"two_tower": TWO_TOWER, "candidates": {"size": 20, "per_source": 10, "product_column": "product_type"}, "index": {"exact_max_items": 10}}


def _config(tmp: Path, **retrieval_overrides: Any) -> ProjectConfig:
    return shop_config(make_shop(tmp / "shop", n_users=60, n_items=30), tmp / "work", retrieval={**RETRIEVAL, **retrieval_overrides})


def _window(config: ProjectConfig) -> TrainingData:
    ds = load_dataset(config.data)
    split = split_by_time(ds.interactions, config.split)
    return TrainingData.build(split.history, ds.items, ds.users, as_of=split.test_start)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectConfig, TrainingData, ItemVectors]:
    config = _config(tmp_path_factory.mktemp("retrieval_fit"))
    data = _window(config)
    return config, data, build_standin_vectors(data.items, config.data.items.columns.text, 8)


@pytest.fixture(scope="module")
def equal(world: tuple[ProjectConfig, TrainingData, ItemVectors]) -> RetrievalFit:
    config, data, vectors = world
    return fit_retrieval(config, data, vectors)


class _Spy:
    """Wraps the real weight tuning and remembers what it was given and returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.real = retrieval.tune_source_weights
        self.calls: list[tuple[dict[str, Any], dict[str, list[str]], tuple[dict[str, float], float]]] = []
        monkeypatch.setattr(retrieval, "tune_source_weights", self)

    def __call__(self, lists: Any, truth: Any, *args: Any, **kwargs: Any) -> tuple[dict[str, float], float]:
        out = self.real(lists, truth, *args, **kwargs)
        self.calls.append((lists, truth, out))
        return out


def test_untuned_fit_has_equal_weights_and_every_part(equal: RetrievalFit, world: tuple[ProjectConfig, TrainingData, ItemVectors]) -> None:
    config, data, _ = world
    assert config.retrieval.candidates.weights == {}
    gen = equal.generator
    assert gen.weights == {} and equal.weights == {} and equal.validation_recall is None
    assert gen.als is equal.als and gen.two_tower is equal.two_tower and gen.tower_index is equal.tower_index
    assert gen.history is not None and equal.factors is not None
    assert equal.two_tower.validation_result is not None, "without two_tower_epochs the two-tower stops early on its own"
    # Untuned, nothing reads the early-stopping run's held-out vectors (1.1 GB of item vectors at the 100x rung).
    assert not hasattr(equal.two_tower, "holdout_item_vectors") and not hasattr(equal.two_tower, "holdout_user_vectors")
    assert set(equal.timings) == {"als_fit", "two_tower_fit", "index_build", "candidates_fit"}
    # Empty weights = every source weighted 1.
    users = data.user_index.ids[:20].tolist()
    c = config.retrieval.candidates
    ones = merge(gen.source_lists(users), users, c.size, {s: 1.0 for s in c.sources}, c.rrf_k)
    got = gen.generate(users)
    assert all([x.item_id for x in got[u]] == [x.item_id for x in ones[u]] for u in users)


def test_tuned_fit_uses_the_tuned_weights(world: tuple[ProjectConfig, TrainingData, ItemVectors], monkeypatch: pytest.MonkeyPatch) -> None:
    config, data, vectors = world
    spy = _Spy(monkeypatch)
    fit = fit_retrieval(config, data, vectors, tune_weights=True)
    assert len(spy.calls) == 1
    lists, truth, (weights, recall) = spy.calls[0]
    assert set(lists) == set(config.retrieval.candidates.sources), "every source, the two-tower's from its held-out run"
    assert list(truth) == fit.two_tower.holdout_user_ids.tolist()
    assert fit.generator.weights == weights == fit.weights and set(weights) == set(config.retrieval.candidates.sources)
    assert fit.validation_recall == recall and 0.0 <= recall <= 1.0
    assert "fusion_tuning" in fit.timings


def test_configured_weights_win_over_tuning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configured = {"history": 2.0, "als": 0.5}
    config = _config(tmp_path, candidates={**RETRIEVAL["candidates"], "weights": configured})
    spy = _Spy(monkeypatch)
    fit = fit_retrieval(config, _window(config), None, tune_weights=True)
    assert spy.calls == []
    assert fit.generator.weights == configured == fit.weights and fit.validation_recall is None


@pytest.mark.parametrize("epochs", [1, 3])
def test_two_tower_epochs_pins_the_epochs(world: tuple[ProjectConfig, TrainingData, ItemVectors], epochs: int) -> None:
    config, data, vectors = world
    fit = fit_retrieval(config, data, vectors, two_tower_epochs=epochs)
    tower = fit.generator.two_tower
    assert tower.train_result is not None and tower.train_result.epochs == epochs
    assert tower.validation_result is None, "no early-stopping run of its own"
    assert config.retrieval.two_tower.max_epochs == 2, "the config is not changed"


def test_tuning_needs_the_early_stopping_run(world: tuple[ProjectConfig, TrainingData, ItemVectors]) -> None:
    config, data, vectors = world
    with pytest.raises(ValueError, match="two_tower_epochs"):
        fit_retrieval(config, data, vectors, two_tower_epochs=1, tune_weights=True)


def test_on_epoch_sees_both_two_tower_runs(world: tuple[ProjectConfig, TrainingData, ItemVectors]) -> None:
    config, data, vectors = world
    seen: list[tuple[str, int]] = []
    fit_retrieval(config, data, vectors, on_epoch=lambda stage, epoch, metrics: seen.append((stage, epoch)))
    assert {stage for stage, _ in seen} == {"validation", "final"}


def test_run_retrieval_measures_the_tuned_fit(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ds = load_dataset(config.data)
    build_standin_vectors(ds.items, config.data.items.columns.text, 8).save(config.work_path / config.content.vectors_path)
    summary = run_retrieval(config, ds, save_dir=tmp_path / "out", track=False)
    assert set(summary) == {"protocol", "users", "content_encoder", "test", "two_tower", "index", "candidates", "timings_seconds", "artifacts"}
    k = max(config.evaluation.recall_ks)
    assert [row["model"] for row in summary["test"]] == ["als", "two_tower", "candidates"]
    assert {"validation_history", "best_epoch", "final_run_epochs", f"cold_item_recall@{k}", "cold_item_users"} <= set(summary["two_tower"])
    assert {"kind", "items", "dim", "build_seconds", "query_ms_per_user", f"ann_recall@{k}_vs_exact"} == set(summary["index"])
    cands = summary["candidates"]
    assert set(cands["sources"]) == set(config.retrieval.candidates.sources)
    assert set(cands["weights"]) == set(config.retrieval.candidates.sources) and np.isfinite(cands[f"validation_recall@{k}"])
    assert set(summary["timings_seconds"]) == {"als_fit", "two_tower_fit", "index_build", "fusion_tuning", "candidates_fit", "candidates_generate", "total"}
    out = tmp_path / "out"
    assert (out / "candidates").is_dir() and (out / "two_tower_index").is_dir() and (out / "als_factors.npz").is_file()


def test_retrieval_module_does_not_import_the_pipeline() -> None:
    tree = ast.parse(Path(retrieval.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "training.pipeline" not in imported and not any(m and m.startswith("training.pipeline") for m in imported)
    top_level = {id(n) for n in tree.body}
    nested = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in top_level]
    assert nested == [], "every import at the top of the module"


def test_batch_only_fit_builds_flat_indexes_with_the_same_batch_lists(
    world: tuple[ProjectConfig, TrainingData, ItemVectors], equal: RetrievalFit
) -> None:
    """A label fold's generator (batch_only) skips the approximate indexes; its batch lists are the serving fit's."""
    config, data, vectors = world
    assert equal.generator.tower_index is not None and equal.generator.tower_index.kind == "hnsw"  # 30 items > exact_max_items 10
    batch = fit_retrieval(config, data, vectors, two_tower_epochs=equal.two_tower.train_result.epochs, batch_only=True)
    assert batch.generator.tower_index is not None and batch.generator.tower_index.kind == "exact"
    assert batch.generator.content_index.kind == "exact"
    stored = batch.generator.tower_index.stored_vectors()
    assert batch.two_tower.item_vectors.ctypes.data == stored.ctypes.data, "the tower reads the flat index's matrix: one copy"
    # Same data, same seeds: a batch of users (searched exactly either way) gets the same candidates.
    same = fit_retrieval(config, data, vectors, two_tower_epochs=equal.two_tower.train_result.epochs)
    users = data.user_index.ids[:25].tolist()
    assert {u: [c.item_id for c in cs] for u, cs in batch.generator.generate(users).items()} == {
        u: [c.item_id for c in cs] for u, cs in same.generator.generate(users).items()
    }
    # A label fold's fit computes only its label users' two-tower vectors: their candidates are the same.
    label_only = fit_retrieval(config, data, vectors, two_tower_epochs=equal.two_tower.train_result.epochs, batch_only=True, vector_users=users)
    assert {u: [c.item_id for c in cs] for u, cs in label_only.generator.generate(users).items()} == {
        u: [c.item_id for c in cs] for u, cs in same.generator.generate(users).items()
    }
    others = np.setdiff1d(np.arange(data.n_users), data.user_index.lookup(users))
    assert not label_only.generator.two_tower.user_vectors[others].any()


def test_a_batch_fit_shares_the_tower_matrix_before_the_generator_fits(
    world: tuple[ProjectConfig, TrainingData, ItemVectors], equal: RetrievalFit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tower's own copy of its item vectors must be gone before the other sources fit (a label fold's peak at 100x)."""
    config, data, vectors = world
    shared_at_fit: list[bool] = []
    original = CandidateGenerator.fit

    def spy(self: CandidateGenerator, data: TrainingData, **kwargs: object) -> CandidateGenerator:
        tower, index = kwargs["two_tower"], kwargs["tower_index"]
        assert isinstance(tower, TwoTowerRecommender) and isinstance(index, ItemIndex)
        shared_at_fit.append(tower.item_vectors.ctypes.data == index.stored_vectors().ctypes.data)
        return original(self, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(CandidateGenerator, "fit", spy)
    fit_retrieval(config, data, vectors, two_tower_epochs=equal.two_tower.train_result.epochs, batch_only=True)
    assert shared_at_fit == [True]


def test_vector_users_must_be_users_of_the_window(world: tuple[ProjectConfig, TrainingData, ItemVectors]) -> None:
    config, data, vectors = world
    with pytest.raises(ValueError, match="1 of the vector_users are not in the window .*'nobody'"):
        fit_retrieval(config, data, vectors, vector_users=[data.user_index.ids[0], "nobody"])
