"""Variants for offline A/B comparisons: where a variant's recommendation lists come from.

A variant spec is one of:

- ``model:<name>`` — a registered model (``recsys.models``), fitted on the protocol's history window;
- ``lists:<path>`` — a parquet of saved lists (``user_id``, ``item_ids``), e.g. written by a training run;
- ``bundle:<list>[@<version or path>]`` — lists a training run evaluated and stored in its model
  bundle (``popularity``, ``history``, ``als``, ``content``, ``two_tower``, ``candidates``,
  ``reranked``); default the ``latest`` bundle under the work dir;
- ``mlflow:<run id>/<list>`` — the same lists, read from a training run's MLflow artifacts;
- ``<name>`` alone — shorthand for ``model:<name>``.

Every variant is scored with the same protocol code, on the same users.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import polars as pl

from recsys.atomic import atomic_path
from recsys.bundle import resolve_bundle
from recsys.config import ProjectConfig
from recsys.evaluation.protocol import EvaluationSetup, ModelEvaluation, score_lists
from recsys.registry import build_model
from training.tracking import configure

EVALUATION_LISTS = "evaluation_lists"  # folder of evaluated lists in a bundle and in a training run's MLflow artifacts


@dataclass
class Variant:
    """A variant's lists and their evaluation."""

    name: str
    spec: str
    recommendations: dict[str, list[str]]
    evaluation: ModelEvaluation
    seconds: float


def resolve_variant(spec: str, config: ProjectConfig, setup: EvaluationSetup, k: int | None = None, name: str | None = None) -> Variant:
    """Produce and score a variant's lists for the setup's test users.

    Args:
        spec: see the module docstring.
        config: project config (model settings, metric cut-offs).
        setup: the protocol (users, truth, training window).
        k: list length; default the largest configured cut-off.
        name: display name; default derived from the spec.

    Raises:
        ValueError: an unknown spec kind or a lists file without the required columns.
    """
    k = k or max(config.evaluation.k, *config.evaluation.recall_ks)
    kind, _, target = spec.partition(":") if ":" in spec else ("model", "", spec)
    start = time.perf_counter()
    if kind == "model":
        model = build_model(target, config).fit(setup.train)
        recs = model.recommend(setup.users, k).as_dict()
    elif kind in ("lists", "bundle", "mlflow"):
        path = {"lists": Path, "bundle": lambda t: bundle_lists_path(t, config), "mlflow": lambda t: mlflow_lists_path(t, config)}[kind](target)
        recs = load_lists(path, k)
    else:
        raise ValueError(f"unknown variant kind {kind!r} in {spec!r}: use model:<name>, lists:<path>, bundle:<list>[@<bundle>] or mlflow:<run id>/<list>")
    label = name or _label(kind, target)
    evaluation = score_lists(label, recs, setup, config.evaluation)
    return Variant(label, spec, recs, evaluation, time.perf_counter() - start)


def _label(kind: str, target: str) -> str:
    """A short display name: the model or list name, with the bundle or run it came from."""
    if kind == "model":
        return target
    if kind == "lists":
        return Path(target).stem
    if kind == "bundle":
        list_name, _, where = target.partition("@")
        return f"{list_name}@{Path(where).name}" if where else list_name
    run_id, _, list_name = target.partition("/")
    return f"{list_name}@{run_id[:8]}"


def load_lists(path: Path, k: int) -> dict[str, list[str]]:
    """Read a lists parquet (``user_id``, ``item_ids``), each list cut to ``k``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file lacks the required columns.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no lists file at {path}")
    frame = pl.read_parquet(path)
    if not {"user_id", "item_ids"} <= set(frame.columns):
        raise ValueError(f"{path}: a lists file needs columns user_id and item_ids, has {frame.columns}")
    return {u: list(items)[:k] for u, items in zip(frame["user_id"].to_list(), frame["item_ids"].to_list())}


def bundle_lists_path(target: str, config: ProjectConfig) -> Path:
    """``<list>[@<version or path>]`` -> the list's parquet inside a model bundle."""
    list_name, _, where = target.partition("@")
    if where and Path(where).is_dir():
        bundle = resolve_bundle(Path(where))
    else:
        bundle = resolve_bundle(config.work_path / "bundles", where or None)
    path = bundle / EVALUATION_LISTS / f"{list_name}.parquet"
    if not path.is_file():
        known = sorted(p.stem for p in (bundle / EVALUATION_LISTS).glob("*.parquet"))
        raise ValueError(f"bundle {bundle.name} has no evaluated list {list_name!r}; it has {known}")
    return path


def mlflow_lists_path(target: str, config: ProjectConfig) -> Path:
    """``<run id>/<list>`` -> a local copy of the list a training run logged to MLflow."""
    run_id, _, list_name = target.partition("/")
    if not run_id or not list_name:
        raise ValueError(f"mlflow variant {target!r}: use mlflow:<run id>/<list name>")
    configure(config)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{EVALUATION_LISTS}/{list_name}.parquet"))


def save_lists(recommendations: dict[str, list[str]], path: Path) -> Path:
    """Write lists as parquet (``user_id``, ``item_ids``), atomically."""
    with atomic_path(path) as tmp:
        pl.DataFrame({"user_id": list(recommendations), "item_ids": list(recommendations.values())}).write_parquet(tmp)
    return path
