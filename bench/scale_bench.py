"""The scale ladder (`make bench-scale`): how the cost of `recsys train` grows with the log.

Each rung of ``bench/scale_bench.yaml`` is one ``recsys train`` (what ``make train`` runs) of a
project config on a log of a given size, in its own fresh work dir under ``artifacts/scale/<rung>``:
synthetic H&M-shaped logs (bench/synthetic_log.py, generated when missing) at 0.1x to 100x of the
H&M week, and the real Complete Journey grocery log. For every rung it records the log's size
(purchases, customers, items), every stage's seconds, the whole run's wall and CPU seconds, and
its peak memory: the largest resident set of the process tree, sampled every 0.5 s, and the
kernel's own high-water mark of the training process. Results accumulate by rung in
``bench/results/scale.json`` (a partial run keeps the other rungs), then ``scale.md``, a log-log
plot of stage time against purchases and the README section between the scale markers are rewritten.

    .venv/bin/python bench/scale_bench.py                       # the default rungs
    .venv/bin/python bench/scale_bench.py --rungs hm_x100       # one rung by name
    .venv/bin/python bench/scale_bench.py --report              # only rewrite the report
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import polars as pl  # noqa: E402
import yaml  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from recsys.atomic import write_json  # noqa: E402
from report_files import replace_readme_section, save_figure  # noqa: E402
from recsys.config import ProjectConfig, load_config  # noqa: E402
from recsys.data.loading import read_table  # noqa: E402

START, END = "<!-- bench:scale:start -->", "<!-- bench:scale:end -->"
PLOT = "scale_stage_seconds.png"
PARTS_JSON = "parts.json"  # a rung's runs when it was resumed (each: wall and CPU seconds, peak memory)
MEMORY_CSV = "memory.csv"  # a rung's resident-memory timeline, in its work dir
STAGE_ORDER = ("content", "label_fold", "label_fold_2", "label_fold_3", "reranker", "serving_fold", "evaluate", "precompute", "bundle")


class RungSpec(BaseModel):
    """One rung: a project config and, for a synthetic log, its scale (purchases relative to the H&M week)."""

    model_config = ConfigDict(extra="forbid")
    config: str
    synthetic_scale: float | None = Field(default=None, gt=0)
    default: bool = True
    target_seconds: float | None = Field(default=None, gt=0, description="the rung's time budget, drawn on its stage profile")
    target_memory_mb: float | None = Field(default=None, gt=0, description="the rung's memory budget, drawn on its stage profile")


class ScaleSpec(BaseModel):
    """bench/scale_bench.yaml."""

    model_config = ConfigDict(extra="forbid")
    rungs: dict[str, RungSpec]


# -- one rung ------------------------------------------------------------------------------------------


def synthetic_dir(name: str) -> Path:
    """Where a synthetic rung's log lives (outside git: artifacts/ is ignored)."""
    return ROOT / "artifacts" / "synthetic" / name


def source_commit() -> str | None:
    """The commit the rung trains with (a resumed rung's parts may differ), "+dirty" with local changes; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def ensure_synthetic(name: str, scale: float) -> Path:
    """Generate the rung's synthetic log unless a finished one of the same scale is there.

    Args:
        name: the rung (its folder name).
        scale: purchases relative to the H&M week.

    Returns:
        The log's folder.
    """
    out = synthetic_dir(name)
    stats = out / "synthetic.json"
    if stats.is_file() and json.loads(stats.read_text())["plan"]["scale"] == scale:
        return out
    print(f"[{name}] generating the synthetic log at {scale}x ...", flush=True)
    subprocess.run([sys.executable, str(ROOT / "bench" / "synthetic_log.py"), "--scale", str(scale), "--out", str(out)], check=True)
    return out


def machine() -> str:
    """Cores, CPU model and Python of this machine: rungs are measured in different sessions, whose
    machines differ in speed (the 100x two-tower trained at 7.5k examples/s on one, 18k on another)."""
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    except OSError:
        pass
    cpu = f" ({model})" if model else ""
    return f"{os.cpu_count()} cores{cpu}, {platform.machine()}, Python {platform.python_version()}"


def log_facts(config: ProjectConfig) -> dict[str, int]:
    """The log's size as the config reads it: purchases, customers, items bought, catalogue rows.

    Args:
        config: the rung's project config (column names come from it).

    Returns:
        Counts.
    """
    inter, items = config.data.interactions, config.data.items
    path = config.data.resolve(inter.path)
    assert path is not None
    user, item = inter.columns.user_id, inter.columns.item_id
    if path.suffix == ".parquet":
        log = pl.scan_parquet(path).select(pl.len().alias("n"), pl.col(user).n_unique().alias("u"), pl.col(item).n_unique().alias("i")).collect()
    else:
        frame = read_table(path, inter)
        log = frame.select(pl.len().alias("n"), pl.col(user).n_unique().alias("u"), pl.col(item).n_unique().alias("i"))
    catalogue_path = config.data.resolve(items.path)
    catalogue = 0
    if catalogue_path is not None and catalogue_path.is_file():
        catalogue = pl.scan_parquet(catalogue_path).select(pl.len()).collect().item() if catalogue_path.suffix == ".parquet" else read_table(catalogue_path, items).height
    return {"purchases": int(log["n"][0]), "customers": int(log["u"][0]), "items": int(log["i"][0]), "catalogue": int(catalogue)}


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then put the old values back."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


STOP_REQUESTED = threading.Event()  # set by SIGTERM/SIGINT: the running rung stops as --max-seconds would stop it


def _request_stop(signum: int, frame: object) -> None:
    STOP_REQUESTED.set()


def process_memory_mb(pid: int, page_mb: float, proportional: bool = True) -> float:
    """One process's proportional set size in MB (its resident set where PSS is not available; 0 once it is gone).

    Args:
        pid: the process.
        page_mb: the page size in MB (for the ``statm`` fallback).
        proportional: False reads the resident set (``statm``) directly.
    """
    try:
        match = re.search(r"^Pss:\s+(\d+) kB", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.MULTILINE) if proportional else None
        if match:
            return int(match.group(1)) / 1024
    except OSError:
        pass
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page_mb
    except (OSError, IndexError, ValueError):
        return 0.0


class TreeMemory:
    """Samples the memory of a process and its descendants, summed (the peak and a timeline are kept).

    Each process counts its proportional set size (``Pss`` in ``/proc/<pid>/smaps_rollup``): a page
    shared by n processes counts 1/n in each, so forked workers sharing a fitted model (the
    precompute stage) are not counted once per worker, as summed resident sets would. Where the
    kernel has no ``smaps_rollup``, the resident set (``statm``) is read instead. A tree of one
    process (every stage but the forked precompute) reads its resident set: the kernel walks every
    page table of a process for ``smaps_rollup``, ~20% of a core at 16 GB, which slowed the 100x
    rung's two-tower training from ~13k to ~7k examples/s on 2 cores; a forked tree is sampled
    less often, at most ~10% of a core (the kernel's per-stage peaks are read separately).
    """

    def __init__(self, pid: int, every: float = 0.5):
        self.pid, self.every, self.peak_mb = pid, every, 0.0
        self.samples: list[tuple[str, float]] = []  # (local wall-clock time, the train log's clock; MB), one per second at most
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        pids, frontier = [self.pid], [self.pid]
        while frontier:
            parent = frontier.pop()
            try:
                children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            except OSError:
                continue
            pids += [int(c) for c in children]
            frontier += [int(c) for c in children]
        return pids

    def _run(self) -> None:
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        wait = self.every
        while not self._stop.wait(wait):
            tree = self._tree()
            started = time.perf_counter()
            total = sum(process_memory_mb(pid, page_mb, proportional=len(tree) > 1) for pid in tree)
            # A forked tree's proportional sizes cost a page-table walk per process: three 9 GB
            # processes took ~87% of a core at two samples a second, in the 100x evaluate. Waiting
            # ten times as long as a sample took keeps the sampler under ~10% of a core.
            wait = max(self.every, 10 * (time.perf_counter() - started))
            self.peak_mb = max(self.peak_mb, total)
            now = dt.datetime.now().isoformat(timespec="seconds")
            if not self.samples or self.samples[-1][0] != now:
                self.samples.append((now, total))
            else:
                self.samples[-1] = (now, max(total, self.samples[-1][1]))

    def write(self, path: Path, earlier: list[str] | None = None) -> None:
        """Write the timeline as ``time,rss_mb`` lines (what :func:`plot_memory` reads).

        Args:
            path: the CSV file.
            earlier: lines of an earlier part's timeline (a resumed rung), kept before this part's.
        """
        path.write_text("time,rss_mb\n" + "".join(f"{line}\n" for line in earlier or []) + "".join(f"{t},{mb:.0f}\n" for t, mb in self.samples))

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def finished_stages(work: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds and peak memory (MB) of every stage that finished in a work dir (from the stage markers), for a stopped rung."""
    done: dict[str, float] = {}
    peaks: dict[str, float] = {}
    for marker in sorted(work.glob("stages/*/*/_stage.json")):
        info = json.loads(marker.read_text())
        name = info.get("stage", marker.parent.parent.name)
        done[name] = round(float(info.get("seconds", 0.0)), 1)
        if info.get("peak_rss_mb") is not None:
            peaks[name] = round(float(info["peak_rss_mb"]), 1)
    return done, peaks


def run_rung(
    name: str, spec: RungSpec, work_root: Path, resume: bool, max_seconds: float | None = None, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train one rung end to end and measure it.

    Args:
        name: the rung.
        spec: its spec.
        work_root: artifacts/scale (each rung's work dir below it).
        resume: keep the rung's work dir (finished stages are reused; their seconds are the
            compute seconds recorded when they ran) instead of starting fresh.
        previous: the rung's record from the results file; a resumed rung whose work dir has no
            ``parts.json`` yet (its first run predates it) counts that record as its first part.
        max_seconds: stop the training after this long and record the stages it finished
            (``complete`` false); None waits for the end.

    Returns:
        The rung's record for scale.json.
    """
    env = dict(os.environ)
    if spec.synthetic_scale is not None:
        env["RECSYS_SYNTHETIC_DIR"] = str(ensure_synthetic(name, spec.synthetic_scale))
    work = work_root / name
    if work.exists() and not resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    env["RECSYS_WORK_DIR"] = str(work)
    # The training imports this checkout's packages, the code source_commit() records: an editable
    # install shared with another worktree would otherwise map them to that worktree's files.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    with _environ({k: env[k] for k in ("RECSYS_SYNTHETIC_DIR", "RECSYS_WORK_DIR") if k in env}):
        config = load_config(ROOT / spec.config)  # paths in it expand these variables
        if config.work_path.resolve() != work.resolve():
            raise ValueError(f"{spec.config}: work_dir {config.work_dir!r} does not follow RECSYS_WORK_DIR, so the rung would not train in a fresh work dir")
        facts = log_facts(config)
    print(f"[{name}] {facts['purchases']:,} purchases, {facts['customers']:,} customers, {facts['items']:,} items; training in {work}", flush=True)
    summary_path = work / "summary.json"
    command = [str(ROOT / ".venv" / "bin" / "recsys"), "train", "--config", str(ROOT / spec.config), "--summary", str(summary_path)]
    # A resumed rung is one training run in several parts (a session ends, a stage is re-run with a
    # fix): its log, memory timeline and parts are appended to, and its totals sum the parts.
    parts: list[dict[str, Any]] = json.loads((work / PARTS_JSON).read_text()) if resume and (work / PARTS_JSON).is_file() else []
    if resume and not parts and previous and previous.get("log") == str(work / "train.log") and "cpu_seconds" in previous:
        parts = [{k: previous.get(k) for k in ("finished", "wall_seconds", "cpu_seconds", "peak_rss_mb", "returncode", "complete")}]
    earlier_memory = (work / MEMORY_CSV).read_text().splitlines()[1:] if resume and (work / MEMORY_CSV).is_file() else []
    commit = source_commit()  # at the start: the worktree may move on while the rung trains
    started = time.perf_counter()
    with open(work / "train.log", "a" if resume else "w") as log:
        if resume:
            log.write(f"=== scale ladder: resumed at {dt.datetime.now().isoformat(timespec='seconds')} (part {len(parts) + 1}) ===\n")
            log.flush()
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        memory = TreeMemory(proc.pid)
        stopped = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            over_time = max_seconds is not None and time.perf_counter() - started > max_seconds
            if (over_time or STOP_REQUESTED.is_set()) and not stopped:
                why = f"after {max_seconds:,.0f} s (--max-seconds)" if over_time else "on request (SIGTERM/SIGINT)"
                print(f"[{name}] stopping {why}; recording the stages it finished", flush=True)
                proc.terminate()
                stopped = True
            time.sleep(0.5)
        proc.returncode = os.waitstatus_to_exitcode(status)
        tree_peak = memory.stop()
        memory.write(work / MEMORY_CSV, earlier_memory)
    wall = time.perf_counter() - started
    summary = json.loads(summary_path.read_text()) if proc.returncode == 0 and not stopped else None
    # The training process's own peak: the kernel's (ru_maxrss), or the largest per-stage mark it reported.
    process_peak = max(usage.ru_maxrss / 1024, (summary or {}).get("peak_rss_mb") or 0.0)
    part = {
        "commit": commit, "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(max(tree_peak, process_peak), 1),
        "returncode": proc.returncode, "complete": not stopped and proc.returncode == 0,
    }
    parts.append(part)
    write_json(work / PARTS_JSON, parts)
    record: dict[str, Any] = {
        "rung": name, "config": spec.config, "synthetic_scale": spec.synthetic_scale, **facts, "machine": machine(),
        "finished": part["finished"], "returncode": proc.returncode,
        "wall_seconds": round(sum(float(p["wall_seconds"] or 0) for p in parts), 1),
        "cpu_seconds": round(sum(float(p["cpu_seconds"] or 0) for p in parts), 1),
        "peak_rss_mb": round(max(float(p["peak_rss_mb"] or 0) for p in parts), 1), "peak_rss_process_mb": round(process_peak, 1),
        "log": str(work / "train.log"), "complete": part["complete"], "memory_plot": bool(memory.samples or earlier_memory),
    }
    if len(parts) > 1:
        record["parts"] = len(parts)
    if stopped:
        record["stages"], record["stage_peak_rss_mb"] = finished_stages(work)
        record["returncode"] = 0
        print(f"[{name}] stopped at {wall:,.0f} s; finished: " + ", ".join(f"{s} {v:,.0f}s" for s, v in record["stages"].items()), flush=True)
        return record
    if proc.returncode != 0:
        tail = (work / "train.log").read_text().splitlines()[-15:]
        record["error"] = "\n".join(tail)
        # What finished before the failure (killed for memory, say) is still measured.
        record["stages"], record["stage_peak_rss_mb"] = finished_stages(work)
        print(f"[{name}] FAILED (exit {proc.returncode}); see {work / 'train.log'}", flush=True)
        return record
    assert summary is not None
    stages = {s: round(v["compute_seconds"] if v["reused"] else v["seconds"], 1) for s, v in summary["stages"].items()}
    stages["bundle"] = round(max(0.0, summary["seconds"] - sum(v["seconds"] for v in summary["stages"].values())), 1)
    record["stages"] = stages
    # Each stage's own peak (the training process resets the kernel's high-water mark per stage).
    # A reused stage's peak is the one its marker recorded when it ran (an earlier part).
    record["stage_peak_rss_mb"] = {
        s: round(v["peak_rss_mb"], 1) for s, v in summary["stages"].items() if v.get("peak_rss_mb") is not None
    } | {s: v for s, v in finished_stages(work)[1].items() if s in summary["stages"] and summary["stages"][s].get("peak_rss_mb") is None}
    record["pipeline_seconds"] = round(summary["seconds"], 1)
    record["reused"] = [s for s, v in summary["stages"].items() if v["reused"]]
    record["metrics"] = summary["stages"].get("evaluate", {}).get("metrics", {})
    print(f"[{name}] done in {wall:,.0f} s, peak {record['peak_rss_mb']:,.0f} MB: " + ", ".join(f"{s} {v:,.0f}s" for s, v in stages.items()), flush=True)
    return record


# -- the report ----------------------------------------------------------------------------------------


def memory_plot(rung: str) -> str:
    """File name of a rung's memory-profile plot in the results folder."""
    return f"scale_memory_{rung}.png"


def markdown(results: dict[str, Any]) -> str:
    """The README table: one row per rung, smallest log first."""
    rungs = sorted(results["rungs"].values(), key=lambda r: r["purchases"])
    stages = [s for s in STAGE_ORDER if any(s in r.get("stages", {}) for r in rungs)]
    lines = [
        f"Scale ladder (`make bench-scale`), {results['machine']} (a rung whose note names a machine ran there: the sessions' machines differ in speed). One `recsys train` per rung in a fresh work dir; "
        "seconds per stage, the whole run's wall and CPU seconds, and the peak resident memory of the process tree.",
        "",
        "| rung | purchases | customers | items | " + " | ".join(f"{s} s" for s in stages) + " | total s | CPU s | peak RSS MB |",
        "|---|" + "---:|" * (len(stages) + 6),
    ]
    for r in rungs:
        if r.get("returncode", 0) != 0:
            cells = ["failed"] * len(stages)
        else:
            cells = [f"{r['stages'][s]:,.0f}" if s in r["stages"] else "" for s in stages]
        total = f"{r['wall_seconds']:,.0f}" if r.get("complete", True) else f"stopped at {r['wall_seconds']:,.0f}"
        if r.get("stage_sum_of_runs"):  # stages re-run with fixes: the total is their sum, not one run's wall
            total += f" (stage sum, {r['stage_sum_of_runs']} runs)"
        elif r.get("parts", 1) > 1:
            total += f" ({r['parts']} parts)"
        cpu = f"{r['cpu_seconds']:,.0f}" if r.get("cpu_seconds") is not None else "n/a"
        lines.append(
            f"| {r['rung']} | {r['purchases']:,} | {r['customers']:,} | {r['items']:,} | " + " | ".join(cells)
            + f" | {total} | {cpu} | {r['peak_rss_mb']:,.0f} |"
        )
    if any(r.get("parts", 1) > 1 for r in rungs):
        lines += ["", "A rung trained in *N parts* was resumed (`--resume`): stages finished in an earlier part were reused with the seconds and peak they took then, and its total, CPU and peak cover every part."]
    if any(r.get("stage_sum_of_runs") for r in rungs):
        lines += ["", "A *stage sum* rung had stages re-run with fixes (`recsys train --force`) on its work dir: every stage is listed with its last run, the total is the sum of those stages, and no CPU total covers exactly them (n/a)."]
    if any(not r.get("complete", True) for r in rungs):
        lines += ["", "A rung *stopped at* N s was stopped before its end (`--max-seconds`, or by hand as its note says): its row has the stages it finished; CPU and memory are up to the stop."]
    lines += [f"- {r['rung']}" + (f" ({r['machine']})" if r.get("machine") else "") + f": {r['note']}" for r in rungs if r.get("note")]
    peaks = [r for r in rungs if r.get("stage_peak_rss_mb")]
    if peaks:
        shown = [s for s in STAGE_ORDER if any(s in r["stage_peak_rss_mb"] for r in peaks)]
        lines += [
            "",
            "Peak resident memory of the training process within each stage (MB; the kernel's high-water mark, reset as each stage starts):",
            "",
            "| rung | " + " | ".join(shown) + " |",
            "|---|" + "---:|" * len(shown),
        ]
        lines += [f"| {r['rung']} | " + " | ".join(f"{r['stage_peak_rss_mb'][s]:,.0f}" if s in r["stage_peak_rss_mb"] else "" for s in shown) + " |" for r in peaks]
    lines += ["", f"![stage seconds against purchases](bench/results/{PLOT})", ""]
    lines += [f"![{r['rung']} memory by stage](bench/results/{memory_plot(r['rung'])})\n" for r in rungs if r.get("memory_plot")]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Log-log plot of each stage's seconds (and the total) against purchases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rungs = sorted((r for r in results["rungs"].values() if r.get("returncode", 0) == 0), key=lambda r: r["purchases"])
    if not rungs:
        return
    fig, ax = plt.subplots(figsize=(8, 5.5))
    complete = [r for r in rungs if r.get("complete", True)]
    # Lines join the synthetic rungs (one log shape at growing sizes); a real log is its own point.
    synthetic = [r for r in rungs if r.get("synthetic_scale") is not None]
    real = [r for r in rungs if r.get("synthetic_scale") is None]
    for stage in [s for s in STAGE_ORDER if any(s in r["stages"] for r in rungs)]:
        points = [(r["purchases"], r["stages"][stage]) for r in synthetic if r["stages"].get(stage, 0) > 0]
        line = ax.plot(*(zip(*points) if points else ([], [])), marker="o", label=stage)
        others = [(r["purchases"], r["stages"][stage]) for r in real if r["stages"].get(stage, 0) > 0]
        if others:
            ax.plot(*zip(*others), linestyle="none", marker="D", markerfacecolor="none", color=line[0].get_color())
    totals = [r for r in complete if r.get("synthetic_scale") is not None]
    ax.plot([r["purchases"] for r in totals], [r["wall_seconds"] for r in totals], marker="s", color="black", linewidth=2.5, label="total (wall)")
    real_totals = [r for r in complete if r.get("synthetic_scale") is None]
    if real_totals:
        ax.plot([r["purchases"] for r in real_totals], [r["wall_seconds"] for r in real_totals], linestyle="none", marker="D", markersize=8,
                color="black", markerfacecolor="none", label="a real log (hollow marks)")
    if rungs:  # the linear reference through the smallest rung's total, out to the largest rung
        x0, t0 = rungs[0]["purchases"], rungs[0]["wall_seconds"]
        ax.plot([x0, rungs[-1]["purchases"]], [t0, t0 * rungs[-1]["purchases"] / x0], "k:", label="linear in purchases")
    for r in complete:
        ax.annotate(r["rung"], (r["purchases"], r["wall_seconds"]), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel="purchases in the log", ylabel="seconds", title="recsys train: stage time against log size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)


def stage_spans(train_log: Path) -> list[tuple[str, dt.datetime, dt.datetime | None]]:
    """(stage, start, end) of every stage the training log shows running (end None: still running or stopped)."""
    spans: list[tuple[str, dt.datetime, dt.datetime | None]] = []
    for line in train_log.read_text(errors="replace").splitlines():
        match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ INFO training\.stages: stage (\S+)\s+(running|done|reused)", line)
        if not match:
            continue
        at, name, what = dt.datetime.fromisoformat(match.group(1)), match.group(2), match.group(3)
        if what == "running":
            spans.append((name, at, None))
        elif what == "done" and spans and spans[-1][0] == name:
            spans[-1] = (name, spans[-1][1], at)
    return spans


def plot_memory(memory_csv: Path, train_log: Path, title: str, path: Path) -> None:
    """Resident memory against time with each stage's span shaded and named (a rung's memory profile)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [line.split(",") for line in memory_csv.read_text().splitlines()[1:] if line]
    if not rows:
        return
    times = [dt.datetime.fromisoformat(t) for t, _ in rows]
    start = times[0]
    minutes = [(t - start).total_seconds() / 60 for t in times]
    gb = [float(mb) / 1024 for _, mb in rows]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(minutes, gb, color="black", linewidth=1)
    colours = plt.get_cmap("tab10")
    for i, (name, began, ended) in enumerate(stage_spans(train_log)):
        lo = (began - start).total_seconds() / 60
        hi = ((ended or times[-1]) - start).total_seconds() / 60
        if hi <= 0:
            continue
        ax.axvspan(max(lo, 0), hi, color=colours(i % 10), alpha=0.15)
        ax.text((max(lo, 0) + hi) / 2, max(gb) * 1.02, name, rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set(xlabel="minutes", ylabel="resident memory (GB)", title=title, ylim=(0, max(gb) * 1.35))
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_stage_profile(record: dict[str, Any], path: Path, spec: RungSpec | None = None) -> None:
    """Seconds and peak resident memory of each stage as bars, with the rung's targets drawn.

    A *stage sum* record's stages come from several runs (some re-run with fixes), so no single
    memory timeline shows them, and a run trained outside the ladder (``stage_profile`` set) has no
    sampled timeline: this plot shows each stage's own seconds and peak (the kernel's high-water
    mark per stage) instead.

    Args:
        record: a rung's record with ``stages`` and ``stage_peak_rss_mb``.
        path: the PNG to write.
        spec: the rung's spec (``target_seconds``, ``target_memory_mb``), or None for no target lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGE_ORDER if s in record.get("stages", {})]
    if not stages:
        return
    seconds = [record["stages"][s] for s in stages]
    peaks = [record.get("stage_peak_rss_mb", {}).get(s, 0.0) for s in stages]  # MB, as the tables
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(stages) + 1.8), sharey=True)
    y = list(range(len(stages)))[::-1]  # the first stage on top
    left.barh(y, [t / 3600 for t in seconds], color="tab:blue")
    total = sum(seconds)
    left.set(xlabel="hours", title=f"stage time (sum {total / 3600:.2f} h)")
    right.barh(y, peaks, color="tab:orange")
    right.set(xlabel="peak resident memory (MB)", title="stage peak memory")
    if spec is not None and spec.target_seconds:
        left.text(0.98, 0.02, f"target: the sum within {spec.target_seconds / 3600:g} h", transform=left.transAxes, ha="right", fontsize=8)
    if spec is not None and spec.target_memory_mb:
        right.axvline(spec.target_memory_mb, color="red", linestyle="--", label=f"target {spec.target_memory_mb:,.0f} MB")
        right.legend(fontsize=8, loc="lower right")
    left.set_yticks(y, stages)
    for ax in (left, right):
        ax.grid(True, axis="x", alpha=0.3)
    if record.get("stage_sum_of_runs"):
        runs = f"each stage's last run ({record['stage_sum_of_runs']} runs)"
    else:
        runs = f"one training in {record['parts']} parts" if record.get("parts", 1) > 1 else "one run"
    fig.suptitle(f"recsys train on {record['rung']}: {runs}")
    fig.tight_layout()
    save_figure(fig, path)


def write_report(results: dict[str, Any], results_dir: Path, readme: Path, spec: ScaleSpec | None = None) -> str:
    """Write scale.md, the plots and the README section (between the scale markers).

    Args:
        results: the results file's content.
        results_dir: where scale.md and the plots go.
        readme: the README whose scale section is replaced.
        spec: the ladder spec (rung targets on the plots), or None.

    Returns:
        The markdown section.
    """
    text = markdown(results)
    (results_dir / "scale.md").write_text(text)
    plot(results, results_dir / PLOT)
    for record in results["rungs"].values():
        rung_spec = spec.rungs.get(record["rung"]) if spec is not None else None
        work = Path(record.get("log", "")).parent
        # Stage sums, and runs trained outside the ladder (``stage_profile``), have no sampled timeline.
        if record.get("stage_sum_of_runs") or record.get("stage_profile"):
            plot_stage_profile(record, results_dir / memory_plot(record["rung"]), rung_spec)
        elif (work / MEMORY_CSV).is_file() and Path(record["log"]).is_file():
            plot_memory(work / MEMORY_CSV, Path(record["log"]), f"recsys train on {record['rung']}: resident memory by stage", results_dir / memory_plot(record["rung"]))
    replace_readme_section(readme, START, END, text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=ROOT / "bench" / "scale_bench.yaml")
    parser.add_argument("--rungs", default="", help="comma-separated rung names (default: the rungs marked default)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    parser.add_argument("--work-root", type=Path, default=ROOT / "artifacts" / "scale")
    parser.add_argument("--resume", action="store_true", help="reuse each rung's finished stages instead of a fresh work dir")
    parser.add_argument("--max-seconds", type=float, help="stop a rung after this long and record the stages it finished")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the results file")
    args = parser.parse_args(argv)
    spec = ScaleSpec.model_validate(yaml.safe_load(args.spec.read_text()))
    names = [n for n in args.rungs.split(",") if n] or [n for n, r in spec.rungs.items() if r.default]
    unknown = sorted(set(names) - set(spec.rungs))
    if unknown:
        parser.error(f"unknown rung(s) {', '.join(unknown)}; {args.spec} has {', '.join(spec.rungs)}")
    # A stopped ladder (`kill <pid>`, Ctrl-C) ends its rung gracefully: the training is terminated and
    # the stages it finished are recorded (``complete`` false), as with --max-seconds.
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {"rungs": {}}
    results["machine"] = machine()
    if not args.report:
        for name in names:
            if STOP_REQUESTED.is_set():
                break
            results["rungs"][name] = run_rung(name, spec.rungs[name], args.work_root, args.resume, args.max_seconds, results["rungs"].get(name))
            write_json(args.out, results)  # after every rung: a stopped ladder keeps what it measured
    print(write_report(results, args.out.parent, ROOT / "README.md", spec))
    failed = [n for n in names if results["rungs"].get(n, {}).get("returncode", 0) != 0]
    return 1 if failed and not args.report else 0


if __name__ == "__main__":
    sys.exit(main())
