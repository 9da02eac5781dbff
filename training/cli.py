"""The ``recsys`` command: one entry point, one subcommand per job.

Subcommands register themselves in :data:`COMMANDS` so later stages (train, serve, bench)
add to the same command without editing a central switch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from recsys.atomic import write_text  # noqa: E402
from recsys.bundle import POINTER, BundleError  # noqa: E402
from recsys.config import (  # noqa: E402
    ConfigError,
    ProjectConfig,  # noqa: E402
    load_config,
)
from recsys.data import DataValidationError, load_dataset
from recsys.data.stats import recommended_repeat_policy, repeat_rate  # noqa: E402
from recsys.evaluation.protocol import evaluate_model, format_table, prepare_evaluation, results_table  # noqa: E402
from recsys.registry import build_model  # noqa: E402
from recsys.two_tower.ranks import rank_group  # noqa: E402
from recsys.two_tower.train import follow  # noqa: E402
from serving.server import ServeSettings, serve  # noqa: E402
from training.content import run_content  # noqa: E402
from training.pipeline import Pipeline  # noqa: E402
from training.retrieval import run_retrieval  # noqa: E402

log = logging.getLogger("recsys")

PROJECT_LOGGERS = ("recsys", "features", "training", "serving", "bench", "mlflow")


def ensure_bundle(config: ProjectConfig) -> Path:
    """The config's bundles folder, after a full training run when it holds no bundle yet.

    Args:
        config: the project config (``configs/hm_dev.yaml`` trains in about a minute).

    Returns:
        ``<work_dir>/bundles``.
    """
    root = config.work_path / "bundles"
    if not (root / POINTER).is_file():
        log.info("no bundle in %s: training one with `recsys train --config` %s first", root, config.name)
        Pipeline(config).run()
    return root

Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]
COMMANDS: dict[str, Command] = {}


def command(name: str, help_text: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Callable[[argparse.ArgumentParser], None]]:
    """Decorator on an ``add_arguments(parser)`` function; the runner is attached as ``.run``."""

    def wrap(add_arguments: Callable[[argparse.ArgumentParser], None]) -> Callable[[argparse.ArgumentParser], None]:
        COMMANDS[name] = (add_arguments, lambda args: add_arguments.run(args), help_text)  # type: ignore[attr-defined]
        return add_arguments

    return wrap


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/hm.yaml", help="project config (YAML)")


@command("validate", "load and validate the configured data; print the report")
def _validate_args(parser: argparse.ArgumentParser) -> None:
    _config_arg(parser)
    parser.add_argument("--json", type=Path, help="also write the report as JSON")


def _validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    dataset = load_dataset(config.data)
    print(dataset.report.describe())
    rate = repeat_rate(dataset.interactions)
    advice = recommended_repeat_policy(rate)
    agrees = "matches" if advice == config.repeats else "differs from"
    print(
        f"repeat rate: {rate:.1%} of interactions are on an item the user had before -> recommended `repeats: {advice}` "
        f"(this config says `repeats: {config.repeats}`, which {agrees} it)"
    )
    if args.json:
        report = json.loads(dataset.report.to_json())
        report["repeat_rate"] = {"rate": rate, "recommended": advice, "configured": config.repeats}
        write_text(args.json, json.dumps(report, indent=2))
    return 0


_validate_args.run = _validate  # type: ignore[attr-defined]


@command("evaluate", "fit models on the history window and evaluate them on the test window")
def _evaluate_args(parser: argparse.ArgumentParser) -> None:
    _config_arg(parser)
    parser.add_argument("--models", default="popularity,history,als,itemknn", help="comma-separated model names")
    parser.add_argument("--json", type=Path, help="write the summary table and per-user metrics here")
    parser.add_argument("--save-dir", type=Path, help="save each fitted model below this folder")


def _evaluate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    models = [build_model(n, config) for n in names]  # fail on an unknown name before loading data
    dataset = load_dataset(config.data)
    setup = prepare_evaluation(dataset, config)
    print(f"{setup.split.describe()}\ntest users: {len(setup.users):,} (warm only: {config.split.warm_users_only})")
    results = []
    for name, model in zip(names, models):
        start = time.perf_counter()
        results.append(evaluate_model(model, setup, config.evaluation))
        log.info("%s: MAP@%d %.4f in %.1fs", name, config.evaluation.k, results[-1].summary[f"map@{config.evaluation.k}"], time.perf_counter() - start)
        if args.save_dir:
            model.save(args.save_dir / name)
    table = results_table(results, config.evaluation)
    print(format_table(table))
    if args.json:
        payload = {
            "config": str(args.config),
            "data_fingerprint": dataset.fingerprint,
            "split": setup.split.describe(),
            "users": len(setup.users),
            "table": table.to_dicts(),
            "per_user": {r.name: r.per_user.to_dict(as_series=False) for r in results},
        }
        write_text(args.json, json.dumps(payload))
        print(f"wrote {args.json}")
    return 0


_evaluate_args.run = _evaluate  # type: ignore[attr-defined]


@command("content", "content embeddings: backbone features (cached) -> alignment -> evaluation -> item vectors")
def _content_args(parser: argparse.ArgumentParser) -> None:
    _config_arg(parser)
    parser.add_argument("--no-train", action="store_true", help="reuse the latest trained heads instead of training new ones")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _content(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    result = run_content(config, load_dataset(config.data), train=not args.no_train, progress=not args.quiet)
    print(json.dumps({"vectors": str(result.vectors_path), "encoder": result.encoder, "heads": str(result.heads_dir),
                      "mlflow_run_id": result.run_id, "seconds": result.seconds,
                      "metrics": {k: round(v, 4) for k, v in result.metrics.items()}}, indent=2))
    return 0


_content_args.run = _content  # type: ignore[attr-defined]

@command("serve", "serve the HTTP API and web page: the latest bundle under <work_dir>/bundles, or --bundle")
def _serve_args(parser: argparse.ArgumentParser) -> None:
    _config_arg(parser)
    parser.add_argument("--bundle", type=Path, help="a bundle folder, or a bundles folder whose 'latest' is served (default: <work_dir>/bundles)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (keep loopback unless behind a proxy)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (one per core for throughput)")
    parser.add_argument("--watch", type=float, default=10.0, help="reload when the 'latest' pointer moves, polled every N s (0: off)")
    parser.add_argument("--no-shared-bundle", dest="shared_bundle", action="store_false",
                        help="with several workers, spawn each with its own copy of the bundle instead of forking them from one loaded copy")
    parser.add_argument("--dev", action="store_true", help="train the config's bundle first when it has none (`make serve-dev`: configs/hm_dev.yaml, about a minute)")


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        if args.dev:
            bundle = args.bundle or ensure_bundle(config)
        else:
            bundle = args.bundle or config.work_path / "bundles"
        serve(ServeSettings(bundle, args.host, args.port, args.workers, args.watch, shared_bundle=args.shared_bundle))
    except BundleError as exc:
        hint = "" if args.dev else "\n  (`make serve-dev` trains and serves a small development bundle in about a minute)"
        print(f"recsys serve: error: {exc}{hint}", file=sys.stderr)
        return 2
    return 0


_serve_args.run = _serve  # type: ignore[attr-defined]


@command("train", "run every stage end to end (resumable), log to MLflow, write a verified model bundle")
def _train_args(parser: argparse.ArgumentParser) -> None:
    _config_arg(parser)
    parser.add_argument("--force", default="", help="comma-separated stage names to recompute (content,label_fold,label_fold_2,label_fold_3,reranker,serving_fold,evaluate,precompute)")
    parser.add_argument("--no-bundle", action="store_true", help="stop after the evaluation: no bundle is written (benchmarks)")
    parser.add_argument("--summary", type=Path, help="write the run's stages (folders, seconds, reuse) and peak memory here as JSON")


def _train(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    # Under torchrun (`make train NPROC=2`) rank 0 runs the pipeline and the other ranks only join
    # its two-tower training runs (recsys/two_tower/ranks.py).
    with rank_group(config.work_path / "rank_jobs") as rank:
        if rank > 0:
            for package in PROJECT_LOGGERS:  # rank 0 reports progress; the others only warnings
                logging.getLogger(package).setLevel(logging.WARNING)
            follow()
            return 0
        outcome = Pipeline(config, force={s for s in args.force.split(",") if s}).run(write_bundle=not args.no_bundle)
    reused = [n for n, r in outcome.stages.items() if r.reused]
    made = f"bundle {outcome.bundle.version} at {outcome.bundle.path}" if outcome.bundle else "no bundle (--no-bundle)"
    print(f"{made} (MLflow run {outcome.run_id}); reused stages: {', '.join(reused) or 'none'}; {outcome.seconds:.0f}s")
    if args.summary:
        summary = {
            "config": str(args.config),
            "seconds": outcome.seconds,
            "peak_rss_mb": outcome.peak_rss_mb,
            "bundle": str(outcome.bundle.path) if outcome.bundle else None,
            "stages": {
                name: {
                    "path": str(r.path), "reused": r.reused, "seconds": r.seconds, "compute_seconds": r.compute_seconds,
                    "peak_rss_mb": r.peak_rss_mb, "metrics": r.metrics,
                }
                for name, r in outcome.stages.items()
            },
        }
        write_text(args.summary, json.dumps(summary, indent=2, default=str))
    return 0


_train_args.run = _train  # type: ignore[attr-defined]


@command("retrieval", "fit ALS factors, the two-tower, the FAISS index and the merged candidates; report Recall@100")
def _retrieval_args(parser: argparse.ArgumentParser) -> None:
    _config_arg(parser)
    parser.add_argument("--json", type=Path, help="write the summary (test table, training, index, candidates) here")
    parser.add_argument("--save-dir", type=Path, help="artifact folder (default <work_dir>/retrieval)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def _retrieval(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    summary = run_retrieval(config, load_dataset(config.data), save_dir=args.save_dir, track=not args.no_mlflow)
    print(json.dumps({k: summary[k] for k in ("test", "two_tower", "index", "candidates")}, indent=2, default=str))
    if args.json:
        write_text(args.json, json.dumps(summary, indent=2, default=str))
    return 0


_retrieval_args.run = _retrieval  # type: ignore[attr-defined]


# A user's mistake (bad config, data, bundle or input path): one line, exit 2. Anything else is a bug: exit 1.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataValidationError, BundleError, FileNotFoundError)


def _write_traceback(args: argparse.Namespace, argv: list[str], trace: str) -> Path | None:
    """Write ``trace`` atomically to ``<work_dir>/logs/recsys-<timestamp>-<pid>.log``; None when the
    config (hence the work dir) cannot be read or the file cannot be written."""
    try:
        work = load_config(args.config).work_path
        name = f"recsys-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        return write_text(work / "logs" / name, f"$ recsys {' '.join(argv)}\n\n{trace}")
    except Exception:  # noqa: BLE001 - no readable config or writable work dir: the caller prints to stderr
        return None


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run a subcommand.

    A user's mistake (:data:`USER_ERRORS`) prints one line ``recsys <command>: error: ...`` and
    returns 2. Any other exception is a bug: one line naming its type, the traceback written to
    ``<work_dir>/logs/`` (or to stderr when the work dir is unknown), and 1. ``-v`` also prints the
    traceback to stderr.
    """
    parser = argparse.ArgumentParser(prog="recsys", description="Hybrid product recommender")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging; print tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _, help_text) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    # force: a library imported above (torchrec) already put a handler on the root logger. The
    # project's own loggers report progress at INFO; libraries (fbgemm logs every table at INFO) at WARNING.
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for package in PROJECT_LOGGERS:
        logging.getLogger(package).setLevel(level)
    try:
        return COMMANDS[args.command][1](args)
    except USER_ERRORS as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - anything else is a bug: report it as one, keep the traceback
        trace = traceback.format_exc()
        path = _write_traceback(args, sys.argv[1:] if argv is None else list(argv), trace)
        if path is None or args.verbose:
            print(trace, end="", file=sys.stderr)
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        where = f"full traceback in {path}" if path else "traceback above"
        print(f"recsys {args.command}: internal error (this is a bug): {what}\n  ({where})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
