"""The retrieval stage end to end: ALS factors, two-tower, FAISS index, candidates, measured.

:func:`fit_retrieval` fits the stage on one window (``make train`` calls it once per label fold and
for the serving fold; ``recsys retrieval`` calls it with ``tune_weights=True``);
:func:`run_retrieval` fits it on the history window and measures it.

Protocol (H&M last-day): everything is fitted on the history window (train + validation days);
the two-tower stops early on the validation day inside its own fit, and the candidate fusion
weights are tuned on that same validation day with sources fitted on the train days only.
The test day is used once, for the numbers reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import mlflow
import numpy as np

from recsys.candidates.generator import CandidateGenerator, share_item_vectors
from recsys.candidates.merge import merge
from recsys.candidates.merge import tune_weights as tune_source_weights
from recsys.candidates.sources import index_rows
from recsys.config import ConfigError, ProjectConfig
from recsys.data import Dataset, TrainingData
from recsys.evaluation.metrics import recall_at_k
from recsys.evaluation.protocol import (
    EvaluationSetup,
    ModelEvaluation,
    evaluate_model,
    prepare_evaluation,
    score_lists,
)
from recsys.index.faiss_index import ItemIndex, ann_recall
from recsys.models.als_factors import ALSFactors
from recsys.models.implicit_models import ALSRecommender
from recsys.two_tower.recommender import FeatureSettings, TwoTowerRecommender, holdout
from recsys.vectors import ItemVectors
from training.memory import log_memory
from training.tracking import flatten, log_metrics, start_run

log = logging.getLogger(__name__)


def cold_item_recall(lists: dict[str, list[str]], setup: EvaluationSetup, k: int) -> tuple[float, int]:
    """Recall@k restricted to test-day items never bought in the history window.

    Returns:
        (mean recall over users with at least one such item, number of those users).
    """
    bought = np.asarray(setup.train.user_items.sum(axis=0)).ravel() > 0
    known = set(setup.train.item_index.ids[bought].tolist())
    values = []
    for user in setup.users:
        cold = [i for i in setup.truth[user] if i not in known]
        if cold:
            values.append(recall_at_k(lists.get(user, []), cold, k))
    return (float(np.mean(values)) if values else float("nan")), len(values)


def cold_pool_recall(tower: TwoTowerRecommender, setup: EvaluationSetup, k: int) -> float:
    """Can the item tower find new items at all? Rank only the never-bought items, per user.

    The whole-catalogue ranking puts warm items (with id and ALS blocks) first, so this isolates
    what content and metadata alone give: Recall@k of each user's cold test items among the
    cold pool (random ranking: about k / pool size).
    """
    bought = np.asarray(setup.train.user_items.sum(axis=0)).ravel() > 0
    pool = np.flatnonzero(~bought)
    pool_ids = tower.item_index.ids[pool]
    pool_set = set(pool_ids.tolist())
    values = []
    for user in setup.users:
        cold = [i for i in setup.truth[user] if i in pool_set]
        row = tower.user_index.get(user)
        if not cold or row is None:
            continue
        scores = tower.item_vectors[pool] @ tower.user_vectors[row]
        top = pool_ids[np.argsort(-scores, kind="stable")[:k]].tolist()
        values.append(recall_at_k(top, cold, k))
    return float(np.mean(values)) if values else float("nan")


def _row(result: ModelEvaluation, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    keep = [k for k in result.summary if k.split("@")[0] in ("map", "recall", "ndcg")]
    return {"model": result.name, **{k: round(result.summary.get(k, float("nan")), 4) for k in keep}, **(extra or {})}


EpochHook = Callable[[str, int, dict[str, float]], None]


@dataclass
class RetrievalFit:
    """The fitted retrieval stage of one window, and what was measured while fitting it.

    Attributes:
        generator: the fitted candidate generator, its ``weights`` set (its ``two_tower`` and
            ``als`` are the models below when those sources are configured).
        two_tower: the fitted two-tower (fitted even when ``two_tower`` is not a source).
        als: the fitted ALS model.
        factors: the ALS factors fed to the two-tower.
        tower_index: the FAISS index over the two-tower's item vectors (the generator's
            ``tower_index``), or None when ``two_tower`` is not a source.
        weights: the fusion weights in use (tuned, configured, or empty = equal).
        validation_recall: validation-day Recall@k (k = the largest ``evaluation.recall_ks``)
            of the tuned weights; None when no tuning ran.
        timings: seconds per part (``als_fit``, ``two_tower_fit``, ``index_build``,
            ``fusion_tuning`` when tuning was asked for, ``candidates_fit``).
    """

    generator: CandidateGenerator
    two_tower: TwoTowerRecommender
    als: ALSRecommender
    factors: ALSFactors
    tower_index: ItemIndex | None
    weights: dict[str, float]
    validation_recall: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


def fit_retrieval(
    config: ProjectConfig,
    data: TrainingData,
    vectors: ItemVectors | None,
    two_tower_epochs: int | None = None,
    tune_weights: bool = False,
    on_epoch: EpochHook | None = None,
    batch_only: bool = False,
    vector_users: list[str] | None = None,
) -> RetrievalFit:
    """ALS, ALS factors, the two-tower and the merged candidate generator, all fitted on one window.

    ``make train`` (``training/pipeline.py``, each label fold and the serving fold) uses equal
    fusion weights, i.e. ``tune_weights=False``: weights tuned on the validation day reached
    Recall@100 0.420 there but 0.387-0.391 on the test day, no better than equal weights (README),
    and tuning costs an extra fit of the sources per fold. ``recsys retrieval`` tunes them.

    Args:
        config: the project config (``models.als``, ``retrieval``, ``evaluation.recall_ks``).
        data: the training window.
        vectors: item content vectors (None: the two-tower and the content source read the
            configured file, without which they have no content).
        two_tower_epochs: train the two-tower for exactly this many epochs with no early-stopping
            run of its own (the serving fold reuses the label fold's best epoch count: one day
            more data does not move the optimum, and it saves a whole training run).
        tune_weights: tune the fusion weights by coordinate ascent on the window's last
            ``retrieval.two_tower.validation_days`` days, with the other sources refitted on the
            days before them and the two-tower's held-out vectors from its early-stopping run.
            Weights set in ``retrieval.candidates.weights`` win: then nothing is tuned.
        on_epoch: per-epoch callback of the two-tower (stage, epoch, metrics), e.g. MLflow logging.
        batch_only: the generator will only answer batches of users (a label fold), which search
            exactly (``ItemIndex.search_exact``): its indexes are flat, whatever ``retrieval.index``
            says, so no approximate index is built for nothing (an HNSW graph over 105k items took
            ~55 s per fold).
        vector_users: the only users the generator will be asked about (a label fold's label
            users): the two-tower computes their vectors alone, the others stay zero. None: every
            user of ``data`` (a generator that serves).

    Returns:
        The :class:`RetrievalFit`: the generator (with its weights: the configured ones, empty =
        equal, or the tuned ones), the fitted parts, the tuned weights' validation recall and the
        seconds per part.

    Raises:
        ValueError: a ``vector_users`` id is not a user of ``data``; or tuning is asked for but
            there is no validation window to tune on
            (``validation_days`` 0, or ``two_tower_epochs`` skipping the two-tower's early-stopping
            run whose held-out vectors the tuning reads).
    """
    if batch_only:
        flat = config.retrieval.index.model_copy(update={"exact_max_items": 2**62})
        config = config.model_copy(update={"retrieval": config.retrieval.model_copy(update={"index": flat})})
    r = config.retrieval
    rows = None if vector_users is None else data.user_index.lookup(vector_users)
    if rows is not None and vector_users is not None and (rows < 0).any():
        raise ValueError(f"fit_retrieval: {int((rows < 0).sum())} of the vector_users are not in the window (e.g. {vector_users[int(np.argmin(rows))]!r})")
    tune = tune_weights and not r.candidates.weights
    if tune:
        _check_tunable(config, two_tower_epochs)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    tower_model = TwoTowerRecommender.from_config(config)
    tower_model.on_epoch = on_epoch
    if two_tower_epochs is not None:
        tower_model.config = tower_model.config.model_copy(update={"validation_days": 0, "max_epochs": two_tower_epochs})
    # The early-stopping run comes before the window's ALS fit: it fits its own ALS on the earlier
    # days, and both models with their examples at once were the first label fold's peak (100x rung).
    # Its held-out vectors are only read by the tuning.
    epochs = tower_model.select_epochs(data, vectors, keep_holdout_vectors=tune)
    early_stopping_seconds = time.perf_counter() - t
    log_memory(log, "the two-tower's early-stopping run")

    t = time.perf_counter()
    als = ALSRecommender(config.models.als).fit(data)
    timings["als_fit"] = time.perf_counter() - t
    factors = ALSFactors.fit(data, config.models.als, model=als)
    log_memory(log, "ALS")

    t = time.perf_counter()
    tower = tower_model.fit(data, als=factors, vectors=vectors, epochs=epochs, vector_users=rows)
    timings["two_tower_fit"] = early_stopping_seconds + time.perf_counter() - t
    log_memory(log, "the two-tower fit (every user's vector)")

    tower_index = None
    if "two_tower" in r.candidates.sources:  # the index the generator would build itself, timed here
        t = time.perf_counter()
        log.info("building the FAISS index over %d item vectors", len(tower.item_vectors))
        tower_index = ItemIndex.build(tower.item_index.ids, tower.item_vectors, r.index)
        # Now, not in the generator's fit: the tower's own 1.1 GB copy (100x rung) lived through the
        # other sources' fits there, and was the second label fold's peak (16,231 MB).
        share_item_vectors(tower, tower_index)
        timings["index_build"] = time.perf_counter() - t
        log_memory(log, "the two-tower's index")

    weights, validation_recall = dict(r.candidates.weights), None
    if tune_weights:
        t = time.perf_counter()
        if tune:
            weights, validation_recall = _tune_fusion_weights(config, data, tower, vectors)
            log.info("fusion weights %s (validation recall@%d %.4f)", weights, max(config.evaluation.recall_ks), validation_recall)
        else:
            log.info("fusion weights from the config: %s (not tuned)", weights)
        timings["fusion_tuning"] = time.perf_counter() - t

    t = time.perf_counter()
    generator = CandidateGenerator.from_config(config).fit(data, two_tower=tower, als=als, vectors=vectors, tower_index=tower_index)
    generator.weights = dict(weights)
    timings["candidates_fit"] = time.perf_counter() - t
    log_memory(log, "the candidate generator's fit")
    return RetrievalFit(generator, tower, als, factors, tower_index, weights, validation_recall, timings)


def _check_tunable(config: ProjectConfig, two_tower_epochs: int | None) -> None:
    """Raise before any fitting when fusion weights cannot be tuned on this config."""
    if config.retrieval.two_tower.validation_days < 1:
        raise ConfigError("fit_retrieval: tuning fusion weights needs retrieval.two_tower.validation_days >= 1 (the validation window)")
    if two_tower_epochs is not None and "two_tower" in config.retrieval.candidates.sources:
        raise ConfigError(
            "fit_retrieval: tune_weights needs the two-tower's early-stopping run (its held-out vectors), which two_tower_epochs skips"
        )


def _tune_fusion_weights(
    config: ProjectConfig, data: TrainingData, tower: TwoTowerRecommender, vectors: ItemVectors | None
) -> tuple[dict[str, float], float]:
    """Fusion weights tuned on the window's validation days, every source fitted on the days before them.

    The two-tower's lists come from its early-stopping run (fitted on those earlier days), searched
    exactly; the other sources are refitted on the earlier days.

    Returns:
        (weights, their validation Recall@k), k the largest ``evaluation.recall_ks``.
    """
    r = config.retrieval
    k_big = max(config.evaluation.recall_ks)
    inner, truth_rows = holdout(data, r.two_tower.validation_days)
    others = r.candidates.model_copy(update={"sources": [s for s in r.candidates.sources if s != "two_tower"]})
    val_gen = CandidateGenerator(others, r.index, config).fit(inner, vectors=vectors)
    if "two_tower" in r.candidates.sources:
        val_users = tower.holdout_user_ids.tolist()
    else:  # the same users the two-tower's early-stopping run holds out
        val_users = inner.user_index.ids[np.asarray(sorted(truth_rows), dtype=np.int64)].tolist()
    val_lists = val_gen.source_lists(val_users)
    if "two_tower" in r.candidates.sources:
        exact = r.index.model_copy(update={"exact_max_items": 10**9})
        val_index = ItemIndex.build(inner.item_index.ids, tower.holdout_item_vectors, exact)
        found = index_rows(val_index, tower.holdout_user_vectors, r.candidates.per_source)
        val_lists["two_tower"] = found.to_id_lists(val_users, val_index.item_ids)
    val_rows = inner.user_index.lookup(val_users)
    val_truth = {u: inner.item_index.ids[truth_rows[int(row)]].tolist() for u, row in zip(val_users, val_rows)}
    return tune_source_weights(val_lists, val_truth, r.candidates.size, r.candidates.rrf_k, k_big)


def run_retrieval(config: ProjectConfig, dataset: Dataset, save_dir: Path | None = None, track: bool = True) -> dict[str, Any]:
    """Fit (:func:`fit_retrieval` with tuned fusion weights) and measure the whole retrieval stage.

    Args:
        config: project config (``retrieval`` section, ``models.als``, ``split``, ``evaluation``).
        dataset: the loaded data.
        save_dir: where to write the fitted candidate generator (with its two-tower), the FAISS
            index and the ALS factors (default ``<work_dir>/retrieval``).
        track: log params, per-epoch and final metrics to MLflow.

    Returns:
        A JSON-able summary: test table, two-tower training, index, candidates, cold items.
    """
    save_dir = save_dir or config.work_path / "retrieval"
    started = time.perf_counter()
    setup = prepare_evaluation(dataset, config)
    ev, r = config.evaluation, config.retrieval
    k_big = max(ev.recall_ks)

    tracker = _Tracker(config, track)
    with tracker:
        vectors = FeatureSettings.from_config(config).vectors()
        encoder = vectors.encoder if vectors is not None else None
        tracker.params({"content_encoder": encoder, "retrieval": r.model_dump(), "als": config.models.als.model_dump()})
        fit = fit_retrieval(config, setup.train, vectors, tune_weights=True, on_epoch=tracker.epoch)
        generator, tower, weights = fit.generator, fit.two_tower, fit.weights
        val_recall = float("nan") if fit.validation_recall is None else fit.validation_recall
        timings = dict(fit.timings)

        results = [evaluate_model(fit.als, setup, ev, fit=False)]
        tower_eval = evaluate_model(tower, setup, ev, fit=False)
        results.append(tower_eval)
        tower_lists = tower.recommend(setup.users, k_big).as_dict()
        cold_tt, cold_users = cold_item_recall(tower_lists, setup, k_big)
        cold_pool = cold_pool_recall(tower, setup, k_big)
        log.info("two-tower: test recall@%d %.4f, cold items %.4f (within the cold pool %.4f)", k_big, tower_eval.summary[f"recall@{k_big}"], cold_tt, cold_pool)

        index = fit.tower_index
        if index is None:  # two_tower is not a candidate source: index its vectors to measure the index anyway
            t = time.perf_counter()
            index = ItemIndex.build(tower.item_index.ids, tower.item_vectors, r.index)
            timings["index_build"] = time.perf_counter() - t
        log_memory(log, "the two-tower's index")
        rows = tower.user_index.lookup(setup.users)
        queries = tower.user_vectors[rows]
        t = time.perf_counter()
        index.search(queries, k_big)
        query_ms = 1000 * (time.perf_counter() - t) / max(len(queries), 1)
        index_recall = ann_recall(index, queries, tower.item_vectors, k_big)
        log.info("index: %s, ANN recall@%d vs exact %.4f", index.kind, k_big, index_recall)

        t = time.perf_counter()
        lists = generator.source_lists(setup.users)
        merged = merge(lists, setup.users, r.candidates.size, weights, r.candidates.rrf_k)
        timings["candidates_generate"] = time.perf_counter() - t
        merged_lists = {u: [c.item_id for c in cands] for u, cands in merged.items()}
        sources = {}
        for name, source_lists in lists.items():
            res = score_lists(f"source:{name}", source_lists, setup, ev)
            cold, _ = cold_item_recall(source_lists, setup, k_big)
            sources[name] = _row(res, {f"cold_item_recall@{k_big}": round(cold, 4), "seconds": round(generator.timings[name], 2)})
        merged_eval = score_lists("candidates", merged_lists, setup, ev)
        size = r.candidates.size
        merged_full = float(np.mean([recall_at_k(merged_lists[u], setup.truth[u], size) for u in setup.users]))
        mean_len = float(np.mean([len(v) for v in merged_lists.values()]))
        results.append(merged_eval)

        val_res = tower.validation_result
        train_res = tower.train_result
        assert val_res is not None and train_res is not None
        summary: dict[str, Any] = {
            "protocol": setup.split.describe(),
            "users": len(setup.users),
            "content_encoder": encoder,
            "test": [_row(x) for x in results],
            "two_tower": {
                f"recall@{k_big}": round(tower_eval.summary[f"recall@{k_big}"], 4),
                "validation_history": val_res.history,
                "best_epoch": val_res.best_epoch,
                f"best_validation_recall@{r.two_tower.validation_k}": round(val_res.best_recall, 4),
                "early_stopping_run_seconds": round(val_res.seconds, 1),
                "final_run_epochs": train_res.epochs,
                "final_run_seconds": round(train_res.seconds, 1),
                "examples_per_second": round((val_res.examples_per_second + train_res.examples_per_second) / 2, 1),
                "fit_seconds_total": round(timings["two_tower_fit"], 1),
                f"cold_item_recall@{k_big}": round(cold_tt, 4),
                f"cold_item_recall@{k_big}_within_cold_pool": round(cold_pool, 4),
                "cold_item_users": cold_users,
            },
            "index": {
                "kind": index.kind, "items": len(index), "dim": int(tower.item_vectors.shape[1]),
                "build_seconds": round(timings["index_build"], 2), "query_ms_per_user": round(query_ms, 3),
                f"ann_recall@{k_big}_vs_exact": round(index_recall, 4),
            },
            "candidates": {
                "size": size, "mean_list_length": round(mean_len, 1), "weights": weights,
                f"validation_recall@{k_big}": round(val_recall, 4), "rrf_k": r.candidates.rrf_k,
                f"recall@{k_big}": round(merged_eval.summary[f"recall@{k_big}"], 4), f"recall@{size}": round(merged_full, 4),
                "sources": sources,
            },
            "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
        }
        summary["timings_seconds"]["total"] = round(time.perf_counter() - started, 1)
        tracker.final(summary)

    save_dir.mkdir(parents=True, exist_ok=True)
    generator.save(save_dir / "candidates")
    index.save(save_dir / "two_tower_index")
    fit.factors.save(save_dir / "als_factors.npz")
    summary["artifacts"] = str(save_dir)
    return summary

class _Tracker:
    """MLflow logging that stays optional (tests and benches can run without it)."""

    def __init__(self, config: ProjectConfig, enabled: bool):
        self.config, self.enabled = config, enabled
        self._cm: Any = None

    def __enter__(self) -> Self:
        if self.enabled:
            self._cm = start_run(self.config, "retrieval")
            self._cm.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)

    def params(self, params: dict[str, Any]) -> None:
        if self.enabled:
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})

    def epoch(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if self.enabled:
            log_metrics(metrics, step=epoch, prefix=f"two_tower_{stage}_")

    def final(self, summary: dict[str, Any]) -> None:
        if not self.enabled:
            return
        flat: dict[str, float] = {}
        for row in summary["test"]:
            flat.update({f"test_{row['model']}_{k}": v for k, v in row.items() if k != "model"})
        for name, row in summary["candidates"]["sources"].items():
            flat.update({f"source_{name}_{k}": v for k, v in row.items() if k.startswith(("recall", "cold"))})
        flat.update({f"index_{k}": v for k, v in summary["index"].items() if isinstance(v, float)})
        flat.update({f"two_tower_{k}": v for k, v in summary["two_tower"].items() if isinstance(v, float)})
        log_metrics(flat)
