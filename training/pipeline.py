"""`recsys train`: every stage end to end, resumable, tracked, ending in a verified model bundle.

validate -> content vectors (cached encoders + alignment) -> label fold (ALS, two-tower,
candidates fitted on data before day D-1, candidates for D-1's buyers) -> reranker (LambdaRank on
D-1's purchases) -> serving fold (the same retrieval fitted on everything before the test day D)
-> evaluation on D (baselines, each source, merged candidates, full pipeline, bootstrap lift)
-> bundle.

Each stage's output is keyed by its inputs (``training/stages.py``): re-running reuses what did
not change, and a killed run leaves no half-written artifact. One MLflow parent run, a child run
per stage.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl

from features.engine import RecommendationEngine
from features.ranking import user_states
from features.ranking_examples import (
    RankingExamples,
    build_examples,
    concat_examples,
    feature_builder,
    user_attribute_columns,
    user_vectors,
)
from recsys.atomic import atomic_path, copy_tree_linked, link_or_copy
from recsys.bundle import Bundle, remove_unfinished, write_bundle
from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.merge import Candidate
from recsys.candidates.precomputed import PRECOMPUTED_DIR, PrecomputedCandidates
from recsys.config import ConfigError, ProjectConfig
from recsys.data import Dataset, TrainingData, ground_truth, load_dataset
from recsys.data.sampling import sample_users
from recsys.data.split import time_window
from recsys.evaluation.bootstrap import paired_bootstrap
from recsys.evaluation.metrics import recall_at_k
from recsys.evaluation.protocol import (
    EvaluationSetup,
    ModelEvaluation,
    format_table,
    prepare_evaluation,
    recommend_in_blocks,
    results_table,
    score_lists,
)
from recsys.models.base import Recommender
from recsys.models.content import ContentRecommender
from recsys.ranking.lambdarank import LambdaRankModel, LambdaRankParams
from recsys.registry import build_model
from recsys.vectors import ItemVectors
from training.content import run_content
from training.memory import log_memory
from training.reranker import train_ranker
from training.retrieval import fit_retrieval
from training.stages import StageResult, StageRunner
from training.tracking import log_metrics, register_bundle, start_run
from training.variants import EVALUATION_LISTS, save_lists

log = logging.getLogger(__name__)

@dataclass
class PipelineOutcome:
    """What `recsys train` produced."""

    bundle: Bundle | None  # None when the run stopped after the evaluation (``write_bundle=False``)
    table: pl.DataFrame
    stages: dict[str, StageResult]
    run_id: str
    seconds: float
    peak_rss_mb: float = 0.0  # the process's resident-set peak over the run (the largest stage peak, or outside the stages)


def ranker_params(config: ProjectConfig) -> LambdaRankParams:
    """LambdaRank settings from the typed ``reranker`` section."""
    return LambdaRankParams(**config.reranker.model_dump(include=set(LambdaRankParams.model_fields)))


class Pipeline:
    """The stages of one training run over one config.

    Args:
        config: the project config.
        force: stage names to recompute even when a finished output exists.
    """

    def __init__(self, config: ProjectConfig, force: set[str] | None = None):
        self.config = config
        self.force = force or set()

    def run(self, write_bundle: bool = True) -> PipelineOutcome:
        """Run (or reuse) every stage and write the bundle.

        Args:
            write_bundle: False stops after the evaluation (benchmarks score the stages' lists and
                need no servable bundle).
        """
        start = time.perf_counter()
        config = self.config
        remove_unfinished(config.work_path / "bundles")
        dataset = load_dataset(config.data)
        setup = prepare_evaluation(dataset, config)
        split = setup.split
        # From here on the stages read the split's windows; the whole log is not kept a second time
        # (1.3 GB of columns at the 100x rung).
        dataset = dataclasses.replace(dataset, interactions=dataset.interactions.clear())
        if split.validation_start is None or split.test_start is None or split.validation.is_empty():
            raise ConfigError("recsys train needs split.mode 'global' with a positive split.validation window (the reranker's first label window)")
        base = {"data": dataset.fingerprint, "split": config.split.model_dump(mode="json"), "sample": config.data.user_sample}
        with start_run(config, "train", params={"config": config.model_dump(mode="json")}, tags={"kind": "training"}) as parent:
            runner = StageRunner(config, parent, self.force)
            content = runner.run("content", {**base, "content": config.content.model_dump(mode="json")}, lambda out: self._content(out, dataset))
            vectors_fp = content.fingerprint
            retrieval_inputs = {**base, "content": vectors_fp, "models": config.models.model_dump(mode="json"), "retrieval": config.retrieval.model_dump(mode="json")}
            label_fold = runner.run("label_fold", retrieval_inputs, lambda out: self._label_fold(out, dataset, setup, content.path, 1, None))
            epochs = int(label_fold.metrics.get("two_tower_epochs", 0)) or None
            folds = [label_fold]
            for back in range(2, config.reranker.label_folds + 1):
                folds.append(
                    runner.run(
                        f"label_fold_{back}", {**retrieval_inputs, "folds_back": back, "two_tower_epochs": epochs},
                        functools.partial(self._label_fold, dataset=dataset, setup=setup, content_dir=content.path, folds_back=back, two_tower_epochs=epochs),
                    )
                )
            ranker = runner.run(
                "reranker",
                {"label_folds": [f.fingerprint for f in folds], "ranker": config.reranker.model_dump(mode="json")},
                lambda out: self._ranker(out, dataset, setup, content.path, [f.path for f in folds]),
            )
            serving_fold = runner.run(
                "serving_fold", {**retrieval_inputs, "two_tower_epochs": epochs}, lambda out: self._serving_fold(out, setup, content.path, epochs)
            )
            evaluation = runner.run(
                "evaluate",
                {"serving_fold": serving_fold.fingerprint, "reranker": ranker.fingerprint, "evaluation": config.evaluation.model_dump(exclude={"workers"})},
                lambda out: self._evaluate(out, dataset, setup, content.path, serving_fold.path, ranker.path),
            )
            table = pl.read_parquet(evaluation.path / "table.parquet")
            print(format_table(table))
            log_metrics({f"{r['model']}.{m}": r[m] for r in table.to_dicts() for m in ("map@12", "recall@12", "ndcg@12", "recall@100") if m in r})
            log_metrics(evaluation.metrics)
            precomputed = None
            if write_bundle and config.serving.precompute_candidates > 0:
                inputs = {"serving_fold": serving_fold.fingerprint, "depth": config.serving.precompute_candidates}
                checkpoint = runner.checkpoint_dir("precompute", inputs)
                precomputed = runner.run(
                    "precompute",
                    inputs,
                    lambda out: self._precompute(out, serving_fold.path, checkpoint),
                )
            if not write_bundle:
                seconds = time.perf_counter() - start
                log.info("stopped after the evaluation (no bundle) in %.0fs", seconds)
                return PipelineOutcome(None, table, runner.results, parent.info.run_id, seconds, runner.run_peak_mb())
            bundle = self._bundle(dataset, setup, content, serving_fold, ranker, evaluation, precomputed, parent.info.run_id)
            mlflow.set_tag("bundle_version", bundle.version)
            model_version = register_bundle(config, bundle.path, bundle.version, parent.info.run_id, evaluation.metrics)
            if model_version is not None:
                mlflow.set_tag("registered_model_version", model_version)
            mlflow.log_artifact(str(evaluation.path / "table.parquet"), "evaluation")
            mlflow.log_text(format_table(table), "evaluation/table.txt")
            mlflow.log_artifacts(str(evaluation.path / "lists"), EVALUATION_LISTS)
            seconds = time.perf_counter() - start
            mlflow.log_metric("pipeline_seconds", seconds)
            log.info("bundle %s written in %.0fs total", bundle.path, seconds)
            return PipelineOutcome(bundle, table, runner.results, parent.info.run_id, seconds, runner.run_peak_mb())

    # -- stages -------------------------------------------------------------------------------

    def _content(self, out: Path, dataset: Dataset) -> dict[str, float]:
        result = run_content(self.config, dataset, train=True, progress=True)
        if result.vectors_path is not None:  # None: a catalogue with neither text nor photos
            shutil.copy2(result.vectors_path, out / "item_vectors.npz")
        (out / "content.json").write_text(json.dumps({"encoder": result.encoder, "heads_dir": str(result.heads_dir) if result.heads_dir else None, "mlflow_run_id": result.run_id}, indent=2))
        return {f"content.{k}": float(v) for k, v in result.metrics.items() if isinstance(v, int | float)}

    def _label_fold(self, out: Path, dataset: Dataset, setup: EvaluationSetup, content_dir: Path, folds_back: int, two_tower_epochs: int | None) -> dict[str, float]:
        """Retrieval fitted on the time before label window ``folds_back``; candidates for that window's users."""
        data, labels = _label_window(dataset, setup, folds_back)
        vectors = _content_vectors(content_dir)
        log_memory(log, f"label window {folds_back}")
        # Label users: those with a target event in the window (a view-only visit labels nothing).
        truth = ground_truth(labels)
        users = [u for u in labels["user_id"].unique(maintain_order=True).to_list() if u in data.user_index and u in truth]
        users = sample_users(users, self.config.reranker.max_label_users, self.config.reranker.seed + folds_back, f"label fold {folds_back}: label users")
        # A label fold's generator only answers its label users, in batches (their candidates here,
        # their features in the ranker stage): batches search exactly, so no approximate index is
        # built, and the two-tower computes only these users' vectors.
        generator = fit_retrieval(self.config, data, vectors, two_tower_epochs, batch_only=True, vector_users=users).generator
        candidates = generator.generate(users)
        log_memory(log, f"{len(users)} label users' candidates")
        lists = {u: [c.item_id for c in candidates[u]] for u in users}
        recall = float(np.mean([recall_at_k(lists[u], truth[u], len(lists[u])) for u in users])) if users else 0.0
        generator.save(out / "generator")
        _save_candidates(candidates, out / "candidates.parquet")
        tower = getattr(generator, "two_tower", None)
        epochs = tower.train_result.epochs if tower is not None and tower.train_result is not None else 0
        positive = sum(1 for u in users if set(lists[u]) & set(truth.get(u, [])))
        log.info("label fold %d: %d label users, %d with a target item among their candidates (recall %.4f)", folds_back, len(users), positive, recall)
        return {"label_users": float(len(users)), "label_users_with_positive": float(positive), "label_candidate_recall": recall,
                "two_tower_epochs": float(epochs), "folds_back": float(folds_back)}

    def _ranker(self, out: Path, dataset: Dataset, setup: EvaluationSetup, content_dir: Path, fold_dirs: list[Path]) -> dict[str, float]:
        vectors = _content_vectors(content_dir)
        parts: list[RankingExamples] = []
        columns: tuple[list[str], list[str]] | None = None  # (feature names, categorical ones) of the first fold
        for folds_back, fold_dir in enumerate(fold_dirs, start=1):
            # One fold's window and generator at a time: at the 100x rung a loaded generator holds
            # several GB, and only its examples outlive the iteration.
            data, labels = _label_window(dataset, setup, folds_back)
            generator = CandidateGenerator.load(fold_dir / "generator")
            fold_features = feature_builder(self.config, data, generator, vectors)
            fold_columns = (fold_features.feature_names, fold_features.categorical_features)
            if columns is not None and fold_columns != columns:
                raise ValueError(f"label fold {fold_dir} yields other feature columns than the first fold")
            columns = columns or fold_columns
            candidates = _load_candidates(fold_dir / "candidates.parquet")
            users = list(candidates)
            truth = ground_truth(labels, users)
            states = user_states(data, users, user_attribute_columns(self.config), user_vectors(generator, users))
            parts.append(build_examples(fold_features, states, candidates, data.item_index, fold_features.sources, truth))
            log_memory(log, f"label fold {folds_back}'s ranking examples")
            del data, labels, generator, fold_features, candidates, states
        assert columns is not None
        examples = concat_examples(parts)
        del parts
        positive = int(examples.has_positive().sum())
        needed = self.config.reranker.min_label_users
        log.info("reranker: %d label users, %d with a target item among their candidates (at least %d needed)", len(examples.groups), positive, needed)
        if positive < needed:
            window = self.config.split.validation
            raise ConfigError(
                f"reranker: only {positive} of {len(examples.groups)} label users have a target item among their candidates "
                f"(label windows: {len(fold_dirs)} x {window}); at least reranker.min_label_users={needed} are needed to learn "
                "a ranking. Widen split.validation, add reranker.label_folds, or lower reranker.min_label_users."
            )
        model, metrics = train_ranker(examples, *columns, ranker_params(self.config), valid_share=self.config.reranker.valid_share, seed=self.config.reranker.seed)
        model.save(out / "ranker")
        importance = model.importance()
        (out / "importance.json").write_text(json.dumps(importance, indent=2))
        log.info("top features: %s", ", ".join(f"{k}={v:.0f}" for k, v in list(importance.items())[:10]))
        return {**metrics, "label_folds": float(len(fold_dirs))}

    def _serving_fold(self, out: Path, setup: EvaluationSetup, content_dir: Path, two_tower_epochs: int | None) -> dict[str, float]:
        vectors = _content_vectors(content_dir)
        start = time.perf_counter()
        fit = fit_retrieval(self.config, setup.train, vectors, two_tower_epochs)
        generator = fit.generator
        seconds = time.perf_counter() - start
        generator.save(out / "generator")
        start = time.perf_counter()
        candidates = generator.generate(setup.users)
        generate_seconds = time.perf_counter() - start
        log_memory(log, f"{len(setup.users)} test users' candidates")
        _save_candidates(candidates, out / "candidates.parquet")
        parts = {f"fit_seconds.{name}": value for name, value in fit.timings.items()}
        return {"retrieval_fit_seconds": seconds, "candidates_seconds": generate_seconds, **parts, "test_users": float(len(setup.users))}

    def _precompute(self, out: Path, fold_dir: Path, checkpoint: Path) -> dict[str, float]:
        """Every known customer's merged candidates, for the server to look up (see recsys/candidates/precomputed.py).

        The batches are kept in ``checkpoint`` as they finish, so a killed run resumes where it stopped.
        """
        generator = CandidateGenerator.load(fold_dir / "generator")
        start = time.perf_counter()
        serving = self.config.serving
        table = PrecomputedCandidates.build(generator, serving.precompute_candidates, workers=serving.precompute_workers, checkpoint=checkpoint)
        seconds = time.perf_counter() - start
        table.save(out / PRECOMPUTED_DIR)
        users = len(table.rows)
        parts = {f"precompute_ms_per_user.{part}": 1000 * spent / max(users, 1) for part, spent in table.build_seconds.items()}
        workers = {"precompute_worker_peak_rss_mb": table.worker_peak_rss_mb} if table.worker_peak_rss_mb else {}
        # A resumed build's wall time covers only the customers it computed; the parts cover every batch.
        per_user = 1000 * seconds / max(table.computed_users, 1)
        return {"precomputed_users": float(users), "precompute_computed_users": float(table.computed_users), "precompute_ms_per_user": per_user, **parts, **workers}

    def _evaluate(self, out: Path, dataset: Dataset, setup: EvaluationSetup, content_dir: Path, fold_dir: Path, ranker_dir: Path) -> dict[str, float]:
        config = self.config
        cfg = config.evaluation
        k_max = max(cfg.k, *cfg.recall_ks)
        generator = CandidateGenerator.load(fold_dir / "generator")
        candidates = _load_candidates(fold_dir / "candidates.parquet")
        vectors = _content_vectors(content_dir)
        log_memory(log, "loading the serving fold")
        # Every list follows the repeat policy (``repeats``), as the candidates and the server do.
        exclude = setup.exclude_seen
        lists: dict[str, dict[str, list[str]]] = {}
        seconds: dict[str, float] = {}  # the time each list took for all test users (fits excluded)

        def timed(name: str, make: Callable[[], dict[str, list[str]]]) -> None:
            start = time.perf_counter()
            lists[name] = make()
            seconds[name] = time.perf_counter() - start
            log_memory(log, f"the {name} lists")

        def model_lists(model: Recommender) -> dict[str, list[str]]:  # the test users in blocks over cfg.workers processes
            return recommend_in_blocks(model, setup.users, k_max, exclude, cfg.workers)

        popularity = build_model("popularity", config).fit(setup.train)
        timed("popularity", lambda: model_lists(popularity))
        timed("history", lambda: model_lists(generator.history))
        if hasattr(generator, "als"):
            timed("als", lambda: model_lists(generator.als))
        if vectors is not None:
            content_model = ContentRecommender(vectors, config.content.recommender).fit(setup.train)
            timed("content", lambda: model_lists(content_model))
        if hasattr(generator, "two_tower"):
            timed("two_tower", lambda: model_lists(generator.two_tower))
        if hasattr(generator, "ease"):
            timed("ease", lambda: model_lists(generator.ease))
        # The merged candidates were generated by the serving fold; their time is its ``candidates_seconds``.
        lists["candidates"] = {u: [c.item_id for c in candidates.get(u, [])] for u in setup.users}
        # The test users are ranked by the same engine object the server answers with.
        engine = RecommendationEngine(config, setup.train, generator, vectors, LambdaRankModel.load(ranker_dir / "ranker"))
        timed("reranked", lambda: engine.rank_users(setup.users, k_max, candidates))
        (out / "timings.json").write_text(json.dumps({"list_seconds": seconds, "users": len(setup.users)}, indent=2))
        results: list[ModelEvaluation] = [score_lists(name, recs, setup, cfg) for name, recs in lists.items()]
        table = results_table(results, cfg)
        table.write_parquet(out / "table.parquet")
        for name, recs in lists.items():
            save_lists(recs, out / "lists" / f"{name}.parquet")
        per_user = pl.DataFrame({"user_id": setup.users}).with_columns(
            *[pl.Series(f"{r.name}.{m}", r.per_user[m].to_list()) for r in results for m in (f"map@{cfg.k}", f"recall@{max(cfg.recall_ks)}")]
        )
        per_user.write_parquet(out / "per_user.parquet")
        by_name = {r.name: r for r in results}
        metric = f"map@{cfg.k}"
        single = [n for n in ("popularity", "history", "als", "content", "two_tower", "ease") if n in by_name]
        best = max(single, key=lambda n: by_name[n].summary[metric])
        lift = paired_bootstrap(by_name[best].per_user[metric].to_numpy(), by_name["reranked"].per_user[metric].to_numpy(), cfg.bootstrap_samples, seed=cfg.seed)
        vs_merged = paired_bootstrap(by_name["candidates"].per_user[metric].to_numpy(), by_name["reranked"].per_user[metric].to_numpy(), cfg.bootstrap_samples, seed=cfg.seed)
        summary = {
            "best_single_source": best,
            "lift": lift.__dict__,
            "lift_vs_merged_order": vs_merged.__dict__,
        }
        (out / "lift.json").write_text(json.dumps(summary, indent=2))
        print(
            f"reranker vs best single source ({best}) on {metric}: {lift.mean_b:.4f} vs {lift.mean_a:.4f}, "
            f"lift {lift.relative:+.1%}, 95% CI of the difference [{lift.low:+.4f}, {lift.high:+.4f}]"
        )
        return {
            "reranked_map": by_name["reranked"].summary[metric],
            "best_single_map": by_name[best].summary[metric],
            "lift_relative": lift.relative,
            "lift_ci_low": lift.low,
            "lift_ci_high": lift.high,
            "candidates_recall_at_max": by_name["candidates"].summary[f"recall@{max(cfg.recall_ks)}"],
        }

    def _bundle(
        self,
        dataset: Dataset,
        setup: EvaluationSetup,
        content: StageResult,
        serving: StageResult,
        ranker: StageResult,
        evaluation: StageResult,
        precomputed: StageResult | None,
        run_id: str,
    ) -> Bundle:
        """Everything the server needs, self-contained except the photos (served from the image root)."""
        config = self.config
        content_info = json.loads((content.path / "content.json").read_text())

        def populate(d: Path) -> None:
            (d / "data").mkdir()
            # The serving fold's exact inputs: the server rebuilds the same TrainingData from them.
            setup.train.items.write_parquet(d / "data" / "items.parquet")
            setup.train.interactions.write_parquet(d / "data" / "history.parquet")
            if setup.train.users is not None:
                setup.train.users.write_parquet(d / "data" / "users.parquet")
            if content_info.get("heads_dir"):
                shutil.copytree(content_info["heads_dir"], d / "content_heads")
            # Stage outputs are never changed in place, so the bundle links the large ones instead of copying.
            copy_tree_linked(serving.path / "generator", d / "generator")
            shutil.copytree(ranker.path / "ranker", d / "ranker")
            if precomputed is not None:
                copy_tree_linked(precomputed.path / PRECOMPUTED_DIR, d / PRECOMPUTED_DIR)
            if (content.path / "item_vectors.npz").is_file():
                link_or_copy(content.path / "item_vectors.npz", d / "item_vectors.npz")
            shutil.copy2(evaluation.path / "table.parquet", d / "evaluation.parquet")
            shutil.copy2(evaluation.path / "lift.json", d / "lift.json")
            shutil.copytree(evaluation.path / "lists", d / EVALUATION_LISTS)
            (d / "config.json").write_text(config.model_dump_json(indent=2))

        info: dict[str, Any] = {
            "project": config.name,
            "mlflow_run_id": run_id,
            "data_fingerprint": dataset.fingerprint,
            "stages": {"content": content.fingerprint, "serving_fold": serving.fingerprint, "reranker": ranker.fingerprint, "evaluate": evaluation.fingerprint},
            "metrics": evaluation.metrics,
            "image_root": str(dataset.images.root) if dataset.images.root else None,
            "image_template": dataset.images.template,
            "as_of": setup.train.as_of.isoformat(),
            "content_encoder": content_info.get("encoder"),
        }
        return write_bundle(config.work_path / "bundles", populate, info)


def _label_window(dataset: Dataset, setup: EvaluationSetup, folds_back: int) -> tuple[TrainingData, pl.DataFrame]:
    """(history before label window ``folds_back``, that window's interactions); window 1 is the validation window.

    Every label window is as long as ``split.validation``; window ``n`` ends where window ``n - 1``
    starts. All come from the split's training and validation windows, so no test row is read.

    Raises:
        ConfigError: a window, or the history before it, is empty (too many label folds for the log).
    """
    split = setup.split
    assert split.validation_start is not None and split.test_start is not None
    width = split.test_start - split.validation_start
    start = split.validation_start - (folds_back - 1) * width
    history = time_window(split.history, None, start)  # slices of the sorted history: no copies
    labels = time_window(split.history, start, start + width)
    if history.is_empty() or labels.is_empty():
        raise ConfigError(
            f"reranker.label_folds: label window {folds_back} ({start:%Y-%m-%d %H:%M} + {width}) has {labels.height} "
            f"interactions and {history.height} history rows before it; use fewer label folds"
        )
    return TrainingData.build(history, dataset.items, dataset.users, as_of=start), labels


def _content_vectors(content_dir: Path) -> ItemVectors | None:
    """The content stage's vectors, or None when the catalogue had neither text nor photos."""
    path = content_dir / "item_vectors.npz"
    return ItemVectors.load(path) if path.is_file() else None


def _save_candidates(candidates: dict[str, list[Any]], path: Path) -> None:
    rows = [
        {"user_id": u, "item_id": c.item_id, "score": c.score, "ranks": json.dumps(c.ranks)}
        for u, cands in candidates.items()
        for c in cands
    ]
    frame = pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "score": pl.Float64, "ranks": pl.String})
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)


def _load_candidates(path: Path) -> dict[str, list[Any]]:
    frame = pl.read_parquet(path)
    out: dict[str, list[Any]] = {}
    for u, item, score, ranks in frame.iter_rows():
        out.setdefault(u, []).append(Candidate(item, score, json.loads(ranks)))
    return out

