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


def test_offline_ab_reads_a_training_runs_lists_and_agrees_with_its_table(small_bundle: Path, tmp_path: Path) -> None:
    """Variants from the bundle's evaluated lists give exactly the numbers of the run's own table."""
    import polars as pl

    from recsys.bundle import load_bundle

    executed, html = run_notebook(
        NOTEBOOK_DIR / "offline_ab.py",
        tmp_path / "out",
        {"config_path": "configs/hm_small.yaml", "variant_a": "bundle:als", "variant_b": f"bundle:reranked@{small_bundle}", "n_examples": 1},
    )
    table = pl.read_parquet(load_bundle(small_bundle).file("evaluation.parquet"))
    maps = dict(zip(table["model"], table["map@12"]))
    text = html.read_text()
    assert f"{maps['als']:.4f}" in text and f"{maps['reranked']:.4f}" in text
    better, worse = ("reranked", "als") if maps["reranked"] > maps["als"] else ("als", "reranked")
    assert f"{better}" in text and "Verdict" in text


def test_content_quality_executes_on_a_bundle(small_bundle: Path, tmp_path: Path) -> None:
    executed, html = run_notebook(
        NOTEBOOK_DIR / "content_quality.py", tmp_path / "out", {"config_path": "configs/hm_small.yaml", "queries": ["red dress"], "n_similar_examples": 1}
    )
    text = html.read_text()
    assert text.count("data:image/png;base64") >= 4  # recall curve, confusion matrix, query grid, similar-item grid
    assert "zero-shot accuracy over" in text and "text→image Recall@10" in text
