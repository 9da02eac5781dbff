"""The `recsys` CLI fails clearly on bad input without needing the H&M data: a data set with a
missing column is named in one readable line, an unknown model is rejected before anything loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from recsys.config import PROJECT_ROOT
from tests.conftest import make_shop


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training.cli", *args],
        check=False,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_cli_reports_bad_data_clearly(tmp_path: Path) -> None:
    root = make_shop(tmp_path / "shop")
    pl.read_parquet(root / "interactions.parquet").drop("item").write_parquet(root / "interactions.parquet")
    config = tmp_path / "shop.yaml"
    config.write_text(
        f"""
name: shop
work_dir: {tmp_path / "work"}
data:
  data_dir: {root}
  interactions: {{path: interactions.parquet, columns: {{user_id: user, item_id: item, timestamp: date}}}}
  items: {{path: items.parquet, columns: {{item_id: item_id}}}}
"""
    )
    proc = run_cli("validate", "--config", str(config))
    assert proc.returncode == 2
    assert (
        "interactions.parquet" in proc.stderr
        and "item_id='item'" in proc.stderr
        and "missing column" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_cli_rejects_unknown_model_before_loading(tmp_path: Path) -> None:
    # Point the data at an empty directory: the model list is checked before any data is read.
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(tmp_path / "no-data"),
        "RECSYS_WORK_DIR": str(tmp_path / "work"),
    }
    proc = run_cli("evaluate", "--models", "popularity,nonsense", env=env)
    assert proc.returncode == 2 and "unknown model 'nonsense'" in proc.stderr
