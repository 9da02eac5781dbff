"""`recsys train` under torchrun (`make train NPROC=2`): rank 0 runs the pipeline, rank 1 joins every
two-tower run, and both exit when the pipeline ends, whether it wrote a bundle or failed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys.bundle import resolve_bundle
from recsys.config import PROJECT_ROOT
from tests.conftest import shop_pipeline_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _torchrun_train(config_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "training.cli", "train", "--config", str(config_path)]
    # A follower that missed its release would hang here: the timeout turns that into a failure.
    return subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=600)


def _write(config: object, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))  # type: ignore[attr-defined]
    return path


def test_two_ranks_train_a_bundle(tmp_path: Path) -> None:
    config = shop_pipeline_config(tmp_path)
    proc = _torchrun_train(_write(config, tmp_path / "shop.yaml"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stderr
    # The early-stopping run and the refit of the label fold, then the serving fold's refit: each over both ranks.
    shared = [int(n) for n in re.findall(r"two-tower run (\d+) shared with 1 other rank", log)]
    assert shared == [1, 2, 3], log[-4000:]
    assert "(x2 ranks)" in log
    assert resolve_bundle(config.work_path / "bundles").is_dir()
    assert not (config.work_path / "rank_jobs").exists()  # every job folder removed with the run


def test_a_failing_pipeline_releases_the_other_rank(tmp_path: Path) -> None:
    # More label users than the shop has: the reranker stage fails after the two-tower runs.
    config = shop_pipeline_config(tmp_path, reranker={"min_label_users": 10_000})
    proc = _torchrun_train(_write(config, tmp_path / "shop.yaml"))
    assert proc.returncode != 0
    assert "min_label_users=10000" in proc.stderr, proc.stderr[-4000:]
    assert "two-tower run 1 shared" in proc.stderr
    assert not (config.work_path / "rank_jobs").exists()
