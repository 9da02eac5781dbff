"""Keeps the notebooks from rotting: each executes headless on the small H&M configuration; a failing
cell fails the test. The HTML report must hold the plots and the computed verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.notebooks import NOTEBOOK_DIR, run_notebook

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_offline_ab_executes_and_reports(hm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_DATA_DIR", str(hm_dir))
    monkeypatch.setenv("RECSYS_WORK_DIR", str(tmp_path / "work"))
    executed, html = run_notebook(
        NOTEBOOK_DIR / "offline_ab.py",
        tmp_path / "out",
        {"config_path": "configs/hm_small.yaml", "variant_a": "model:popularity", "variant_b": "model:history", "n_examples": 1},
    )
    text = html.read_text()
    assert "history is better than popularity on map@12" in text
    assert text.count("data:image/png;base64") >= 4  # differences, recall curves, popularity, an example grid
    assert (tmp_path / "work" / "mlflow" / "mlflow.db").is_file()  # results logged back as an evaluation run
