"""``bench/peers/peer_runner.py`` run as a subprocess on a tiny block-structured log (implicit ALS/BPR).

The project venv has implicit 0.7.3 and numpy, so the runner's implicit path can be exercised here
without the peer envs; RecTools and Cornac are checked by the benchmark in their own envs.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RUNNER = Path(__file__).resolve().parents[2] / "bench" / "peers" / "peer_runner.py"
N_USERS, N_ITEMS, K = 30, 40, 10
# Three taste blocks: users 0-9 buy items 0-12, users 10-19 items 13-25, users 20-29 items 26-39.
ITEM_BLOCKS = [range(13), range(13, 26), range(26, 40)]


def block_of_user(user: int) -> range:
    """The items of a user's taste block.

    Args:
        user: user code.

    Returns:
        The item codes of that user's block.
    """
    return ITEM_BLOCKS[user // 10]


def build_log() -> tuple[list[int], list[int]]:
    """A deterministic block-structured log.

    Every user buys 6 items of their block, the first one twice (a re-purchase row), plus one item
    from another block as noise.

    Returns:
        The user and item code of every row.
    """
    rng = np.random.default_rng(0)
    users: list[int] = []
    items: list[int] = []
    for user in range(N_USERS):
        own = [int(i) for i in rng.choice(list(block_of_user(user)), size=6, replace=False)]
        noise = int(rng.choice([i for i in range(N_ITEMS) if i not in block_of_user(user)]))
        bought = [*own, own[0], noise]
        users += [user] * len(bought)
        items += bought
    return users, items


def write_train(directory: Path) -> None:
    """Write the log as ``train.npz`` and all users as ``query_users.npy``.

    Args:
        directory: where to write the files.
    """
    users, items = build_log()
    n_rows = len(users)
    np.savez(
        directory / "train.npz",
        user=np.array(users, dtype=np.int64),
        item=np.array(items, dtype=np.int64),
        timestamp=1_700_000_000 + np.arange(n_rows, dtype=np.int64) * 60,
        weight=np.ones(n_rows, dtype=np.float32),
        n_users=np.int64(N_USERS),
        n_items=np.int64(N_ITEMS),
    )
    np.save(directory / "query_users.npy", np.arange(N_USERS, dtype=np.int64))


def run_runner(directory: Path, task: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Write ``task.json`` into ``directory`` and run the peer runner on it.

    Args:
        directory: input directory (outputs go to ``directory / "out"``).
        task: the task, as written to ``task.json``.

    Returns:
        The finished process (stdout/stderr captured as text).
    """
    (directory / "task.json").write_text(json.dumps(task))
    return subprocess.run(
        [sys.executable, str(RUNNER), "--input", str(directory), "--output", str(directory / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def make_task(model: str, exclude_seen: bool, k: int = K, **params: Any) -> dict[str, Any]:
    """An implicit task with fixed seed and one thread (bit-reproducible).

    Args:
        model: ``"als"`` or ``"bpr"``.
        exclude_seen: whether seen items must be filtered.
        k: list length.
        **params: model params overriding the runner's defaults.

    Returns:
        The task dict.
    """
    return {
        "library": "implicit",
        "model": model,
        "params": params,
        "k": k,
        "exclude_seen": exclude_seen,
        "seed": 0,
        "threads": 1,
    }


# BPR's default 100 iterations at lr 0.01 barely move 64 factors on 240 rows; the test only needs structure.
CASES = {
    "als_excl": make_task("als", True),
    "als_keep": make_task("als", False),
    "bpr_excl": make_task("bpr", True, factors=16, iterations=200, learning_rate=0.05),
    # k above the catalogue: only the unseen items can fill a list, the rest must be -1.
    "als_pad": make_task("als", True, k=N_ITEMS + 10),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Run every case once; each maps to (recs, stats).

    Args:
        tmp_path_factory: pytest's temporary directory factory.

    Returns:
        Case name to the runner's ``recs.npy`` and ``stats.json``.
    """
    out = {}
    for name, task in CASES.items():
        directory = tmp_path_factory.mktemp(name)
        write_train(directory)
        proc = run_runner(directory, task)
        assert proc.returncode == 0, proc.stderr
        recs = np.load(directory / "out" / "recs.npy")
        stats = json.loads((directory / "out" / "stats.json").read_text())
        out[name] = (recs, stats)
    return out


def seen_pairs() -> set[tuple[int, int]]:
    """The (user, item) pairs of the tiny train log.

    Returns:
        Every pair that occurs in train.
    """
    return set(zip(*build_log(), strict=True))


@pytest.mark.parametrize("case", list(CASES))
def test_output_shape_padding_and_stats(
    runs: dict[str, tuple[np.ndarray, dict[str, Any]]], case: str
) -> None:
    """recs.npy is int64 (n_query, k), left-aligned with -1 only as tail padding; stats.json is complete.

    Args:
        runs: outputs of every case.
        case: which case to check.
    """
    recs, stats = runs[case]
    assert recs.shape == (N_USERS, CASES[case]["k"]) and recs.dtype == np.int64
    assert ((recs >= -1) & (recs < N_ITEMS)).all()
    for row in recs:
        filled = row[row >= 0]
        assert (row[: len(filled)] == filled).all(), "padding must come after the items"
        assert len(set(filled.tolist())) == len(filled), "no item twice in one list"
    assert {"fit_seconds", "recommend_seconds", "peak_rss_mb", "library_version", "params", "notes"} <= set(
        stats
    )
    assert stats["library"] == "implicit" and stats["model"] == CASES[case]["model"]
    assert stats["params"]["factors"] == CASES[case]["params"].get("factors", 64)


@pytest.mark.parametrize("case", ["als_excl", "bpr_excl", "als_pad"])
def test_exclude_seen_never_returns_seen_items(
    runs: dict[str, tuple[np.ndarray, dict[str, Any]]], case: str
) -> None:
    """With exclude_seen=true no user gets an item they interacted with in train.

    Args:
        runs: outputs of every case.
        case: which case to check.
    """
    recs, _ = runs[case]
    seen = seen_pairs()
    returned_seen = [(u, int(i)) for u, row in enumerate(recs) for i in row if i >= 0 and (u, int(i)) in seen]
    assert not returned_seen


def test_short_lists_are_padded_with_minus_one(runs: dict[str, tuple[np.ndarray, dict[str, Any]]]) -> None:
    """With k beyond the unseen catalogue, each list holds exactly the user's unseen items, then -1.

    Args:
        runs: outputs of every case.
    """
    recs, _ = runs["als_pad"]
    seen = seen_pairs()
    for user, row in enumerate(recs):
        n_unseen = N_ITEMS - sum(1 for u, _ in seen if u == user)
        assert (row[:n_unseen] >= 0).all() and (row[n_unseen:] == -1).all()
        assert set(row[:n_unseen].tolist()) == {i for i in range(N_ITEMS) if (user, i) not in seen}


def test_keep_seen_returns_seen_items(runs: dict[str, tuple[np.ndarray, dict[str, Any]]]) -> None:
    """With exclude_seen=false (re-buying domains) seen items may be, and here are, recommended.

    Args:
        runs: outputs of every case.
    """
    recs, _ = runs["als_keep"]
    seen = seen_pairs()
    assert sum((u, int(i)) in seen for u, row in enumerate(recs) for i in row) > N_USERS


@pytest.mark.parametrize("case", list(CASES))
def test_recs_follow_the_user_block(runs: dict[str, tuple[np.ndarray, dict[str, Any]]], case: str) -> None:
    """The top recs of a user are mostly from their own block (chance: about 7 of 33 unseen items).

    Args:
        runs: outputs of every case.
        case: which case to check.
    """
    recs, _ = runs[case]
    top = 5
    share = np.mean([np.isin(recs[u, :top], list(block_of_user(u))).mean() for u in range(N_USERS)])
    assert share > 0.6, f"only {share:.2f} of the top-{top} recs are in the user's block"


def test_als_is_reproducible(tmp_path: Path, runs: dict[str, tuple[np.ndarray, dict[str, Any]]]) -> None:
    """Same input, seed and one thread give the same ALS recs.

    Args:
        tmp_path: a fresh directory.
        runs: outputs of every case (the first ALS run).
    """
    write_train(tmp_path)
    proc = run_runner(tmp_path, CASES["als_excl"])
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "recs.npy"), runs["als_excl"][0])


def _drop_train(directory: Path) -> None:
    (directory / "train.npz").unlink()


def _drop_weight(directory: Path) -> None:
    with np.load(directory / "train.npz") as archive:
        arrays = {name: archive[name] for name in archive.files if name != "weight"}
    np.savez(directory / "train.npz", **arrays)


def _matrix_query(directory: Path) -> None:
    np.save(directory / "query_users.npy", np.zeros((3, 2), dtype=np.int64))


def _unknown_query_user(directory: Path) -> None:
    np.save(directory / "query_users.npy", np.array([0, N_USERS + 5], dtype=np.int64))


BAD_INPUTS: dict[str, tuple[Callable[[Path], None] | None, dict[str, Any], str]] = {
    "missing train.npz": (_drop_train, {}, "missing input file"),
    "missing array": (_drop_weight, {}, "missing array 'weight'"),
    "2-D query": (_matrix_query, {}, "must be 1-D"),
    "query user not in train": (_unknown_query_user, {}, "not in train"),
    "unknown model": (None, {"model": "slim"}, "unknown implicit model 'slim'"),
    "unknown library": (None, {"library": "lightfm"}, "unknown library 'lightfm'"),
    "unknown param": (None, {"params": {"factor": 8}}, "unknown param(s) factor"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_nonzero_with_message(tmp_path: Path, case: str) -> None:
    """Bad input fails with status 2, one error line naming the problem, and no outputs.

    Args:
        tmp_path: a fresh directory.
        case: which bad input to build.
    """
    damage, task_changes, message = BAD_INPUTS[case]
    write_train(tmp_path)
    if damage is not None:
        damage(tmp_path)
    proc = run_runner(tmp_path, {**make_task("als", True), **task_changes})
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("peer_runner: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("cornac") is not None, reason="cornac is installed here")
def test_library_missing_from_env_is_named(tmp_path: Path) -> None:
    """A task for a library this interpreter lacks fails clearly (not via the lock folder of that name).

    Args:
        tmp_path: a fresh directory.
    """
    write_train(tmp_path)
    proc = run_runner(tmp_path, {**make_task("als", True), "library": "cornac", "model": "bpr", "params": {}})
    assert proc.returncode == 2
    assert "library 'cornac' cannot be imported" in proc.stderr
