"""Checks the evaluation harness itself: `recsys evaluate` must reproduce the reference baselines of
../shared/data/hm/README.md (last-day protocol, 2,036 warm users) within noise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.config import PROJECT_ROOT

pytestmark = pytest.mark.integration

# (MAP@12, Recall@12, NDCG@12, Recall@100) from the data set's README.
REFERENCE = {
    "popularity": (0.0099, 0.0315, 0.0171, 0.1328),
    "history": (0.1521, 0.2339, 0.1849, 0.3145),
    "als": (0.1189, 0.2139, 0.1534, 0.3126),
    "itemknn": (0.1490, 0.2440, 0.1838, 0.3122),
}
# With 2,036 users a MAP@12 difference of ~0.01 is noise; ALS also varies with its random init.
TOLERANCE = (0.006, 0.012, 0.008, 0.015)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=600)


def test_evaluate_reproduces_reference_baselines(hm_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "baselines.json"
    env = {**__import__("os").environ, "RECSYS_DATA_DIR": str(hm_dir), "RECSYS_WORK_DIR": str(tmp_path / "work")}
    proc = run_cli("evaluate", "--config", "configs/hm.yaml", "--models", ",".join(REFERENCE), "--json", str(out), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test users: 2,036" in proc.stdout
    result = json.loads(out.read_text())
    assert result["users"] == 2036
    table = {row["model"]: row for row in result["table"]}
    for model, ref in REFERENCE.items():
        got = (table[model]["map@12"], table[model]["recall@12"], table[model]["ndcg@12"], table[model]["recall@100"])
        for name, g, r, tol in zip(("map@12", "recall@12", "ndcg@12", "recall@100"), got, ref, TOLERANCE):
            assert abs(g - r) <= tol, f"{model} {name}: got {g:.4f}, reference {r:.4f} (tolerance {tol})"
    # per-user values are kept so variants can be compared with paired bootstrap intervals
    assert len(result["per_user"]["history"]["map@12"]) == 2036


def test_validate_full_hm(hm_dir: Path, tmp_path: Path) -> None:
    env = {**__import__("os").environ, "RECSYS_DATA_DIR": str(hm_dir)}
    out = tmp_path / "report.json"
    proc = run_cli("validate", "--json", str(out), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["counts"]["interactions_loaded"] == 240_311
    assert report["counts"]["items_with_image"] == 11_800
