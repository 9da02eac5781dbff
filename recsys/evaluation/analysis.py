"""Comparisons of two variants on the same users: intervals, segments, curves, a verdict.

Used by the offline A/B notebook and the training run's final table, on top of the one metric
implementation in :mod:`recsys.evaluation.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from recsys.config import EvaluationConfig
from recsys.evaluation.bootstrap import paired_bootstrap
from recsys.evaluation.metrics import dedupe, recall_at_k
from recsys.evaluation.protocol import EvaluationSetup, ModelEvaluation


def compare_table(a: ModelEvaluation, b: ModelEvaluation, metrics: Sequence[str], config: EvaluationConfig) -> pl.DataFrame:
    """One row per metric: both means, the paired difference b - a with its 95% interval and p-value.

    Args:
        a: the baseline evaluation.
        b: the variant evaluated on the same users.
        metrics: per-user metric columns, e.g. ``"map@12"``.
        config: bootstrap samples and seed.

    Returns:
        Columns metric, <a.name>, <b.name>, diff, ci_low, ci_high, relative, p_value, significant.

    Raises:
        ValueError: the two evaluations cover different users.
    """
    if a.per_user["user_id"].to_list() != b.per_user["user_id"].to_list():
        raise ValueError(f"{a.name} and {b.name} were evaluated on different users")
    rows = []
    for m in metrics:
        d = paired_bootstrap(a.per_user[m].to_numpy(), b.per_user[m].to_numpy(), config.bootstrap_samples, seed=config.seed)
        rows.append(
            {
                "metric": m,
                a.name: d.mean_a,
                b.name: d.mean_b,
                "diff": d.diff,
                "ci_low": d.low,
                "ci_high": d.high,
                "relative": d.relative,
                "p_value": d.p_value,
                "significant": d.significant,
            }
        )
    return pl.DataFrame(rows)


def recall_curve(recommendations: Mapping[str, Sequence[str]], setup: EvaluationSetup, ks: Sequence[int]) -> dict[int, float]:
    """Mean Recall@k over the test users for each k (lists shorter than k count what they have).

    Args:
        recommendations: ranked item ids per user (a missing user counts as an empty list).
        setup: the test users and their truth.
        ks: list lengths.

    Returns:
        k -> mean recall.
    """
    return {
        k: float(np.mean([recall_at_k(recommendations.get(u, []), setup.truth[u], k) for u in setup.users])) for k in ks
    }


def activity_buckets(setup: EvaluationSetup, edges: Sequence[int] = (1, 2, 4, 8)) -> pl.DataFrame:
    """Each test user's training-window purchase count, bucketed ("1", "2-3", "4-7", "8+").

    Args:
        setup: the test users and the training window.
        edges: lower bounds of the buckets (the last is open-ended).

    Returns:
        Columns user_id, segment.
    """
    counts = setup.train.interactions.group_by("user_id").len()
    frame = pl.DataFrame({"user_id": setup.users}).join(counts, on="user_id", how="left").with_columns(pl.col("len").fill_null(0))
    labels = [f"{lo}-{hi - 1}" if hi - lo > 1 else str(lo) for lo, hi in zip(edges, edges[1:])] + [f"{edges[-1]}+"]
    bucket = pl.lit(labels[-1])
    for label, hi in reversed(list(zip(labels[:-1], edges[1:]))):
        bucket = pl.when(pl.col("len") < hi).then(pl.lit(label)).otherwise(bucket)
    return frame.with_columns(bucket.alias("segment")).select("user_id", "segment")


def user_segment_table(evaluations: Sequence[ModelEvaluation], segments: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Mean of a per-user metric by user segment, one column per variant, plus the user count.

    Args:
        evaluations: the variants (their ``per_user`` tables).
        segments: columns user_id, segment (e.g. from :func:`activity_buckets`).
        metric: a per-user metric column.
    """
    out = segments.group_by("segment").len().rename({"len": "users"})
    for e in evaluations:
        means = e.per_user.join(segments, on="user_id").group_by("segment").agg(pl.col(metric).mean().alias(e.name))
        out = out.join(means, on="segment", how="left")
    return out.sort("segment")


def item_segment_recall(
    recommendations: Mapping[str, Sequence[str]], setup: EvaluationSetup, item_segment: Mapping[str, str], k: int
) -> pl.DataFrame:
    """Recall@k restricted to test-day purchases of each item segment.

    For a segment (e.g. "no image", "cold"), each user's truth is cut to items in that segment;
    users with no such purchase are skipped for that segment.

    Args:
        recommendations: ranked item ids per user.
        setup: the test users and their truth.
        item_segment: item id -> segment (items not listed are "unknown").
        k: list length.

    Returns:
        segment, users (with at least one purchase in it), truth items, recall.
    """
    hits: dict[str, list[float]] = {}
    n_truth: dict[str, int] = {}
    for user in setup.users:
        top = set(dedupe(recommendations.get(user, []))[:k])
        by_segment: dict[str, list[str]] = {}
        for item in setup.truth[user]:
            by_segment.setdefault(item_segment.get(item, "unknown"), []).append(item)
        for seg, items in by_segment.items():
            hits.setdefault(seg, []).append(sum(i in top for i in items) / len(items))
            n_truth[seg] = n_truth.get(seg, 0) + len(items)
    return pl.DataFrame(
        [{"segment": s, "users": len(v), "truth_items": n_truth[s], f"recall@{k}": float(np.mean(v))} for s, v in sorted(hits.items())]
    )


def recommended_popularity(recommendations: Mapping[str, Sequence[str]], item_popularity: Mapping[str, float], k: int) -> np.ndarray:
    """Training-window interaction count of every recommended item (for popularity-bias plots).

    Args:
        recommendations: ranked item ids per user.
        item_popularity: item id -> training interaction count (missing: 0).
        k: how much of each list counts.
    """
    return np.asarray([item_popularity.get(i, 0.0) for recs in recommendations.values() for i in dedupe(recs)[:k]], dtype=np.float64)


def verdict(table: pl.DataFrame, name_a: str, name_b: str, primary: str) -> str:
    """A one-paragraph decision computed from the comparison table (never written by hand).

    Args:
        table: the output of :func:`compare_table`.
        name_a: the baseline's name (a column of ``table``).
        name_b: the variant's name.
        primary: the metric the decision is about.
    """
    row = table.filter(pl.col("metric") == primary).row(0, named=True)
    direction = "better" if row["diff"] > 0 else "worse"
    if row["significant"]:
        head = f"{name_b} is {direction} than {name_a} on {primary}: {row[name_b]:.4f} vs {row[name_a]:.4f} ({row['relative']:+.1%}, 95% CI of the difference [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}], p={row['p_value']:.3f})."
    else:
        head = f"No significant difference on {primary}: {name_b} {row[name_b]:.4f} vs {name_a} {row[name_a]:.4f} (95% CI [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] includes 0)."
    others = table.filter((pl.col("metric") != primary) & pl.col("significant"))
    if others.height:
        parts = [f"{r['metric']} {'+' if r['diff'] > 0 else '-'}" for r in others.iter_rows(named=True)]
        head += " Also significant: " + ", ".join(parts) + "."
    return head
