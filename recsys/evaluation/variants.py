"""Variants for offline A/B comparisons: where a variant's recommendation lists come from.

A variant spec is one of:

- ``model:<name>`` — a registered model (``recsys.models``), fitted on the protocol's history window;
- ``lists:<path>`` — a parquet of saved lists (``user_id``, ``item_ids``), e.g. written by a training run;
- ``<name>`` alone — shorthand for ``model:<name>``.

Every variant is scored with the same protocol code, on the same users.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys.atomic import atomic_path
from recsys.config import ProjectConfig
from recsys.evaluation.protocol import EvaluationSetup, ModelEvaluation, score_lists


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
    from recsys.models import build_model

    k = k or max(config.evaluation.k, *config.evaluation.recall_ks)
    kind, _, target = spec.partition(":") if ":" in spec else ("model", "", spec)
    start = time.perf_counter()
    if kind == "model":
        model = build_model(target, config).fit(setup.train)
        recs = model.recommend(setup.users, k).as_dict()
    elif kind == "lists":
        frame = pl.read_parquet(Path(target))
        if not {"user_id", "item_ids"} <= set(frame.columns):
            raise ValueError(f"{target}: a lists file needs columns user_id and item_ids, has {frame.columns}")
        recs = {u: list(items)[:k] for u, items in zip(frame["user_id"].to_list(), frame["item_ids"].to_list())}
    else:
        raise ValueError(f"unknown variant kind {kind!r} in {spec!r}: use model:<name> or lists:<path>")
    label = name or (target if kind == "model" else Path(target).stem)
    evaluation = score_lists(label, recs, setup, config.evaluation)
    return Variant(label, spec, recs, evaluation, time.perf_counter() - start)


def save_lists(recommendations: dict[str, list[str]], path: Path) -> Path:
    """Write lists as parquet (``user_id``, ``item_ids``), atomically."""
    with atomic_path(path) as tmp:
        pl.DataFrame({"user_id": list(recommendations), "item_ids": list(recommendations.values())}).write_parquet(tmp)
    return path
