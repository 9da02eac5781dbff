"""The evaluation protocol: fit on the history window, rank for test users, score against the test window.

The same code evaluates baselines, pipeline stages and the full pipeline, from the CLI, the
training run and the notebooks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recsys.config import EvaluationConfig, ProjectConfig
from recsys.data import Dataset, TrainingData, ground_truth, split_by_time
from recsys.data.sampling import sample_users
from recsys.data.split import TimeSplit
from recsys.evaluation.bootstrap import PairedDifference, paired_bootstrap
from recsys.evaluation.metrics import PER_USER_METRICS, catalogue_coverage, novelty
from recsys.forked import forked_map
from recsys.models.base import Recommender

log = logging.getLogger(__name__)


@dataclass
class EvaluationSetup:
    """Everything needed to score recommendations on one protocol.

    Attributes:
        split: the time windows.
        train: encoded history window (what models are fitted on).
        users: the test users, in a fixed order (warm users only if configured).
        truth: distinct test-window items per test user.
        item_popularity: training interaction counts per item id (for novelty).
        exclude_seen: the repeat policy (``repeats: exclude``): lists leave out what each user
            already had, and the truth counts only items new to the user.
    """

    split: TimeSplit
    train: TrainingData
    users: list[str]
    truth: dict[str, list[str]]
    item_popularity: dict[str, float]
    exclude_seen: bool = False


@dataclass
class ModelEvaluation:
    """Per-user metrics and the summary of one model on one setup."""

    name: str
    per_user: pl.DataFrame
    summary: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def prepare_evaluation(dataset: Dataset, config: ProjectConfig) -> EvaluationSetup:
    """Split the data set and build the test users' ground truth.

    Args:
        dataset: validated data.
        config: uses ``split`` (windows, warm users).
    """
    split = split_by_time(dataset.interactions, config.split)
    history = split.history
    train = TrainingData.build(history, dataset.items, dataset.users, as_of=split.test_start)
    test_users = split.test["user_id"].unique(maintain_order=True).to_list()
    if config.split.warm_users_only:
        test_users = [u for u in test_users if u in train.user_index]
    truth = ground_truth(split.test, test_users)
    # With event types, only users with a target event in the test window are scored.
    test_users = [u for u in test_users if u in truth]
    exclude = config.repeats == "exclude"
    if exclude:
        # Nobody can be recommended what they had: only new items count, and users with none drop out.
        had = history.join(pl.DataFrame({"user_id": test_users}), on="user_id", how="semi").group_by("user_id").agg(pl.col("item_id"))
        seen = {u: set(items) for u, items in zip(had["user_id"].to_list(), had["item_id"].to_list())}
        truth = {u: [i for i in items if i not in seen.get(u, ())] for u, items in truth.items()}
        dropped = [u for u in test_users if not truth.get(u)]
        test_users = [u for u in test_users if truth.get(u)]
        truth = {u: truth[u] for u in test_users}
        log.info("repeats excluded: %d test users had only items they interacted with before and are left out", len(dropped))
    test_users = sample_users(test_users, config.evaluation.max_users, config.evaluation.seed, "evaluation.max_users: test users")
    truth = {u: truth[u] for u in test_users}
    pop = history.group_by("item_id").agg(pl.col("weight").sum())
    log.info("evaluation setup: %s; %d test users", split.describe(), len(test_users))
    return EvaluationSetup(split, train, test_users, truth, dict(zip(pop["item_id"].to_list(), pop["weight"].to_list())), exclude)


def score_lists(
    name: str, recommendations: dict[str, list[str]], setup: EvaluationSetup, config: EvaluationConfig
) -> ModelEvaluation:
    """Compute per-user metrics and the summary for ranked lists.

    Args:
        name: the variant's label.
        recommendations: ranked item ids per user; a test user missing here counts as an empty list.
        setup: the protocol.
        config: metric cut-offs.
    """
    ks = sorted({config.k, *config.recall_ks})
    rows: dict[str, list[float]] = {}
    for user in setup.users:
        recs, truth = recommendations.get(user, []), setup.truth[user]
        for metric, fn in PER_USER_METRICS.items():
            for k in ks:
                if metric != "recall" and k != config.k:
                    continue
                rows.setdefault(f"{metric}@{k}", []).append(fn(recs, truth, k))
    per_user = pl.DataFrame({"user_id": setup.users, **rows})
    summary: dict[str, float] = {}
    for c in rows:
        mean = per_user[c].mean()
        assert isinstance(mean, (int, float)), c  # a non-empty numeric column
        summary[c] = float(mean)
    lists = [recommendations.get(u, []) for u in setup.users]
    summary[f"coverage@{config.k}"] = catalogue_coverage(lists, setup.train.n_items, config.k)
    summary[f"novelty@{config.k}"] = novelty(lists, setup.item_popularity, config.k)
    summary["users"] = float(len(setup.users))
    return ModelEvaluation(name, per_user, summary)


EVALUATION_BLOCK = 1024  # test users per block: a fixed size, so a list never depends on how many workers there are


def recommend_in_blocks(model: Recommender, users: list[str], k: int, exclude_seen: bool, workers: int) -> dict[str, list[str]]:
    """Every user's top ``k`` from a fitted model, fixed-size blocks of users shared among forked workers.

    Args:
        model: the fitted recommender (inherited by the workers, not pickled).
        users: the users, each once.
        k: list length.
        exclude_seen: the repeat policy.
        workers: processes (1: this one).

    Returns:
        user id -> ranked item ids.
    """
    blocks = [users[lo : lo + EVALUATION_BLOCK] for lo in range(0, len(users), EVALUATION_BLOCK)]
    parts = forked_map(lambda block: model.recommend(block, k, exclude_seen=exclude_seen).as_dict(), blocks, workers)
    return {user: items for part in parts for user, items in part.items()}


def evaluate_model(model: Recommender, setup: EvaluationSetup, config: EvaluationConfig, fit: bool = True) -> ModelEvaluation:
    """Fit (optionally) and score one model on the protocol, under its repeat policy (``setup.exclude_seen``).

    Args:
        model: the recommender.
        setup: the protocol.
        config: metric cut-offs.
        fit: fit on ``setup.train`` first (False: the model is already fitted).

    Returns:
        Per-user metrics and the summary; ``seconds`` includes fitting.
    """
    start = time.perf_counter()
    if fit:
        model.fit(setup.train)
    k = max(config.k, *config.recall_ks)
    lists = recommend_in_blocks(model, setup.users, k, setup.exclude_seen, config.workers)
    result = score_lists(model.name, lists, setup, config)
    result.seconds = time.perf_counter() - start
    return result


def compare(a: ModelEvaluation, b: ModelEvaluation, metric: str, config: EvaluationConfig) -> PairedDifference:
    """Paired bootstrap of ``b - a`` on one per-user metric (same users, same order).

    Args:
        a: the baseline evaluation.
        b: the variant.
        metric: a per-user metric column, e.g. ``"map@12"``.
        config: bootstrap samples and seed.

    Raises:
        ValueError: the two evaluations cover different users.
    """
    if a.per_user["user_id"].to_list() != b.per_user["user_id"].to_list():
        raise ValueError(f"{a.name} and {b.name} were evaluated on different users")
    return paired_bootstrap(a.per_user[metric].to_numpy(), b.per_user[metric].to_numpy(), config.bootstrap_samples, seed=config.seed)


def results_table(results: list[ModelEvaluation], config: EvaluationConfig) -> pl.DataFrame:
    """One row per model: MAP, Recall, NDCG, precision, hit rate @k, Recall@max, coverage, novelty, seconds.

    Args:
        results: the evaluated models.
        config: ``k`` and the recall cut-offs.
    """
    k, big = config.k, max(config.recall_ks)
    cols = [f"map@{k}", f"recall@{k}", f"ndcg@{k}", f"precision@{k}", f"hitrate@{k}", f"recall@{big}", f"coverage@{k}", f"novelty@{k}"]
    return pl.DataFrame(
        [{"model": r.name, **{c: r.summary.get(c, float("nan")) for c in cols}, "seconds": r.seconds} for r in results]
    )


def format_table(table: pl.DataFrame) -> str:
    """A plain-text table with 4 decimals (for terminals and logs).

    Args:
        table: the frame to print (floats get 4 decimals, other cells ``str``).

    Returns:
        The header, a rule and one line per row; the first column left-aligned, the rest right.
    """
    headers = table.columns
    rows = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in table.iter_rows()]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def mean_per_user(per_user: pl.DataFrame, metric: str) -> float:
    """Mean of one per-user metric column.

    Args:
        per_user: one row per user, one column per metric.
        metric: the column, e.g. ``"map@12"``.

    Returns:
        The mean over users.
    """
    return float(np.mean(per_user[metric].to_numpy()))
