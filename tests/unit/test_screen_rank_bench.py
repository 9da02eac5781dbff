"""bench/screen_rank_bench.py: the screened search timed per rank on a saved tower, same lists at every rank.

Protects: the bench reads a saved tower's vectors and its window's bought items (the warm set),
reports time and cold items rescored per rank, checks every rank against the highest, and stops
lowering the rank once the screen lets more than ``SCREEN_MAX_HITS`` through (at 100x a rank of
32 grew the range search's hit lists until the kernel killed the process).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import screen_rank_bench  # noqa: E402


def saved_tower(folder: Path, n_items: int = 400, n_users: int = 50, d: int = 12) -> Path:
    """A tower folder whose never-bought items lie near a 3-dimensional subspace (as metadata-only vectors do)."""
    rng = np.random.default_rng(0)
    warm = rng.standard_normal((40, d))
    cold = rng.standard_normal((n_items - 40, 3)) @ rng.standard_normal((3, d)) * 0.3 + 0.01 * rng.standard_normal((n_items - 40, d))
    folder.mkdir()
    np.savez(
        folder / "arrays.npz",
        item_vectors=np.vstack([warm, cold]).astype(np.float32),
        user_vectors=rng.standard_normal((n_users, d)).astype(np.float32),
        seen_indices=rng.integers(0, 40, size=300).astype(np.int32),
    )
    return folder


def test_every_rank_gives_the_exact_lists(tmp_path: Path) -> None:
    record = screen_rank_bench.run(saved_tower(tmp_path / "tower"), ranks=[3, 8], users=50, k=10, batch=16, seed=0)
    assert record["warm_items"] <= 40 and record["items"] == 400 and record["customers"] == 50
    assert [r["rank"] for r in record["ranks"]] == [8, 3], "highest rank first: it is the reference"
    for entry in record["ranks"]:
        assert entry["same_lists_as_highest_rank"] and entry["ms_per_customer"] > 0 and entry["cold_rescored_per_customer"] >= 0


def test_lower_ranks_are_skipped_once_the_screen_lets_too_many_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(screen_rank_bench, "SCREEN_MAX_HITS", -1)  # any rescoring counts as too many
    record = screen_rank_bench.run(saved_tower(tmp_path / "tower"), ranks=[2, 4, 8], users=20, k=10, batch=16, seed=0)
    assert "skipped" not in record["ranks"][0]
    assert all("higher rank already rescored" in r["skipped"] for r in record["ranks"][1:])
