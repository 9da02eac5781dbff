"""Fit one peer library's model on integer arrays and write its top-k recommendations.

Run by the python of the peer's own pinned venv (see ``envs.py``)::

    <env>/bin/python bench/peers/peer_runner.py --input DIR --output DIR

Input (``DIR``):

* ``train.npz``: 1-D arrays ``user``, ``item`` (int codes ``0..n-1``), ``timestamp`` (int epoch
  seconds), ``weight`` (float, > 0) of equal length, and scalars ``n_users``, ``n_items``. A user may
  have several rows for one item (re-purchases).
* ``query_users.npy``: int user codes to recommend for, all present in train.
* ``task.json``: ``{"library", "model", "params", "k", "exclude_seen", "seed", "threads"}``.

Output (``DIR``, each file written under a temporary name and renamed, ``stats.json`` last):

* ``recs.npy``: int64 ``(n_query, k)`` item codes in rank order, padded with -1.
* ``stats.json``: ``fit_seconds`` (arrays to fitted model, including building the library's own
  dataset), ``recommend_seconds`` (fitted model to codes, all query users), ``peak_rss_mb``,
  ``library``, ``library_version``, ``model``, ``params`` (effective), ``notes``.

Only numpy, the stdlib and the requested peer library (with what its documented input needs:
scipy.sparse for implicit, pandas for RecTools) are imported, and numpy only after the thread
environment variables are set, because BLAS/OpenMP read them once at load time. Bad input exits
with status 2 and one line on stderr; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Python puts this script's directory first on sys.path, and it holds folders named rectools/, cornac/ and
# implicit/ (the lock files): without a real install they would import as empty namespace packages.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

LIBRARIES = ("rectools", "cornac", "implicit")
EXIT_BAD_INPUT = 2


class PeerError(Exception):
    """A problem with the input or the environment, reported as one line and exit status 2."""


@dataclass(frozen=True)
class Task:
    """What to run, from ``task.json``."""

    library: str
    model: str
    params: dict[str, Any]
    k: int
    exclude_seen: bool
    seed: int
    threads: int


@dataclass(frozen=True)
class TrainData:
    """Interaction rows as integer codes (validated)."""

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    weight: np.ndarray
    n_users: int
    n_items: int


@dataclass
class Context:
    """Everything a model adapter needs; adapters append to ``notes``."""

    train: TrainData
    users: np.ndarray  # unique, sorted query user codes
    task: Task
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Ranked:
    """An adapter's answer: candidate item codes per query user, which of them are real, and timings."""

    ids: np.ndarray  # (n_users, width) item codes in rank order
    valid: np.ndarray  # (n_users, width) bool; False marks padding or entries the library flagged as filtered
    fit_seconds: float
    recommend_seconds: float


# --------------------------------------------------------------------------------------------- helpers


def _log(message: str) -> None:
    print(f"[peer_runner {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class _Phase:
    """Elapsed seconds of one timed block."""

    seconds: float = 0.0


@contextmanager
def _phase(label: str) -> Iterator[_Phase]:
    """Time a block and log its start and end, so long fits show progress."""
    phase = _Phase()
    _log(f"{label} start")
    start = time.perf_counter()
    yield phase
    phase.seconds = time.perf_counter() - start
    _log(f"{label} done in {phase.seconds:.2f} s")


def _summed_csr(train: TrainData) -> Any:
    """User x item CSR of summed weights (repeat rows for a pair add up), float32 as implicit wants."""
    import numpy as np
    from scipy.sparse import csr_matrix

    matrix = csr_matrix(
        (train.weight.astype(np.float32), (train.user, train.item)), shape=(train.n_users, train.n_items)
    )
    matrix.sum_duplicates()
    return matrix


def _sum_pairs(train: TrainData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (user, item) pairs with summed weights, for libraries that keep only one row per pair."""
    import numpy as np

    keys = train.user * train.n_items + train.item
    unique, inverse = np.unique(keys, return_inverse=True)
    weights = np.bincount(inverse, weights=train.weight).astype(np.float32)
    return unique // train.n_items, unique % train.n_items, weights


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first (ties by lower index, for determinism)."""
    import numpy as np

    k = min(k, scores.shape[0])
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


# ------------------------------------------------------------------------------------------- implicit


def _implicit_ranked(model: Any, user_items: Any, ctx: Context, fit_seconds: float) -> Ranked:
    """Batch-recommend with an implicit model and drop what its top-k marks as filtered."""
    import numpy as np

    train, task = ctx.train, ctx.task
    with _phase("recommend") as rec:
        n = min(task.k, train.n_items)  # implicit pads N beyond the catalogue with item 0, score 0
        ids, scores = model.recommend(
            ctx.users, user_items[ctx.users], N=n, filter_already_liked_items=task.exclude_seen
        )
        # Filtered (already liked) items come back at the tail with score -FLT_MAX when too few are left.
        valid = scores > np.finfo(np.float32).min
    return Ranked(np.asarray(ids, dtype=np.int64), valid, fit_seconds, rec.seconds)


def _run_implicit_als(ctx: Context) -> Ranked:
    """implicit ALS (CPU) on the CSR of summed weights."""
    from implicit.cpu.als import AlternatingLeastSquares

    p = ctx.task.params
    with _phase("fit") as fit:
        user_items = _summed_csr(ctx.train)
        model = AlternatingLeastSquares(
            factors=p["factors"],
            regularization=p["regularization"],
            alpha=p["alpha"],
            iterations=p["iterations"],
            num_threads=ctx.task.threads,
            random_state=ctx.task.seed,
        )
        model.fit(user_items, show_progress=False)
    return _implicit_ranked(model, user_items, ctx, fit.seconds)


def _run_implicit_bpr(ctx: Context) -> Ranked:
    """implicit BPR (CPU) on the CSR of summed weights (BPR uses only which pairs are non-zero)."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    p = ctx.task.params
    if ctx.task.threads > 1:
        ctx.notes.append("implicit BPR with threads > 1 updates factors hogwild-style: not bit-reproducible")
    with _phase("fit") as fit:
        user_items = _summed_csr(ctx.train)
        model = BayesianPersonalizedRanking(
            factors=p["factors"],
            learning_rate=p["learning_rate"],
            regularization=p["regularization"],
            iterations=p["iterations"],
            num_threads=ctx.task.threads,
            random_state=ctx.task.seed,
        )
        model.fit(user_items, show_progress=False)
    return _implicit_ranked(model, user_items, ctx, fit.seconds)


# --------------------------------------------------------------------------------------------- cornac


def _require_modules(library: str, model: str, modules: tuple[str, ...]) -> None:
    """Fail early and clearly when a model's optional dependencies are absent from this env."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise PeerError(
                f"{library} {model} needs the module {name!r}, which cannot be imported in this env "
                f"({sys.executable}): {exc}"
            ) from None


def _cornac_model(ctx: Context) -> Any:
    """The cornac recommender object for the task's model, with the effective params."""
    p, task = ctx.task.params, ctx.task
    if task.model == "bpr":
        from cornac.models import BPR

        return BPR(
            k=p["k"],
            max_iter=p["max_iter"],
            learning_rate=p["learning_rate"],
            lambda_reg=p["lambda_reg"],
            use_bias=p["use_bias"],
            num_threads=task.threads,
            seed=task.seed,
        )
    # LightGCN imports torch and dgl only inside fit(); check first so the failure names the module.
    _require_modules("cornac", "lightgcn", ("torch", "dgl"))
    from cornac.models import LightGCN

    return LightGCN(
        emb_size=p["emb_size"],
        num_epochs=p["num_epochs"],
        learning_rate=p["learning_rate"],
        batch_size=p["batch_size"],
        num_layers=p["num_layers"],
        lambda_reg=p["lambda_reg"],
        seed=task.seed,
    )


def _run_cornac(ctx: Context) -> Ranked:
    """Fit a cornac model on a ``Dataset.from_uir`` train set, then score all items per query user."""
    import numpy as np
    from cornac.data import Dataset

    train, task = ctx.train, ctx.task
    if task.threads > 1 and task.model == "bpr":
        ctx.notes.append("cornac BPR with threads > 1 updates factors hogwild-style: not bit-reproducible")
    model = _cornac_model(ctx)
    with _phase("fit") as fit:
        # from_uir keeps the first row of a repeated (user, item) pair; sum them first, as for implicit.
        users, items, weights = _sum_pairs(train)
        train_set = Dataset.from_uir(zip(users.tolist(), items.tolist(), weights.tolist()), seed=task.seed)
        model.fit(train_set)
    with _phase("recommend") as rec:
        # cornac indexes users/items in first-seen order; map its item indices back to our codes.
        code_of_index = np.empty(len(train_set.iid_map), dtype=np.int64)
        code_of_index[list(train_set.iid_map.values())] = list(train_set.iid_map.keys())
        seen = train_set.csr_matrix
        width = min(task.k, len(code_of_index))
        ids = np.full((len(ctx.users), width), -1, dtype=np.int64)
        for row, user in enumerate(ctx.users.tolist()):
            index = train_set.uid_map[user]
            scores = np.asarray(model.score(index), dtype=np.float64)
            if task.exclude_seen:
                scores[seen.indices[seen.indptr[index] : seen.indptr[index + 1]]] = -np.inf
            best = _top_k(scores, width)
            best = best[np.isfinite(scores[best])]
            ids[row, : len(best)] = code_of_index[best]
    return Ranked(ids, ids >= 0, fit.seconds, rec.seconds)


# ------------------------------------------------------------------------------------------- rectools


def _rectools_frame(train: TrainData) -> pd.DataFrame:
    """Interactions in RecTools' column names; our int codes are used as external ids directly."""
    import pandas as pd
    from rectools import Columns

    return pd.DataFrame(
        {
            Columns.User: train.user,
            Columns.Item: train.item,
            Columns.Weight: train.weight.astype("float32"),
            # SASRec orders each user's sequence by this column.
            Columns.Datetime: pd.to_datetime(train.timestamp, unit="s"),
        }
    )


def _cap_items(frame: pd.DataFrame, train: TrainData, max_items: int, notes: list[str]) -> pd.DataFrame:
    """Keep only the ``max_items`` most-interacted items: EASE's item-item matrix is dense."""
    import numpy as np
    from rectools import Columns

    counts = np.bincount(train.item, minlength=train.n_items)
    n_present = int((counts > 0).sum())
    if n_present <= max_items:
        return frame
    keep = np.argsort(-counts, kind="stable")[:max_items]
    kept = frame[np.isin(frame[Columns.Item].to_numpy(), keep)]
    share = len(kept) / len(frame)
    notes.append(
        f"EASE fitted on the {max_items} most-interacted of {n_present} items "
        f"({share:.1%} of interaction rows); other items are never recommended"
    )
    return kept


def _rectools_sasrec(ctx: Context) -> Any:
    """SASRecModel with an explicit CPU Lightning trainer (the default one would pick a GPU if present)."""
    import torch
    from pytorch_lightning import Trainer, seed_everything
    from rectools.models import SASRecModel

    p, task = ctx.task.params, ctx.task
    seed_everything(task.seed, workers=True, verbose=False)
    torch.set_num_threads(task.threads)

    def cpu_trainer(epochs: int, deterministic: bool) -> Trainer:
        """Same settings as RecTools' default trainer, pinned to one CPU device.

        Args:
            epochs: number of training epochs (RecTools' own ``epochs`` is ignored with a custom trainer).
            deterministic: whether Lightning enables torch's deterministic algorithms.

        Returns:
            The Lightning trainer.
        """
        return Trainer(
            max_epochs=epochs,
            min_epochs=epochs,
            deterministic=deterministic,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
        )

    return SASRecModel(
        n_blocks=p["n_blocks"],
        n_heads=p["n_heads"],
        n_factors=p["n_factors"],
        dropout_rate=p["dropout_rate"],
        session_max_len=p["session_max_len"],
        train_min_user_interactions=p["train_min_user_interactions"],
        loss=p["loss"],
        lr=p["lr"],
        batch_size=p["batch_size"],
        epochs=p["epochs"],
        deterministic=p["deterministic"],
        get_trainer_func=cpu_trainer,
        get_trainer_func_kwargs={"epochs": p["epochs"], "deterministic": p["deterministic"]},
        recommend_torch_device="cpu",
        recommend_n_threads=task.threads,
    )


def _rectools_model(ctx: Context) -> Any:
    """The RecTools model object for the task's model, with the effective params."""
    from rectools.models import EASEModel, PopularModel

    p, task = ctx.task.params, ctx.task
    if task.model == "ease":
        return EASEModel(
            regularization=p["regularization"],
            recommend_n_threads=task.threads,
            recommend_use_gpu_ranking=False,
        )
    if task.model == "popular":
        return PopularModel(popularity=p["popularity"])
    return _rectools_sasrec(ctx)


def _run_rectools(ctx: Context) -> Ranked:
    """Fit a RecTools model on ``Dataset.construct`` and recommend for the query users."""
    import numpy as np
    from rectools import Columns
    from rectools.dataset import Dataset

    train, task = ctx.train, ctx.task
    model = _rectools_model(ctx)
    with _phase("fit") as fit:
        frame = _rectools_frame(train)
        if task.model == "ease":
            frame = _cap_items(frame, train, ctx.task.params["max_items"], ctx.notes)
        dataset = Dataset.construct(frame)
        model.fit(dataset)
    with _phase("recommend") as rec:
        known = np.isin(ctx.users, frame[Columns.User].unique())
        if not known.all():
            ctx.notes.append(
                f"{int((~known).sum())} query users have no interactions left after the item cap"
            )
        reco = model.recommend(
            users=ctx.users[known],
            dataset=dataset,
            k=task.k,
            filter_viewed=task.exclude_seen,
            # SASRec cannot score users whose items it never saw; they get no recs instead of an error.
            on_unsupported_targets="ignore",
        )
        ids = np.full((len(ctx.users), task.k), -1, dtype=np.int64)
        rows = np.searchsorted(ctx.users, reco[Columns.User].to_numpy())
        ids[rows, reco[Columns.Rank].to_numpy() - 1] = reco[Columns.Item].to_numpy()
    return Ranked(ids, ids >= 0, fit.seconds, rec.seconds)


# ------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelSpec:
    """A supported model: its default params (the only keys a task may override) and its adapter."""

    defaults: dict[str, Any]
    run: Callable[[Context], Ranked]


MODELS: dict[tuple[str, str], ModelSpec] = {
    ("implicit", "als"): ModelSpec(
        {"factors": 64, "iterations": 15, "regularization": 0.05, "alpha": 1.0}, _run_implicit_als
    ),
    ("implicit", "bpr"): ModelSpec(
        {"factors": 64, "iterations": 100, "learning_rate": 0.01, "regularization": 0.01}, _run_implicit_bpr
    ),
    ("cornac", "bpr"): ModelSpec(
        {"k": 64, "max_iter": 100, "learning_rate": 0.01, "lambda_reg": 0.01, "use_bias": True}, _run_cornac
    ),
    # cornac's documented LightGCN defaults.
    ("cornac", "lightgcn"): ModelSpec(
        {
            "emb_size": 64,
            "num_epochs": 1000,
            "learning_rate": 0.001,
            "batch_size": 1024,
            "num_layers": 3,
            "lambda_reg": 1e-4,
        },
        _run_cornac,
    ),
    ("rectools", "ease"): ModelSpec({"regularization": 500.0, "max_items": 30000}, _run_rectools),
    ("rectools", "popular"): ModelSpec({"popularity": "n_users"}, _run_rectools),
    # RecTools' documented SASRec defaults, except n_factors, session_max_len, epochs, deterministic.
    ("rectools", "sasrec"): ModelSpec(
        {
            "n_blocks": 2,
            "n_heads": 4,
            "n_factors": 64,
            "dropout_rate": 0.2,
            "session_max_len": 50,
            "train_min_user_interactions": 2,
            "loss": "softmax",
            "lr": 0.001,
            "batch_size": 128,
            "epochs": 5,
            "deterministic": True,
        },
        _run_rectools,
    ),
}


# ---------------------------------------------------------------------------------------------- input


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise PeerError(message)


def _int_field(raw: dict[str, Any], name: str, minimum: int) -> int:
    value = raw.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PeerError(f"task.json: {name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def read_task(path: Path) -> tuple[Task, ModelSpec]:
    """Read and validate ``task.json`` (before any heavy import, so mistakes fail fast).

    Args:
        path: the ``task.json`` file.

    Returns:
        The task and the spec of its model.

    Raises:
        PeerError: when the file is missing or malformed, or names an unknown library, model or param.
    """
    _require(path.is_file(), f"missing task file: {path}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PeerError(f"task.json is not valid JSON: {exc}") from None
    _require(isinstance(raw, dict), "task.json must hold an object")
    library, model = raw.get("library"), raw.get("model")
    _require(library in LIBRARIES, f"unknown library {library!r}; expected one of {', '.join(LIBRARIES)}")
    known = sorted(m for lib, m in MODELS if lib == library)
    _require(
        (library, model) in MODELS, f"unknown {library} model {model!r}; expected one of {', '.join(known)}"
    )
    spec = MODELS[(library, model)]
    params = raw.get("params") or {}
    _require(isinstance(params, dict), "task.json: 'params' must be an object")
    unknown = sorted(set(params) - set(spec.defaults))
    _require(
        not unknown,
        f"unknown param(s) {', '.join(unknown)} for {library} {model}; allowed: {', '.join(sorted(spec.defaults))}",
    )
    _require(isinstance(raw.get("exclude_seen"), bool), "task.json: 'exclude_seen' must be true or false")
    task = Task(
        library=library,
        model=model,
        params={**spec.defaults, **params},
        k=_int_field(raw, "k", 1),
        exclude_seen=raw["exclude_seen"],
        seed=_int_field(raw, "seed", 0),
        threads=_int_field(raw, "threads", 1),
    )
    return task, spec


# Libraries whose parallelism is their own OpenMP loops (sized by ``threads``) with BLAS called inside them,
# so a threaded BLAS would nest thread pools: implicit's docs require OPENBLAS_NUM_THREADS=1 (it warns
# otherwise); cornac's ``score`` calls BLAS sdot once per item inside an OpenMP ``prange``.
SINGLE_THREADED_BLAS = ("implicit", "cornac")


def limit_threads(task: Task) -> None:
    """Pin BLAS/OpenMP thread pools through the environment; must run before numpy is imported.

    Args:
        task: the task; ``threads`` sizes OpenMP and (except for :data:`SINGLE_THREADED_BLAS`) BLAS.
    """
    blas = "1" if task.library in SINGLE_THREADED_BLAS else str(task.threads)
    os.environ["OMP_NUM_THREADS"] = str(task.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = blas
    os.environ["MKL_NUM_THREADS"] = blas


def _load_array(archive: Any, name: str, source: Path) -> np.ndarray:
    _require(name in archive.files, f"{source}: missing array {name!r}")
    return archive[name]


def read_train(path: Path) -> TrainData:
    """Load and validate ``train.npz``.

    Args:
        path: the ``train.npz`` file.

    Returns:
        The interactions as int64 codes, float32 weights and the catalogue sizes.

    Raises:
        PeerError: on a missing file or array, wrong shapes or dtypes, or out-of-range values.
    """
    import numpy as np

    _require(path.is_file(), f"missing input file: {path}")
    with np.load(path, allow_pickle=False) as archive:
        columns = {name: _load_array(archive, name, path) for name in ("user", "item", "timestamp", "weight")}
        sizes = {name: _load_array(archive, name, path) for name in ("n_users", "n_items")}
    for name, size in sizes.items():
        _require(
            size.size == 1 and np.issubdtype(size.dtype, np.integer),
            f"{path}: {name!r} must be an integer scalar",
        )
    n_users, n_items = int(sizes["n_users"]), int(sizes["n_items"])
    n_rows = columns["user"].shape
    for name, column in columns.items():
        _require(column.ndim == 1, f"{path}: {name!r} must be 1-D, got shape {column.shape}")
        _require(column.shape == n_rows, f"{path}: {name!r} has shape {column.shape}, 'user' has {n_rows}")
        numeric_ok = np.issubdtype(column.dtype, np.integer) or (
            name == "weight" and np.issubdtype(column.dtype, np.floating)
        )
        _require(numeric_ok, f"{path}: {name!r} has unsupported dtype {column.dtype}")
    _require(n_rows[0] > 0, f"{path}: no interaction rows")
    user, item = columns["user"].astype(np.int64), columns["item"].astype(np.int64)
    weight = columns["weight"].astype(np.float32)
    _require(0 <= user.min() and user.max() < n_users, f"{path}: 'user' codes outside 0..{n_users - 1}")
    _require(0 <= item.min() and item.max() < n_items, f"{path}: 'item' codes outside 0..{n_items - 1}")
    _require(bool(np.all(np.isfinite(weight) & (weight > 0))), f"{path}: 'weight' must be finite and > 0")
    return TrainData(user, item, columns["timestamp"].astype(np.int64), weight, n_users, n_items)


def read_query(path: Path, train: TrainData) -> np.ndarray:
    """Load and validate ``query_users.npy``.

    Args:
        path: the ``query_users.npy`` file.
        train: the validated train data (query users must appear in it).

    Returns:
        The query user codes as int64, in the given order.

    Raises:
        PeerError: on a missing file, wrong shape or dtype, or users absent from train.
    """
    import numpy as np

    _require(path.is_file(), f"missing input file: {path}")
    query = np.load(path, allow_pickle=False)
    _require(query.ndim == 1, f"{path}: must be 1-D, got shape {query.shape}")
    _require(np.issubdtype(query.dtype, np.integer), f"{path}: must hold integers, got dtype {query.dtype}")
    query = query.astype(np.int64)
    missing = query[~np.isin(query, train.user)]
    _require(
        missing.size == 0,
        f"{path}: {missing.size} query users are not in train (e.g. {missing[:5].tolist()})",
    )
    return query


# --------------------------------------------------------------------------------------------- output


def _library_version(library: str) -> str:
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def finalize(ranked: Ranked, ctx: Context, query: np.ndarray) -> np.ndarray:
    """Turn an adapter's candidates into the ``(n_query, k)`` output, enforcing the seen-item rule.

    Args:
        ranked: the adapter's candidates for the unique query users.
        ctx: the run context (its ``notes`` get a line if the library returned seen items anyway).
        query: the query users in the caller's order (may repeat).

    Returns:
        int64 item codes, rank order, left-aligned, padded with -1.
    """
    import numpy as np

    train, task = ctx.train, ctx.task
    ids, valid = ranked.ids, ranked.valid & (ranked.ids >= 0) & (ranked.ids < train.n_items)
    if task.exclude_seen and ids.size:
        seen_keys = np.unique(train.user * train.n_items + train.item)
        seen = np.isin(ctx.users[:, None] * train.n_items + ids, seen_keys) & valid
        if seen.any():
            ctx.notes.append(f"library returned {int(seen.sum())} seen items despite filtering; dropped")
            valid &= ~seen
    # Stable sort on "invalid" moves the kept entries left without changing their order.
    order = np.argsort(~valid, axis=1, kind="stable")
    packed = np.where(np.take_along_axis(valid, order, 1), np.take_along_axis(ids, order, 1), -1)
    recs = np.full((len(ctx.users), task.k), -1, dtype=np.int64)
    width = min(task.k, packed.shape[1])
    recs[:, :width] = packed[:, :width]
    empty = int((recs[:, 0] < 0).sum())
    if empty:
        ctx.notes.append(f"{empty} of {len(ctx.users)} query users got no recommendations")
    return recs[np.searchsorted(ctx.users, query)]


def _replace_atomically(target: Path, write: Callable[[Any], None], mode: str) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with open(tmp, mode) as handle:
        write(handle)
    os.replace(tmp, target)


def write_outputs(out_dir: Path, recs: np.ndarray, stats: dict[str, Any]) -> None:
    """Write ``recs.npy`` then ``stats.json``, each via a temporary name and an atomic rename.

    Args:
        out_dir: output directory (created if missing).
        recs: the ``(n_query, k)`` recommendations.
        stats: the run statistics.
    """
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    _replace_atomically(out_dir / "recs.npy", lambda f: np.save(f, recs), "wb")
    _replace_atomically(out_dir / "stats.json", lambda f: f.write(json.dumps(stats, indent=2) + "\n"), "w")


# ----------------------------------------------------------------------------------------------- main


def run(input_dir: Path, output_dir: Path) -> dict[str, Any]:
    """Read the inputs, fit and recommend with the requested peer model, write the outputs.

    Args:
        input_dir: directory with ``train.npz``, ``query_users.npy`` and ``task.json``.
        output_dir: directory to write ``recs.npy`` and ``stats.json`` to.

    Returns:
        The stats written to ``stats.json``.

    Raises:
        PeerError: on bad input, an unknown library/model, or a library missing from this env.
    """
    _require(input_dir.is_dir(), f"input directory not found: {input_dir}")
    task, spec = read_task(input_dir / "task.json")
    limit_threads(task)
    import numpy as np

    random.seed(task.seed)
    np.random.seed(task.seed)
    train = read_train(input_dir / "train.npz")
    query = read_query(input_dir / "query_users.npy", train)
    try:
        __import__(task.library)
    except ImportError as exc:
        raise PeerError(f"library {task.library!r} cannot be imported by {sys.executable}: {exc}") from None
    ctx = Context(train=train, users=np.unique(query), task=task)
    _log(
        f"{task.library} {task.model}: {len(train.user)} rows, {train.n_users} users, {train.n_items} items, "
        f"{len(query)} query users, k={task.k}, exclude_seen={task.exclude_seen}, threads={task.threads}"
    )
    ranked = spec.run(ctx)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    recs = finalize(ranked, ctx, query)
    stats = {
        "library": task.library,
        "library_version": _library_version(task.library),
        "model": task.model,
        "params": task.params,
        "k": task.k,
        "exclude_seen": task.exclude_seen,
        "seed": task.seed,
        "threads": task.threads,
        "fit_seconds": round(ranked.fit_seconds, 4),
        "recommend_seconds": round(ranked.recommend_seconds, 4),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "python": platform.python_version(),
        "numpy_version": np.__version__,
        "notes": ctx.notes,
    }
    write_outputs(output_dir, recs, stats)
    return stats


def main(argv: list[str] | None = None) -> int:
    """CLI entry point.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on bad input (with one line on stderr).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--input", type=Path, required=True, help="directory with train.npz, query_users.npy, task.json"
    )
    parser.add_argument("--output", type=Path, required=True, help="directory for recs.npy and stats.json")
    args = parser.parse_args(argv)
    try:
        stats = run(args.input, args.output)
    except PeerError as exc:
        print(f"peer_runner: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _log(
        f"done: fit {stats['fit_seconds']:.2f} s, recommend {stats['recommend_seconds']:.2f} s, "
        f"peak RSS {stats['peak_rss_mb']:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
