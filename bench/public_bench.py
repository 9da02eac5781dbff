"""`make benchmark`: the pipeline beside the libraries a user would pick instead, on several logs.

    .venv/bin/python bench/public_bench.py                      # every data set of bench/public_bench.yaml
    .venv/bin/python bench/public_bench.py --datasets ml100k --peers implicit:als

For each data set and test window (bench/public_bench.yaml) it
1. runs the project's pipeline (`recsys train --no-bundle`, reusing finished stages) and reads the
   ranked lists its evaluation stage wrote for every project model;
2. exports the same split's training window as integer arrays and runs each peer (RecTools, cornac,
   implicit) through its own package in its own pinned environment (bench/peers/), after a tuning
   budget on a validation window that precedes every test window;
3. scores every list with the project's one evaluator (`recsys.evaluation.protocol.score_lists`),
   pools rolling windows, and compares the pipeline with the best peer by a paired bootstrap.

Results: bench/results/public.json (``{dataset: {model: {metric: value}}}``), the per-window and
tuning details in bench/results/public_details.json, then bench/public_report.py writes the table
and the plot and updates the README.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np
import polars as pl
import yaml
from peers.envs import ensure_env
from public_report import write_report
from pydantic import BaseModel, ConfigDict, Field

from recsys.atomic import write_json
from recsys.config import ProjectConfig, load_config
from recsys.data import Dataset, load_dataset
from recsys.evaluation.bootstrap import paired_bootstrap
from recsys.evaluation.protocol import EvaluationSetup, prepare_evaluation, score_lists
from training.variants import load_lists

log = logging.getLogger("public_bench")
PEER_RUNNER = ROOT / "bench" / "peers" / "peer_runner.py"
# The evaluation stage's list names -> the benchmark's model names.
PROJECT_MODELS = {
    "reranked": "pipeline",
    "candidates": "candidates",
    "two_tower": "two_tower",
    "als": "als",
    "ease": "ease",
    "content": "content",
    "history": "history",
    "popularity": "popularity",
}
FIT_STAGES = ("content", "label_fold", "label_fold_2", "label_fold_3", "reranker", "serving_fold")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    """One data set: its project config, headline metric and test windows."""

    config: str
    headline: str
    windows: list[str] = Field(default_factory=lambda: ["last"])


class PeerOverride(_Strict):
    """A peer's settings on one data set, where its cost there calls for them (the reason goes in the spec)."""

    params: dict[str, Any] = Field(default_factory=dict)
    grid: list[dict[str, Any]] | None = None


class PeerSpec(_Strict):
    """One peer model: its library, model name, fixed params and tuning grid."""

    library: str
    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    grid: list[dict[str, Any]] = Field(default_factory=lambda: [{}])
    datasets: list[str] | None = None
    skip_reason: str = ""
    overrides: dict[str, PeerOverride] = Field(default_factory=dict, description="per data set: params merged in, or another grid")

    def for_dataset(self, dataset: str) -> PeerSpec:
        """This peer's spec on one data set (its override applied).

        Args:
            dataset: the data set's name.
        """
        override = self.overrides.get(dataset)
        if override is None:
            return self
        grid = override.grid if override.grid is not None else self.grid
        return self.model_copy(update={"params": {**self.params, **override.params}, "grid": grid, "overrides": {}})

    @property
    def name(self) -> str:
        """The benchmark's model name, ``peer:<library>:<model>``."""
        return f"peer:{self.library}:{self.model}"


class TuningSpec(_Strict):
    """The tuning budget every peer gets: at most ``budget`` settings of its grid."""

    budget: int = Field(default=3, ge=1)


class BenchSpec(_Strict):
    """bench/public_bench.yaml."""

    tuning: TuningSpec = Field(default_factory=TuningSpec)
    datasets: dict[str, DatasetSpec]
    peers: list[PeerSpec]


@dataclass
class Scored:
    """One model on one window: per-user metrics, summary and costs."""

    per_user: pl.DataFrame
    summary: dict[str, float]
    costs: dict[str, float | None] = field(default_factory=dict)


# -- windows and configs ---------------------------------------------------------------------------


def window_config(spec: DatasetSpec, name: str, window: str, bench_dir: Path) -> Path:
    """The config file of one test window: the data set's own, or a variant starting on ``window``.

    Args:
        spec: the data set.
        name: its name (file names).
        window: ``last`` or an ISO date (the first test day).
        bench_dir: where variant configs are written.

    Returns:
        A config path for ``recsys train``.
    """
    base = (ROOT / spec.config).resolve()
    if window == "last":
        return base
    dt.date.fromisoformat(window)  # a clear error for a malformed date
    path = bench_dir / "configs" / f"{name}@{window}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"extends": str(base), "split": {"test_start": window}}))
    return path


def validation_setup(dataset: Dataset, config_path: Path, setup: EvaluationSetup) -> EvaluationSetup:
    """The tuning task: the validation window before ``setup``'s test window, trained on what precedes it.

    Args:
        dataset: the loaded log.
        config_path: the first test window's config.
        setup: that window's evaluation setup.

    Returns:
        An evaluation setup whose test window is ``setup``'s validation window.
    """
    start = setup.split.validation_start
    if start is None or setup.split.test_start is None:
        raise ValueError(f"{config_path}: the split has no validation window to tune on")
    hours = int((setup.split.test_start - start).total_seconds() // 3600)
    config = load_config(config_path, overrides={"split": {"test_start": start.date().isoformat(), "test": f"{hours}h"}})
    return prepare_evaluation(dataset, config)


# -- the project's pipeline --------------------------------------------------------------------------


@contextlib.contextmanager
def pipeline_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (``flock path recsys train ...`` elsewhere takes the same one).

    Args:
        path: the lock file (created when missing).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        log.info("waiting for the pipeline lock %s", path)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_pipeline(config_path: Path, summary_path: Path) -> dict[str, Any]:
    """``recsys train --no-bundle`` in a child process (its peak memory is its own); finished stages are reused.

    Args:
        config_path: the window's config.
        summary_path: where the run writes its stage summary.

    Returns:
        The summary (stage folders, seconds, peak RSS).
    """
    recsys = str(Path(sys.executable).with_name("recsys"))
    for force in ("", "evaluate"):
        cmd = [recsys, "train", "--config", str(config_path), "--no-bundle", "--summary", str(summary_path)]
        if force:
            cmd += ["--force", force]
        log.info("pipeline: %s", " ".join(cmd[1:]))
        subprocess.run(cmd, check=True, cwd=ROOT)
        summary = json.loads(summary_path.read_text())
        # An evaluation stage written before per-list timings existed is recomputed once (a minute or two).
        if (Path(summary["stages"]["evaluate"]["path"]) / "timings.json").is_file():
            return summary
    raise RuntimeError(f"{config_path}: the evaluation stage wrote no timings.json")


def stage_seconds(config: ProjectConfig, stage: dict[str, Any]) -> float | None:
    """The seconds a stage took when it was computed: its marker, or the MLflow run that computed it.

    Args:
        config: the window's config (its MLflow store).
        stage: one entry of the run summary.
    """
    if stage["compute_seconds"]:
        return float(stage["compute_seconds"])
    db = config.work_path / "mlflow" / "mlflow.db"
    if not db.is_file():
        return None
    fp = Path(stage["path"]).name
    query = (
        "select m.value from metrics m join tags f on f.run_uuid = m.run_uuid and f.key = 'fingerprint' and f.value = ? "
        "join tags r on r.run_uuid = m.run_uuid and r.key = 'reused' and r.value = 'False' where m.key = 'stage_seconds' "
        "order by m.timestamp desc limit 1"
    )
    with sqlite3.connect(db) as con:
        row = con.execute(query, (fp,)).fetchone()
    return float(row[0]) if row else None


def pipeline_models(config: ProjectConfig, summary: dict[str, Any], setup: EvaluationSetup, k: int) -> dict[str, Scored]:
    """Score the project's lists of one window and attach fit/recommend costs.

    Args:
        config: the window's config.
        summary: the run summary from :func:`run_pipeline`.
        setup: the window's evaluation setup.
        k: list length.
    """
    stages = summary["stages"]
    evaluate = Path(stages["evaluate"]["path"])
    timings = json.loads((evaluate / "timings.json").read_text())
    per_1k = 1000.0 / max(timings["users"], 1)
    seconds = {name: stage_seconds(config, stages[name]) for name in FIT_STAGES if name in stages}
    serving = stages["serving_fold"]["metrics"]
    generate = serving.get("candidates_seconds")
    fit_total = sum(v for v in seconds.values() if v is not None) - (generate or 0.0)
    content = seconds.get("content") or 0.0
    fits: dict[str, float | None] = {
        "pipeline": fit_total,
        "candidates": content + serving["retrieval_fit_seconds"],
        "two_tower": (serving.get("fit_seconds.two_tower_fit") or 0.0) + content if "fit_seconds.two_tower_fit" in serving else None,
        "als": serving.get("fit_seconds.als_fit"),
    }
    list_seconds = timings["list_seconds"]
    out: dict[str, Scored] = {}
    for stage_name, model in PROJECT_MODELS.items():
        path = evaluate / "lists" / f"{stage_name}.parquet"
        if not path.is_file():
            continue
        lists = load_lists(path, k)
        if model == "pipeline":
            rec = (list_seconds["reranked"] + (generate or 0.0)) * per_1k if generate is not None else None
        elif model == "candidates":
            rec = generate * per_1k if generate is not None else None
        else:
            rec = list_seconds.get(stage_name, 0.0) * per_1k
        costs = {"fit_seconds": fits.get(model), "recommend_seconds_per_1k_users": rec, "peak_rss_mb": summary["peak_rss_mb"]}
        out[model] = score(model, lists, setup, config, costs)
    return out


# -- peers -------------------------------------------------------------------------------------------


class PeerFailed(RuntimeError):
    """A peer's run ended without results; the benchmark records it and goes on with the others."""


@dataclass
class Exchange:
    """A split exported for the peers: integer arrays on disk and the id maps back."""

    path: Path
    users: list[str]
    items: list[str]


def export_split(setup: EvaluationSetup, root: Path) -> Exchange:
    """Write the training window and the test users as integer arrays (cached by content hash).

    Args:
        setup: the split to export.
        root: the exchange folder root.

    Returns:
        The folder and the code -> id maps.
    """
    frame = setup.train.interactions.select("user_id", "item_id", "timestamp", "weight")
    users = frame["user_id"].unique(maintain_order=True).to_list()
    items = frame["item_id"].unique(maintain_order=True).to_list()
    user_code = {u: i for i, u in enumerate(users)}
    item_code = {it: i for i, it in enumerate(items)}
    arrays = {
        "user": np.array([user_code[u] for u in frame["user_id"].to_list()], dtype=np.int64),
        "item": np.array([item_code[i] for i in frame["item_id"].to_list()], dtype=np.int64),
        "timestamp": frame["timestamp"].cast(pl.Datetime("us")).dt.epoch("s").to_numpy().astype(np.int64),
        "weight": frame["weight"].to_numpy().astype(np.float32),
    }
    query = np.array([user_code[u] for u in setup.users], dtype=np.int64)
    digest = hashlib.sha256(json.dumps([setup.exclude_seen, len(users), len(items)]).encode())
    for array in (*arrays.values(), query):
        digest.update(np.ascontiguousarray(array).tobytes())
    key = digest.hexdigest()[:12]
    path = root / key
    if (path / "ids.json").is_file():
        return Exchange(path, users, items)
    tmp = root / f".tmp-{key}-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    np.savez(tmp / "train.npz", **arrays, n_users=np.int64(len(users)), n_items=np.int64(len(items)))
    np.save(tmp / "query_users.npy", query)
    (tmp / "ids.json").write_text(json.dumps({"rows": frame.height, "users": len(users), "items": len(items), "query_users": len(setup.users)}))
    tmp.rename(path)
    return Exchange(path, users, items)


def run_peer(
    python: Path, exchange: Exchange, peer: PeerSpec, params: dict[str, Any], setup: EvaluationSetup, k: int, out_root: Path
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Fit one peer on the exported split and return its lists by user id (cached by inputs).

    Args:
        python: the peer environment's interpreter.
        exchange: the exported split.
        peer: which library and model.
        params: the model's settings (fixed params merged with one grid point).
        setup: the split (test users, repeat policy).
        k: list length.
        out_root: where peer outputs are cached.

    Returns:
        Ranked item ids per test user, and the peer's stats (fit/recommend seconds, peak RSS).
    """
    task = {"library": peer.library, "model": peer.model, "params": params, "k": k, "exclude_seen": setup.exclude_seen, "seed": 0, "threads": os.cpu_count() or 1}
    key = hashlib.sha256(json.dumps([exchange.path.name, task], sort_keys=True).encode()).hexdigest()[:12]
    out = out_root / f"{peer.library}-{peer.model}-{key}"
    if not (out / "stats.json").is_file():
        (exchange.path / "tasks").mkdir(exist_ok=True)
        task_dir = exchange.path / "tasks" / key
        task_dir.mkdir(exist_ok=True)
        for name in ("train.npz", "query_users.npy"):
            if not (task_dir / name).exists():
                (task_dir / name).symlink_to(exchange.path / name)
        (task_dir / "task.json").write_text(json.dumps(task))
        log.info("peer %s %s on %s", peer.name, params, exchange.path.name)
        proc = subprocess.run([str(python), str(PEER_RUNNER), "--input", str(task_dir), "--output", str(out)], check=False)
        if proc.returncode != 0:
            killed = " (killed: out of memory?)" if proc.returncode in (-9, 137) else ""
            raise PeerFailed(f"{peer.name} {params} exited with status {proc.returncode}{killed}")
    codes = np.load(out / "recs.npy")
    stats = json.loads((out / "stats.json").read_text())
    lists = {user: [exchange.items[c] for c in row if c >= 0] for user, row in zip(setup.users, codes.tolist())}
    return lists, stats


def peer_costs(stats: dict[str, Any], users: int) -> dict[str, float | None]:
    """Fit seconds, recommend seconds per 1,000 users and peak RSS from a peer's stats.

    Args:
        stats: the peer runner's stats.json.
        users: how many users it recommended for.
    """
    return {
        "fit_seconds": float(stats["fit_seconds"]),
        "recommend_seconds_per_1k_users": float(stats["recommend_seconds"]) * 1000.0 / max(users, 1),
        "peak_rss_mb": float(stats["peak_rss_mb"]),
    }


# -- scoring -------------------------------------------------------------------------------------------


def score(name: str, lists: dict[str, list[str]], setup: EvaluationSetup, config: ProjectConfig, costs: dict[str, float | None]) -> Scored:
    """Per-user metrics and the summary of one model's lists, with the project's evaluator.

    Args:
        name: the model name.
        lists: ranked item ids per user.
        setup: the window.
        config: metric cut-offs.
        costs: fit/recommend/memory figures to carry along.
    """
    evaluation = score_lists(name, lists, setup, config.evaluation)
    return Scored(evaluation.per_user, evaluation.summary, costs)


def metric_names(config: ProjectConfig) -> list[str]:
    """The reported metrics: MAP@k, NDCG@k, Recall@k, every recall cut-off, coverage@k.

    Args:
        config: the data set's config (``evaluation``).
    """
    e = config.evaluation
    return [f"map@{e.k}", f"ndcg@{e.k}", *[f"recall@{r}" for r in sorted({e.k, *e.recall_ks})], f"coverage@{e.k}"]


def pool(windows: dict[str, Scored], metrics: list[str]) -> dict[str, Any]:
    """Pool a model's windows: per-user metrics over every (window, user) pair, the median window's costs.

    Args:
        windows: the model's result per window.
        metrics: the metric names to report.
    """
    per_user = pl.concat([s.per_user for s in windows.values()])
    out: dict[str, Any] = {}
    for m in metrics:
        if m.startswith("coverage"):
            out[m] = float(np.mean([s.summary[m] for s in windows.values()]))
        else:
            out[m] = float(per_user[m].mean())  # type: ignore[arg-type]
    out["users"] = per_user.height
    for cost in ("fit_seconds", "recommend_seconds_per_1k_users", "peak_rss_mb"):
        values = [s.costs.get(cost) for s in windows.values()]
        known = [v for v in values if v is not None]
        # The median window: one window's stages may have been timed by an earlier, busier run.
        out[cost] = (max(known) if cost == "peak_rss_mb" else float(np.median(known))) if known else None
    return out


def compare(results: dict[str, dict[str, Scored]], headline: str, samples: int) -> dict[str, Any]:
    """Paired bootstrap of the pipeline against every other model on the headline metric, pooled and per window.

    Args:
        results: model -> window -> scored.
        headline: the metric.
        samples: bootstrap resamples.
    """
    def diff(a: pl.DataFrame, b: pl.DataFrame) -> dict[str, float]:
        d = paired_bootstrap(a[headline].to_numpy(), b[headline].to_numpy(), samples, seed=0)
        return {"pipeline": d.mean_b, "other": d.mean_a, "diff": d.diff, "low": d.low, "high": d.high, "p_value": d.p_value}

    pipeline = results["pipeline"]
    out: dict[str, Any] = {}
    for model, windows in results.items():
        if model == "pipeline":
            continue
        pooled_a = pl.concat([windows[w].per_user for w in pipeline])
        pooled_b = pl.concat([pipeline[w].per_user for w in pipeline])
        out[model] = {"pooled": diff(pooled_a, pooled_b), "windows": {w: diff(windows[w].per_user, pipeline[w].per_user) for w in pipeline}}
    return out


# -- the run ---------------------------------------------------------------------------------------------


def run_peer_windows(
    peer: PeerSpec,
    python: Path,
    bench: BenchSpec,
    spec: DatasetSpec,
    setups: dict[str, tuple[Path, ProjectConfig, EvaluationSetup]],
    exchanges: dict[str, Exchange],
    tuning_setup: EvaluationSetup,
    tuning_exchange: Exchange,
    tuning_config: ProjectConfig,
    bench_dir: Path,
    k: int,
    results: dict[str, dict[str, Scored]],
) -> dict[str, Any]:
    """Tune one peer within the budget on the validation window, then fit it on every test window.

    Args:
        peer: the peer (its data set override applied).
        python: its environment's interpreter.
        bench: the benchmark spec (tuning budget).
        spec: the data set (headline metric).
        setups: label -> (config path, config, evaluation setup) of each test window.
        exchanges: label -> that window's exported split.
        tuning_setup: the validation task.
        tuning_exchange: its exported split.
        tuning_config: the config the validation task is scored with.
        bench_dir: the data set's benchmark folder (exchange and peer caches).
        k: list length.
        results: model -> window -> scored; the peer's windows are added.

    Returns:
        The tuning record: every trial and the chosen params.
    """
    trials = []
    for point in peer.grid[: bench.tuning.budget]:
        params = {**peer.params, **point}
        lists, stats = run_peer(python, tuning_exchange, peer, params, tuning_setup, k, bench_dir / "peers")
        value = score(peer.name, lists, tuning_setup, tuning_config, {}).summary[spec.headline]
        trials.append({"params": params, spec.headline: value, "fit_seconds": stats["fit_seconds"]})
        log.info("tuning %s %s: %s %.4f", peer.name, params, spec.headline, value)
    best = max(trials, key=lambda t: t[spec.headline])
    for label, (_, config, setup) in setups.items():
        lists, stats = run_peer(python, exchanges[label], peer, best["params"], setup, k, bench_dir / "peers")
        scored = score(peer.name, lists, setup, config, peer_costs(stats, len(setup.users)))
        scored.summary["notes"] = stats.get("notes", [])  # type: ignore[assignment]
        results.setdefault(peer.name, {})[label] = scored
    return {"trials": trials, "chosen": best["params"]}


def bench_dataset(name: str, spec: DatasetSpec, bench: BenchSpec, peers: list[PeerSpec], envs: dict[str, Path]) -> dict[str, Any]:
    """Every model on every window of one data set.

    Args:
        name: the data set's name.
        spec: its settings.
        bench: the whole benchmark spec (tuning budget).
        peers: the peers to run.
        envs: peer library -> its environment's python.

    Returns:
        ``{"models": pooled results, "windows": per-window results, "comparison": ..., "tuning": ...}``.
    """
    started = time.perf_counter()
    base = load_config(ROOT / spec.config)
    bench_dir = base.work_path / "benchmark"
    dataset = load_dataset(base.data)
    k_max = max(base.evaluation.k, *base.evaluation.recall_ks)
    metrics = metric_names(base)
    if spec.headline not in metrics:
        raise ValueError(f"{name}: headline {spec.headline!r} is not one of the reported metrics {metrics}")
    results: dict[str, dict[str, Scored]] = {}
    setups: dict[str, tuple[Path, ProjectConfig, EvaluationSetup]] = {}
    for window in spec.windows:
        path = window_config(spec, name, window, bench_dir)
        config = load_config(path)
        setup = prepare_evaluation(dataset, config)
        label = window if window != "last" else f"{setup.split.test_start:%Y-%m-%d}"
        setups[label] = (path, config, setup)
    first_path, first_config, first_setup = next(iter(setups.values()))
    tuning_setup = validation_setup(dataset, first_path, first_setup)
    span = f"{tuning_setup.split.test_start:%Y-%m-%d}..{tuning_setup.split.test_end - dt.timedelta(seconds=1):%Y-%m-%d}" if tuning_setup.split.test_end and tuning_setup.split.test_start else "?"
    tuning: dict[str, Any] = {"window": span, "users": len(tuning_setup.users), "models": {}}
    failures: dict[str, str] = {}
    # Each split is exported once, whatever the number of peers.
    exchanges = {label: export_split(setup, bench_dir / "exchange") for label, (_, _, setup) in setups.items()} if peers else {}
    tuning_exchange = export_split(tuning_setup, bench_dir / "exchange") if peers else None
    for peer in (p.for_dataset(name) for p in peers):
        if peer.datasets is not None and name not in peer.datasets:
            log.info("%s: %s skipped (%s)", name, peer.name, peer.skip_reason or "not listed for this data set")
            continue
        try:
            tuning["models"][peer.name] = run_peer_windows(
                peer, envs[peer.library], bench, spec, setups, exchanges, tuning_setup, tuning_exchange, first_config, bench_dir, k_max, results
            )
        except PeerFailed as exc:
            log.error("%s: %s; the table goes on without it", name, exc)
            failures[peer.name] = str(exc)
            results.pop(peer.name, None)
    # The pipeline runs last, under a lock: a `recsys train` of the same work dir started elsewhere
    # (another benchmark, a queued run) finishes first and its stages are then reused, not raced.
    for label, (path, config, setup) in setups.items():
        with pipeline_lock(bench_dir / "pipeline.lock"):
            summary = run_pipeline(path, bench_dir / "runs" / f"{label}.json")
        for model, scored in pipeline_models(config, summary, setup, k_max).items():
            results.setdefault(model, {})[label] = scored
    results = {"pipeline": results.pop("pipeline"), **results}
    comparison = compare(results, spec.headline, base.evaluation.bootstrap_samples)
    peer_names = [m for m in results if m.startswith("peer:")]
    pooled = {model: pool(windows, metrics) for model, windows in results.items()}
    best_peer = max(peer_names, key=lambda m: pooled[m][spec.headline]) if peer_names else None
    return {
        "models": pooled,
        "windows": {label: {model: {**{m: windows[label].summary[m] for m in metrics}, **windows[label].costs} for model, windows in results.items() if label in windows} for label in setups},
        "users": {label: len(s[2].users) for label, s in setups.items()},
        "headline": spec.headline,
        "best_peer": best_peer,
        "comparison": comparison,
        "tuning": tuning,
        "notes": {m: results[m][next(iter(results[m]))].summary.get("notes", []) for m in peer_names},
        "failures": failures,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results.

    Args:
        argv: command-line arguments (default: ``sys.argv``).
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=ROOT / "bench" / "public_bench.yaml")
    parser.add_argument("--datasets", default="", help="comma-separated data set names (default: all)")
    parser.add_argument("--peers", default="", help="comma-separated library:model (default: all)")
    parser.add_argument("--envs", type=Path, default=None, help="where the peers' environments live (default <hm work_dir>/peers)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "public.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    bench = BenchSpec.model_validate(yaml.safe_load(args.spec.read_text()))
    names = [n for n in args.datasets.split(",") if n] or list(bench.datasets)
    unknown = [n for n in names if n not in bench.datasets]
    if unknown:
        parser.error(f"unknown data set(s) {unknown}; {args.spec} has {list(bench.datasets)}")
    wanted = {p for p in args.peers.split(",") if p}
    peers = [p for p in bench.peers if not wanted or f"{p.library}:{p.model}" in wanted]
    env_root = args.envs or (ROOT / "artifacts" / "peers")
    started = time.perf_counter()
    envs = {library: ensure_env(library, env_root) for library in sorted({p.library for p in peers})}
    env_seconds = time.perf_counter() - started
    # Earlier data sets' results are kept when only some are rerun.
    details_path = args.out.with_name(args.out.stem + "_details.json")
    details: dict[str, Any] = json.loads(details_path.read_text()) if details_path.is_file() else {}
    datasets = details.setdefault("datasets", {})
    for name in names:
        log.info("== %s", name)
        datasets[name] = bench_dataset(name, bench.datasets[name], bench, peers, envs)
        details["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
        details["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        details["env_setup_seconds"] = env_seconds
        write_json(details_path, details, indent=2, default=str)
        write_json(args.out, {n: d["models"] for n, d in datasets.items()}, indent=2)
    write_report(details, args.out.parent, ROOT / "README.md")
    log.info("benchmark done in %.0fs: %s, %s", time.perf_counter() - started, args.out, details_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
