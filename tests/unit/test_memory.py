"""Protects the per-stage memory profile: each stage's peak is its own, not the run's so far."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from recsys.config import ProjectConfig
from recsys.memory import release_free_memory
from training.memory import peak_rss_mb, reset_peak
from training.stages import StageRunner

MB = 2**20


def _resident_mb() -> float:
    return int(re.search(r"^VmRSS:\s+(\d+)", Path("/proc/self/status").read_text(), re.MULTILINE).group(1)) / 1024


def _hold(mb: int) -> float:
    """Touch ``mb`` MB (so it is resident), then free it; returns a checksum so the work is not skipped."""
    block = np.ones(mb * MB // 8)
    return float(block[:: 4096 // 8].sum())


def test_reset_peak_forgets_a_freed_allocation() -> None:
    _hold(300)
    assert peak_rss_mb() >= 300
    if not reset_peak():  # a kernel that refuses the reset: the mark stays the peak since the start
        assert peak_rss_mb() > 300
        return
    before = peak_rss_mb()
    _hold(200)
    assert peak_rss_mb() >= before + 150, "a new allocation raises the mark again"


def test_each_stage_records_its_own_peak(shop: tuple[Path, ProjectConfig]) -> None:
    _, config = shop
    runner = StageRunner(config)
    big = runner.run("big", {"a": 1}, lambda out: {"sum": _hold(400)})
    small = runner.run("small", {"a": 1}, lambda out: {"sum": _hold(10)})
    assert big.peak_rss_mb is not None and small.peak_rss_mb is not None
    if reset_peak():
        assert big.peak_rss_mb - small.peak_rss_mb > 300, "the small stage does not inherit the big one's peak"
    assert runner.run_peak_mb() >= big.peak_rss_mb, "the run's peak covers every stage"
    reused = StageRunner(config).run("big", {"a": 1}, lambda out: {"sum": 0.0})
    assert reused.reused and reused.peak_rss_mb is None, "a reused stage computed nothing, so it has no peak"


def test_freed_heap_goes_back_to_the_kernel_between_stages() -> None:
    """Small freed blocks stay mapped by glibc (the heap cannot shrink under a live block) until
    trimmed; the stage runner trims before each stage so a stage does not start at the last one's peak."""
    before = _resident_mb()
    blocks = [bytearray(60_000) for _ in range(4000)]
    for b in blocks:
        b[::4096] = b"x" * len(b[::4096])  # touch every page, so it is resident
    survivor = blocks[-1]  # live at the top of the heap
    del blocks
    held = _resident_mb()
    if not release_free_memory():  # another allocator: nothing to assert
        return
    assert held - before > 150, "the freed blocks were still resident before the trim"
    assert _resident_mb() < held - 150, "the trim returned them"
    assert len(survivor) == 60_000


def test_a_memory_checkpoint_names_its_step_and_the_stage_peak(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from training.memory import log_memory, peak_rss_mb, resident_mb

    logger = logging.getLogger("tests.memory")
    with caplog.at_level(logging.INFO, logger="tests.memory"):
        log_memory(logger, "the two-tower fit")
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("memory after the two-tower fit: ") and "MB resident, stage peak" in line
    assert 0 < resident_mb() <= peak_rss_mb() + 1
