"""Resumable pipeline stages: each stage's output is keyed by a fingerprint of its inputs.

A stage writes into a hidden temp directory and renames it to
``<work_dir>/stages/<name>/<fingerprint>/`` only when it finished, with a ``_stage.json``
marker holding its metrics. Re-running with unchanged inputs reuses the finished output; a killed
run leaves only temp directories, which the next run removes. Each stage gets an MLflow child run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run

from recsys.config import ProjectConfig
from recsys.memory import release_free_memory
from training.memory import peak_rss_mb, reset_peak
from training.tracking import flatten, log_metrics, start_run

log = logging.getLogger(__name__)
MARKER = "_stage.json"


@dataclass
class StageResult:
    """What a finished (or reused) stage left behind."""

    name: str
    path: Path
    fingerprint: str
    reused: bool
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    compute_seconds: float = 0.0  # the time the stage took when it was computed (kept in its marker)
    peak_rss_mb: float | None = None  # the process's resident-set peak during the stage (None: reused)


def fingerprint(inputs: dict[str, Any]) -> str:
    """A stable short hash of JSON-able stage inputs (config sections, upstream fingerprints, data hash)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]


class StageRunner:
    """Runs stages in order, reusing finished ones, logging each as an MLflow child run.

    Args:
        config: the project config (work dir, MLflow store).
        parent: the pipeline's parent MLflow run (None: no tracking).
        force: stage names to recompute even if a finished output exists.
    """

    def __init__(self, config: ProjectConfig, parent: Run | None = None, force: set[str] | None = None):
        self.config = config
        self.root = config.work_path / "stages"
        self.parent = parent
        self.force = force or set()
        self.results: dict[str, StageResult] = {}
        self._peak_before_stages = peak_rss_mb()  # the largest mark outside the stages seen so far, and the stages' peaks
        self._clean_temp()

    def run_peak_mb(self) -> float:
        """The process's resident-set peak so far: every stage's peak and the mark outside them (since the last reset)."""
        return max(self._peak_before_stages, peak_rss_mb())

    def _clean_temp(self) -> None:
        for tmp in self.root.glob("*/.tmp-*"):
            log.info("removing unfinished stage output %s (from an interrupted run)", tmp)
            shutil.rmtree(tmp, ignore_errors=True)

    def checkpoint_dir(self, name: str, inputs: dict[str, Any]) -> Path:
        """A folder where a long stage keeps partial work across interrupted runs (e.g. finished batches).

        Unlike a stage's temp output it survives a killed run; it belongs to these exact inputs and
        is removed once the stage finishes (or when the stage is forced).

        Args:
            name: the stage.
            inputs: the stage's inputs, as given to :meth:`run`.

        Returns:
            The folder's path (not created here).
        """
        return self._checkpoint_path(name, fingerprint({"stage": name, **inputs}))

    def _checkpoint_path(self, name: str, fp: str) -> Path:
        return self.root / name / f".checkpoint-{fp}"

    def run(self, name: str, inputs: dict[str, Any], fn: Callable[[Path], dict[str, float]]) -> StageResult:
        """Run ``fn(output_dir)`` unless an output for these exact inputs already exists.

        Args:
            name: stage name (a folder name).
            inputs: everything the stage's result depends on; upstream stages' fingerprints belong here.
            fn: writes the stage's files into the directory it gets and returns metrics.

        Returns:
            The stage's result (``reused`` tells whether it was computed now).
        """
        fp = fingerprint({"stage": name, **inputs})
        final = self.root / name / fp
        start = time.perf_counter()
        reused = (final / MARKER).is_file() and name not in self.force
        if reused:
            marker = json.loads((final / MARKER).read_text())
            metrics, compute_seconds = marker["metrics"], float(marker.get("seconds", 0.0))
            stage_peak = None
            log.info("stage %-12s reused (%s)", name, fp)
        else:
            log.info("stage %-12s running (%s)", name, fp)
            if name in self.force:
                shutil.rmtree(self._checkpoint_path(name, fp), ignore_errors=True)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
            # Whatever the process held before the stage is the floor of the stage's own peak; the
            # last stage's freed temporaries go back to the kernel first so they do not count.
            release_free_memory()
            self._peak_before_stages = max(self._peak_before_stages, peak_rss_mb())
            reset_peak()
            try:
                metrics = fn(tmp) or {}
                compute_seconds = time.perf_counter() - start
                stage_peak = peak_rss_mb()
                self._peak_before_stages = max(self._peak_before_stages, stage_peak)
                marker = {"stage": name, "fingerprint": fp, "inputs": inputs, "metrics": metrics, "seconds": compute_seconds, "peak_rss_mb": stage_peak}
                (tmp / MARKER).write_text(json.dumps(marker, default=str, indent=2))
                if final.exists():
                    shutil.rmtree(final)
                tmp.rename(final)
                shutil.rmtree(self._checkpoint_path(name, fp), ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        seconds = time.perf_counter() - start
        result = StageResult(name, final, fp, reused, seconds, metrics, compute_seconds, stage_peak)
        self.results[name] = result
        self._track(result, inputs)
        peak = f", peak RSS {stage_peak:,.0f} MB" if stage_peak is not None else ""
        log.info("stage %-12s done in %.1fs%s %s", name, seconds, peak, _short(metrics))
        return result

    def _track(self, result: StageResult, inputs: dict[str, Any]) -> None:
        if self.parent is None:
            return
        params = {k: v for k, v in flatten(inputs).items() if len(str(v)) < 500}
        with start_run(self.config, result.name, parent=self.parent, params=params, tags={"stage": result.name, "reused": str(result.reused)}):
            log_metrics(result.metrics)
            mlflow.log_metric("stage_seconds", result.seconds)
            if result.peak_rss_mb is not None:
                mlflow.log_metric("stage_peak_rss_mb", result.peak_rss_mb)
            mlflow.set_tag("fingerprint", result.fingerprint)


def _short(metrics: dict[str, float]) -> str:
    items = list(metrics.items())[:6]
    return " ".join(f"{k}={v:.4g}" for k, v in items if isinstance(v, int | float))
