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
