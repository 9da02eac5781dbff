"""Scale-out path: the same two-tower training under ``torchrun --nproc_per_node=2`` (DMP over gloo).

Both runs train on the synthetic shop for a fixed number of epochs: one process (a one-rank
group, all tables on it) and two processes (item table sharded row-wise across the ranks, the
others table-wise, each rank half of every global batch). They must both learn, and end at a
loss and validation recall within tolerance of each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys.config import PROJECT_ROOT
from recsys.data import load_dataset
from tests.conftest import make_shop, shop_config, write_standin_vectors

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TWO_TOWER = {
    "id_dim": 16, "category_dim": 8, "hidden": [32], "output_dim": 16, "batch_size": 128,
    "max_epochs": 6, "patience": 99, "validation_k": 10, "threads": 1, "learning_rate": 0.01,
}


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_two_process_run_matches_single_process(tmp_path: Path) -> None:
    root = make_shop(tmp_path / "shop", n_users=400, n_items=60, days=8)
    config = shop_config(root, tmp_path / "work", retrieval={"two_tower": TWO_TOWER})
    write_standin_vectors(config, load_dataset(config.data).items, 16)
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    module = ["-m", "recsys.two_tower.distributed", "--config", str(path)]

    single = run([sys.executable, *module, "--out", str(tmp_path / "single")], env)
    assert single.returncode == 0, single.stderr[-4000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double = run([*torchrun, *module, "--out", str(tmp_path / "double")], env)
    assert double.returncode == 0, double.stderr[-4000:]

    one = json.loads((tmp_path / "single" / "result.json").read_text())
    two = json.loads((tmp_path / "double" / "result.json").read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert one["epochs"] == two["epochs"] == TWO_TOWER["max_epochs"]
    for result in (one, two):
        losses = [h["loss"] for h in result["history"]]
        assert losses[-1] < 0.8 * losses[0], f"world {result['world_size']} did not learn: {losses}"
    # Each rank sees half of every batch (fewer in-batch negatives): close, not identical.
    final_one, final_two = one["history"][-1]["loss"], two["history"][-1]["loss"]
    assert abs(final_one - final_two) <= 0.2 * final_one, (final_one, final_two)
    assert abs(one["best_recall"] - two["best_recall"]) <= 0.08, (one["best_recall"], two["best_recall"])
    assert (tmp_path / "double" / "tower.safetensors").is_file()
