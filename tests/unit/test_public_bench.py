"""`make benchmark` end to end on the synthetic shop: the real pipeline run, a real peer, one evaluator.

The peer is implicit's ALS through ``bench/peers/peer_runner.py`` in the project's own interpreter
(implicit is a project dependency), so the exchange of integer arrays, the tuning budget, the
scoring, the pooled summary, the bootstrap comparison and the report are all exercised without
building the peers' environments.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import shop_pipeline_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import public_bench  # noqa: E402
import public_report  # noqa: E402


@pytest.fixture(scope="module")
def shop_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One benchmark of the shop: the pipeline and implicit ALS with a two-point grid."""
    root = tmp_path_factory.mktemp("bench_shop")
    config = shop_pipeline_config(root)
    path = root / "shop.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    spec = public_bench.DatasetSpec(config=str(path), headline="map@5", windows=["last"])
    peer = public_bench.PeerSpec(library="implicit", model="als", grid=[{"factors": 8}, {"factors": 16}, {"factors": 4}], params={"iterations": 5})
    bench = public_bench.BenchSpec(tuning=public_bench.TuningSpec(budget=2), datasets={"shop": spec}, peers=[peer])
    result = public_bench.bench_dataset("shop", spec, bench, [peer], {"implicit": Path(sys.executable)})
    return result, root


def test_every_model_is_scored_by_the_same_evaluator(shop_result: tuple[dict, Path]) -> None:
    """The pipeline's models and the peer appear with every metric, in [0, 1], on the same users."""
    result, _ = shop_result
    models = result["models"]
    assert {"pipeline", "candidates", "two_tower", "als", "history", "popularity", "peer:implicit:als"} <= set(models)
    users = {row["users"] for row in models.values()}
    assert len(users) == 1 and users.pop() > 0
    for row in models.values():
        for metric in ("map@5", "ndcg@5", "recall@5", "recall@10", "coverage@5"):
            assert 0.0 <= row[metric] <= 1.0


def test_costs_are_measured(shop_result: tuple[dict, Path]) -> None:
    """Fit time, recommend time per 1,000 users and peak memory come from the runs, not defaults."""
    models = shop_result[0]["models"]
    for name in ("pipeline", "peer:implicit:als"):
        assert models[name]["fit_seconds"] > 0
        assert models[name]["recommend_seconds_per_1k_users"] > 0
        assert models[name]["peak_rss_mb"] > 10


def test_tuning_spends_exactly_the_budget(shop_result: tuple[dict, Path]) -> None:
    """Two of the three grid points are tried (budget 2) and the best of them is the one refitted."""
    tuning = shop_result[0]["tuning"]["models"]["peer:implicit:als"]
    assert [t["params"]["factors"] for t in tuning["trials"]] == [8, 16]
    best = max(tuning["trials"], key=lambda t: t["map@5"])
    assert tuning["chosen"] == best["params"]


def test_comparison_is_a_paired_interval(shop_result: tuple[dict, Path]) -> None:
    """The pipeline is compared with the best peer: the interval holds the observed difference."""
    result = shop_result[0]
    assert result["best_peer"] == "peer:implicit:als"
    pooled = result["comparison"]["peer:implicit:als"]["pooled"]
    assert pooled["low"] <= pooled["diff"] <= pooled["high"]
    assert pooled["pipeline"] == pytest.approx(result["models"]["pipeline"]["map@5"])


def test_report_writes_table_plot_and_readme_section(shop_result: tuple[dict, Path], tmp_path: Path) -> None:
    """The report lists every model, draws the plot, and replaces only the README's marked section."""
    result, _ = shop_result
    details = {"datasets": {"shop": result}, "machine": {"cpus": 2, "platform": "test"}, "date": "today", "env_setup_seconds": 1.0}
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{public_report.START}\nold table\n{public_report.END}\nafter\n")
    text = public_report.write_report(json.loads(json.dumps(details)), tmp_path, readme)
    assert "peer:implicit:als" in text and "**pipeline**" in text
    assert (tmp_path / public_report.PLOT).stat().st_size > 1000
    content = readme.read_text()
    assert content.startswith("before\n") and content.endswith("after\n") and "old table" not in content


def test_rerun_reuses_peer_outputs(shop_result: tuple[dict, Path]) -> None:
    """Peer outputs are cached by their inputs: the cache holds one folder per distinct fit."""
    _, root = shop_result
    fits = list((root / "work" / "benchmark" / "peers").iterdir())
    assert len(fits) == 3  # two tuning points + one refit on the test window's history
