"""Protects resumable training: finished stages are reused, unfinished ones never look finished."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import ProjectConfig
from training.stages import StageRunner


def test_reuse_and_recompute(shop: tuple[Path, ProjectConfig]) -> None:
    _, config = shop
    calls: list[int] = []

    def stage(out: Path) -> dict[str, float]:
        calls.append(1)
        (out / "result.txt").write_text("42")
        return {"value": 42.0}

    first = StageRunner(config).run("demo", {"a": 1}, stage)
    assert not first.reused and (first.path / "result.txt").read_text() == "42"
    again = StageRunner(config).run("demo", {"a": 1}, stage)
    assert again.reused and again.metrics == {"value": 42.0} and len(calls) == 1
    changed = StageRunner(config).run("demo", {"a": 2}, stage)
    assert not changed.reused and changed.path != first.path and len(calls) == 2
    forced = StageRunner(config, force={"demo"}).run("demo", {"a": 1}, stage)
    assert not forced.reused and len(calls) == 3


def test_failed_stage_is_not_marked_done(shop: tuple[Path, ProjectConfig]) -> None:
    _, config = shop

    def broken(out: Path) -> dict[str, float]:
        (out / "partial.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        StageRunner(config).run("demo", {"a": 1}, broken)
    assert not any((config.work_path / "stages" / "demo").iterdir())
    ok = StageRunner(config).run("demo", {"a": 1}, lambda out: {"x": 1.0})
    assert not ok.reused


def test_a_stage_checkpoint_outlives_a_failed_run_and_goes_with_success(shop: tuple[Path, ProjectConfig]) -> None:
    """A long stage keeps partial work in its checkpoint folder across a killed run (a new runner
    cleans temp outputs, not checkpoints); success or a forced run removes it."""
    _, config = shop
    checkpoint = StageRunner(config).checkpoint_dir("demo", {"a": 1})
    assert checkpoint != StageRunner(config).checkpoint_dir("demo", {"a": 2})

    def half_done(out: Path) -> dict[str, float]:
        checkpoint.mkdir(parents=True, exist_ok=True)
        (checkpoint / "batch-1").write_text("done")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        StageRunner(config).run("demo", {"a": 1}, half_done)
    seen: list[bool] = []
    runner = StageRunner(config)
    runner.run("demo", {"a": 1}, lambda out: seen.append((checkpoint / "batch-1").is_file()) or {"x": 1.0})
    assert seen == [True] and not checkpoint.exists()
    checkpoint.mkdir()
    StageRunner(config, force={"demo"}).run("demo", {"a": 1}, lambda out: seen.append(checkpoint.exists()) or {"x": 1.0})
    assert seen == [True, False]


def test_tracking_store_follows_each_config(shop: tuple[Path, ProjectConfig], tmp_path: Path) -> None:
    """Two configs in one process log to their own stores (MLflow's exported URI must not leak)."""
    import os

    from tests.conftest import shop_config
    from training.tracking import start_run

    root, first = shop
    second = shop_config(root, tmp_path / "other_work")
    for config in (first, second):
        with start_run(config, "probe"):
            pass
        assert (config.work_path / "mlflow" / "mlflow.db").is_file()
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_run_of_a_killed_process_is_closed_by_the_next_run(shop: tuple[Path, ProjectConfig]) -> None:
    """A SIGKILLed `recsys train` cannot close its MLflow run; the next top-level run marks it KILLED."""
    import signal
    import subprocess
    import sys
    import textwrap

    import mlflow

    from training.tracking import configure, start_run

    root, config = shop
    child = textwrap.dedent(
        f"""
        import sys, time
        from tests.conftest import shop_config
        from training.tracking import start_run
        config = shop_config({str(root)!r}, {str(config.work_path)!r})
        with start_run(config, "doomed") as run:
            print(run.info.run_id, flush=True)
            time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert proc.stdout is not None
        doomed = proc.stdout.readline().strip()
        assert doomed, "the child process did not open a run"
        with start_run(config, "alive-check"):  # the child still runs: its run must stay RUNNING
            pass
        configure(config)
        assert mlflow.get_run(doomed).info.status == "RUNNING"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    with start_run(config, "next"):
        pass
    killed = mlflow.get_run(doomed)
    assert killed.info.status == "KILLED"
    assert "ended without closing" in killed.data.tags["recsys.orphaned"]
