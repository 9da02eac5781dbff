"""`make bench-scale`: one rung trained for real on the synthetic shop, measured and reported.

Protects: a rung runs the real ``recsys train`` (every stage, the precomputed candidates and the
bundle) in its own fresh work dir; its record has the log's size read through the config, every
stage's seconds, wall and CPU seconds and a peak memory that includes the child process; a
failed rung is recorded with its log's tail instead of stopping the ladder; the report writes the
table, the log-log plot and only the README's scale section.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import shop_pipeline_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import scale_bench  # noqa: E402


@pytest.fixture(scope="module")
def rung(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("scale_shop")
    raw = shop_pipeline_config(root).model_dump(mode="json")
    raw["work_dir"] = "${RECSYS_WORK_DIR:-unused}"  # as the ladder's configs: each rung gets its own
    path = root / "shop.yaml"
    path.write_text(yaml.safe_dump(raw))
    (root / "work" / "scale" / "shop").mkdir(parents=True)
    (root / "work" / "scale" / "shop" / "stale.txt").write_text("from an earlier run")
    return scale_bench.run_rung("shop", scale_bench.RungSpec(config=str(path)), root / "work" / "scale", resume=False)


def test_a_rung_trains_end_to_end_and_is_measured(rung: dict) -> None:
    assert rung["returncode"] == 0, rung.get("error")
    assert rung["purchases"] > 0 and rung["customers"] > 0 and rung["items"] > 0
    assert {"content", "label_fold", "reranker", "serving_fold", "evaluate", "precompute", "bundle"} <= set(rung["stages"])
    assert all(v >= 0 for v in rung["stages"].values())
    assert rung["cpu_seconds"] > 0 and rung["wall_seconds"] >= rung["pipeline_seconds"]
    assert rung["peak_rss_mb"] > 100, "the training process's memory, not the harness's"
    peaks = rung["stage_peak_rss_mb"]
    assert set(peaks) == set(rung["stages"]) - {"bundle"}, "every computed stage has its own peak"
    assert all(0 < v <= rung["peak_rss_mb"] for v in peaks.values())
    assert rung["reused"] == [], "a fresh work dir: nothing reused"
    assert rung["machine"].startswith(f"{os.cpu_count()} cores"), "rungs run in different sessions record their own machine"
    work = Path(rung["log"]).parent
    assert not (work / "stale.txt").exists(), "the rung's work dir starts empty"
    assert (work / "bundles" / "latest").is_file()


def test_a_rung_over_its_budget_is_stopped_and_recorded_as_incomplete(tmp_path: Path) -> None:
    raw = shop_pipeline_config(tmp_path).model_dump(mode="json")
    raw["work_dir"] = "${RECSYS_WORK_DIR:-unused}"
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(raw))
    started = time.perf_counter()
    record = scale_bench.run_rung("slow", scale_bench.RungSpec(config=str(tmp_path / "shop.yaml")), tmp_path / "scale", resume=False, max_seconds=2)
    assert time.perf_counter() - started < 60, "the training was stopped, not waited for"
    assert record["complete"] is False and record["returncode"] == 0
    assert "stopped at" in scale_bench.markdown({"machine": "test", "rungs": {"slow": record}})


def test_a_stop_request_ends_the_rung_and_records_what_finished(tmp_path: Path) -> None:
    """`kill <ladder pid>` (SIGTERM) during a long rung terminates the training and keeps its record."""
    import threading

    raw = shop_pipeline_config(tmp_path).model_dump(mode="json")
    raw["work_dir"] = "${RECSYS_WORK_DIR:-unused}"
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(raw))
    scale_bench.STOP_REQUESTED.clear()
    timer = threading.Timer(2.0, scale_bench._request_stop, args=(15, None))
    timer.start()
    try:
        started = time.perf_counter()
        record = scale_bench.run_rung("stopped", scale_bench.RungSpec(config=str(tmp_path / "shop.yaml")), tmp_path / "scale", resume=False)
    finally:
        timer.cancel()
        scale_bench.STOP_REQUESTED.clear()
    assert time.perf_counter() - started < 60, "the training was stopped, not waited for"
    assert record["complete"] is False and record["returncode"] == 0
    assert isinstance(record["stages"], dict)


def test_a_resumed_rung_sums_its_parts(rung: dict) -> None:
    """A rung resumed after a part of it ran (a session ended, a stage was redone with a fix) is
    one run in two parts: finished stages are reused with the seconds and peaks they took, the
    totals add both parts, and the log and memory timeline keep the first part."""
    import shutil

    work = Path(rung["log"]).parent
    for stage in ("evaluate", "precompute"):  # as if the first part had stopped after the serving fold
        shutil.rmtree(work / "stages" / stage)
    done_first, peaks_first = scale_bench.finished_stages(work)
    first_log, first_memory = (work / "train.log").read_text(), (work / scale_bench.MEMORY_CSV).read_text().splitlines()
    raw = yaml.safe_load(Path(rung["config"]).read_text())
    second = scale_bench.run_rung("shop", scale_bench.RungSpec(config=rung["config"]), work.parent, resume=True, previous=rung)
    assert second["returncode"] == 0 and second["complete"] is True, second.get("error")
    assert raw["work_dir"].startswith("${RECSYS_WORK_DIR")
    assert second["parts"] == 2 and len(json.loads((work / scale_bench.PARTS_JSON).read_text())) == 2
    assert all("commit" in part for part in json.loads((work / scale_bench.PARTS_JSON).read_text())), "each part names the code it ran"
    assert second["wall_seconds"] > rung["wall_seconds"] and second["cpu_seconds"] > rung["cpu_seconds"]
    assert second["peak_rss_mb"] >= rung["peak_rss_mb"]
    assert set(second["reused"]) == set(done_first) and {"evaluate", "precompute"}.isdisjoint(done_first)
    assert all(second["stages"][s] == done_first[s] for s in done_first), "reused with the seconds they took then"
    assert all(second["stage_peak_rss_mb"][s] == peaks_first[s] for s in peaks_first), "and the peaks they had then"
    log = (work / "train.log").read_text()
    assert log.startswith(first_log) and "resumed" in log
    assert (work / scale_bench.MEMORY_CSV).read_text().splitlines()[: len(first_memory)] == first_memory
    assert "(2 parts)" in scale_bench.markdown({"machine": "test", "rungs": {"shop": second}})


def test_a_config_that_ignores_the_rung_work_dir_is_refused(tmp_path: Path) -> None:
    raw = shop_pipeline_config(tmp_path).model_dump(mode="json")  # work_dir fixed: a rung would reuse it
    (tmp_path / "fixed.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="RECSYS_WORK_DIR"):
        scale_bench.run_rung("fixed", scale_bench.RungSpec(config=str(tmp_path / "fixed.yaml")), tmp_path / "scale", resume=False)


def test_a_failed_rung_is_recorded_not_raised(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "work_dir": "${RECSYS_WORK_DIR:-w}", "data": {"data_dir": str(tmp_path / "nothing"),
                                   "interactions": {"path": "log.csv"}, "items": {"path": "items.csv"}}}))
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "log.csv").write_text("user_id,item_id,timestamp\nu,i,2020-01-01\n")
    (tmp_path / "nothing" / "items.csv").write_text("item_id\ni\n")
    record = scale_bench.run_rung("bad", scale_bench.RungSpec(config=str(bad)), tmp_path / "scale", resume=False)
    assert record["returncode"] != 0 and record["error"]
    # A failed training (bad data here; the kernel's OOM killer at 100x) is not a complete rung,
    # and what it finished before failing is still listed (nothing, here).
    assert record["complete"] is False and record["stages"] == {}


def test_report_writes_the_table_plot_and_only_its_readme_section(rung: dict, tmp_path: Path) -> None:
    bigger = {**rung, "rung": "shop_x10", "purchases": rung["purchases"] * 10, "wall_seconds": rung["wall_seconds"] * 4,
              "stages": {k: v * 4 for k, v in rung["stages"].items()}}
    results = {"machine": "test", "rungs": {"shop": rung, "shop_x10": bigger}}
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{scale_bench.START}\nSTALE-TABLE\n{scale_bench.END}\noutro\n")
    text = scale_bench.write_report(results, tmp_path, readme)
    assert "| shop | " in text and "| shop_x10 | " in text and "precompute s" in text
    assert "within each stage" in text, "the per-stage memory table"
    assert (tmp_path / scale_bench.memory_plot("shop")).stat().st_size > 10_000, "the rung's memory timeline, stages shaded"
    spans = scale_bench.stage_spans(Path(rung["log"]))
    assert [name for name, _, _ in spans][:2] == ["content", "label_fold"] and all(end is not None for _, _, end in spans)
    content = readme.read_text()
    assert content.startswith("intro\n") and content.endswith("outro\n") and "STALE-TABLE" not in content
    assert (tmp_path / scale_bench.PLOT).stat().st_size > 10_000
    assert (tmp_path / "scale.md").read_text() == text


def test_a_rung_with_re_run_stages_shows_their_sum_and_no_cpu_total(rung: dict) -> None:
    """A record merged from stages re-run with fixes must not pass its stage sum off as one run's wall and CPU."""
    merged = {**rung, "wall_seconds": sum(rung["stages"].values()), "cpu_seconds": None, "stage_sum_of_runs": 3}
    text = scale_bench.markdown({"machine": "test", "rungs": {"shop": merged}})
    row = next(line for line in text.splitlines() if line.startswith("| shop |"))
    assert "(stage sum, 3 runs) | n/a |" in row
    assert "*stage sum*" in text


def test_a_stage_sum_rung_is_plotted_stage_by_stage_with_its_targets(rung: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its stages come from several runs, so its plot is each stage's seconds and peak, not one run's timeline."""
    merged = {**rung, "stage_sum_of_runs": 3, "stage_peak_rss_mb": {s: 1000.0 + i for i, s in enumerate(rung["stages"])}}
    spec = scale_bench.ScaleSpec(rungs={"shop": scale_bench.RungSpec(config="configs/hm.yaml", target_seconds=3600, target_memory_mb=1500)})
    readme = tmp_path / "README.md"
    readme.write_text(f"{scale_bench.START}\n{scale_bench.END}\n")
    drawn: list[tuple[str, float | None]] = []
    original = scale_bench.plot_stage_profile

    def spy(record: dict, path: Path, rung_spec: scale_bench.RungSpec | None = None) -> None:
        drawn.append((record["rung"], rung_spec.target_memory_mb if rung_spec else None))
        original(record, path, rung_spec)

    monkeypatch.setattr(scale_bench, "plot_stage_profile", spy)
    scale_bench.write_report({"machine": "test", "rungs": {"shop": merged}}, tmp_path, readme, spec)
    assert drawn == [("shop", 1500)], "a stage-sum rung gets the stage profile with its targets, not the timeline"
    assert (tmp_path / scale_bench.memory_plot("shop")).stat().st_size > 10_000
    parts = {**rung, "parts": 2, "stage_profile": True, "stage_peak_rss_mb": merged["stage_peak_rss_mb"]}
    scale_bench.write_report({"machine": "test", "rungs": {"shop": parts}}, tmp_path, readme, spec)
    assert drawn[-1] == ("shop", 1500), "a run trained outside the ladder (no sampled timeline) is drawn stage by stage too"
    with pytest.raises(ValueError):
        scale_bench.RungSpec(config="configs/hm.yaml", target_memory_mb=0)


def test_the_ladder_spec_is_valid_and_names_real_configs() -> None:
    spec = scale_bench.ScaleSpec.model_validate(yaml.safe_load((scale_bench.ROOT / "bench" / "scale_bench.yaml").read_text()))
    assert [n for n, r in spec.rungs.items() if not r.default] == ["hm_x100"]
    for r in spec.rungs.values():
        assert (scale_bench.ROOT / r.config).is_file()
    with pytest.raises(ValueError):
        scale_bench.RungSpec.model_validate({"config": "x.yaml", "synthetic_scale": -1})


def test_memory_of_forked_workers_counts_shared_pages_once() -> None:
    """The ladder sums proportional set sizes: a forked child that shares its parent's 200 MB adds
    little, where summed resident sets would count the 200 MB twice (the precompute's workers)."""
    import multiprocessing as mp
    import os

    import numpy as np

    block = np.ones(200 * 2**20 // 8)  # touched, so resident
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()

    def child() -> None:
        assert float(block[:: 512].sum()) > 0  # reads every page: shared, not copied
        ready.set()
        release.wait(30)

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    try:
        assert ready.wait(30)
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        rss = [int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page_mb for p in (os.getpid(), proc.pid)]
        pss = [scale_bench.process_memory_mb(p, page_mb) for p in (os.getpid(), proc.pid)]
        assert min(rss) > 190, "both processes have the block resident"
        assert sum(pss) < sum(rss) - 150, "PSS counts the shared block once between them"
    finally:
        release.set()
        proc.join(30)
    assert scale_bench.process_memory_mb(proc.pid, 1.0) == 0.0, "a finished process counts nothing"
