"""Combine the serving benchmark results into one table: ``bench/results/bench.md`` and README.md.

Reads ``bench/results/serving.json`` (trained bundle), ``serving_synthetic_1m.json`` (the 1M-item
synthetic catalogue) and ``synthetic_index.json`` (its ANN recall sweeps), writes
``bench/results/bench.md`` and replaces the README text between ``<!-- bench:serving:start -->``
and ``<!-- bench:serving:end -->`` (nothing else in the README is touched).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from report_files import http_share, replace_readme_section  # noqa: E402
from synthetic_catalogue import BREADTH  # noqa: E402  (the index sweep's own names for its breadths)

START, END = "<!-- bench:serving:start -->", "<!-- bench:serving:end -->"
TARGETS = {"/v1/candidates": "p99 <= 20 ms at >= 400 QPS", "/v1/recommendations": "p99 <= 60 ms at >= 50 QPS"}


def _load(path: Path) -> dict | None:  # type: ignore[type-arg]
    return json.loads(path.read_text()) if path.is_file() else None


def _ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"


def _memory(result: dict[str, Any]) -> str:
    """The server's PSS sum where measured (forked workers share pages), else its RSS sum."""
    if result.get("server_pss_mb") is not None:
        return f"{result['server_pss_mb']:,.0f} PSS"
    return f"{result['server_rss_mb']:,.0f} RSS"


def table(results: list[tuple[str, dict]], index: dict | None) -> str:  # type: ignore[type-arg]
    lines = [
        "| catalogue | endpoint | mode | load | requests | errors | QPS | p50 ms | p99 ms | server CPU ms/req | client CPU ms/req | server MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for label, r in results:
        for run in r["runs"]:
            load = f"{int(run['load'])} conn." if run["mode"] == "closed" else f"{int(run['load'])} req/s"
            lines.append(
                f"| {label} | `{run['endpoint']}` | {run['mode']} | {load} | {run['requests']:,} | {run['errors']} | {run['qps']:.0f} | "
                f"{run['p50_ms']:.1f} | {run['p99_ms']:.1f} | {_ms(run.get('server_cpu_ms'))} | {_ms(run.get('client_cpu_ms'))} | {_memory(r)} |"
            )
        choice = {"heaviest": " (the customers with the most purchases: the costliest requests)", "random": " (drawn at random from the customers with history)"}
        mix = f"{r.get('request_users', '?')} customer ids{choice.get(r.get('request_user_choice', ''), '')}" + (f" + {r['request_visitors']} unknown ids" if r.get("request_visitors") else "")
        notes.append(
            f"- {label}: bundle `{r['bundle_version']}` ({r['catalogue_note']}); {r['date']}; {r['workers']} uvicorn workers on "
            f"{r['cpus']} cores; load average at start {r['load_average_start']}"
            + (f" (after {r['settle_wait_s']:.0f} s waiting for it to settle)" if r.get("settle_wait_s") else "")
            + f"; requests cycle over {mix}; "
            f"`/v1/candidates` k={r['candidates_k']}, `/v1/recommendations` {r['n_candidates']} candidates reranked, k=12."
        )
    out = "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    if index and "served" in index:
        s = index["settings"]
        served = index["served"]
        out += (
            f"- 1M index: {served['kind'].upper()} ({served['params']}) over {s['n_items']:,} x {s['dim']} synthetic vectors, built in "
            f"{served['build_s']} s (2 threads), {served['index_bytes'] / 2**20:,.0f} MiB; served at {BREADTH.get(served['kind'], 'breadth')} "
            f"{index['serving_breadth']} = recall@100 {index['serving_recall_at_100']:.3f} vs exact MIPS ({s['queries']} synthetic user vectors).\n"
        )
        for summary in [served, *index.get("compared", [])]:
            sweep = ", ".join(f"{row['breadth']} -> {row['recall_at_k']:.3f} ({row['p50_ms']:.2f} ms)" for row in summary["recall_sweep"])
            out += f"  - {summary['kind'].upper()} ({summary['params']}, built in {summary['build_s']} s), {BREADTH.get(summary['kind'], 'breadth')} -> recall@100 (1-query p50): {sweep}.\n"
    return out


TARGET_QPS = 400  # the 1M-item /v1/candidates target rate


def verdict(results: dict[str, dict]) -> str:  # type: ignore[type-arg]
    """The issue's targets against the measured runs (open loop: latency includes queueing).

    The ``/v1/candidates`` target is judged on the median of the runs scheduled at the target rate;
    the other open-loop runs (fractions of the closed-loop maximum) say how far beyond it the p99
    holds. Where the bench also answered the same requests in process, the HTTP layer's share of
    the server's CPU is given as a ratio.
    """
    lines = []
    for label, res in results.items():
        open_runs = [r for r in res["runs"] if r["endpoint"] == "/v1/candidates" and r["mode"] == "open"]
        at_target = [r for r in open_runs if int(r["load"]) == TARGET_QPS]
        if at_target:
            # Judged on the median run: one 15-s run's p99 swings by 2x on this shared machine.
            p99 = float(sorted(r["p99_ms"] for r in at_target)[(len(at_target) - 1) // 2])
            qps = min(r["qps"] for r in at_target)
            errors = sum(r["errors"] for r in at_target)
            ok = p99 <= 20 and qps >= 0.98 * TARGET_QPS and errors == 0
            each = ", ".join(f"{r['p99_ms']:.1f}" for r in at_target)
            lines.append(f"- target `/v1/candidates` p99 <= 20 ms at >= {TARGET_QPS} QPS, {label}: **{'met' if ok else 'not met'}** "
                         f"(median p99 {p99:.1f} ms over {len(at_target)} run(s) of {TARGET_QPS} req/s scheduled: {each} ms; "
                         f">= {qps:.0f} QPS achieved, {errors} errors).")
        for endpoint, v in (res.get("in_process") or {}).items():
            if (line := http_share(endpoint, v, res["runs"])) is not None:
                lines.append(f"- {label} {line}")
    syn = results.get("synthetic 1M")
    if syn:
        open_runs = [r for r in syn["runs"] if r["endpoint"] == "/v1/candidates" and r["mode"] == "open"]
        others = ", ".join(f"{int(r['load'])} req/s -> p99 {r['p99_ms']:.1f} ms" for r in open_runs if int(r["load"]) != TARGET_QPS)
        best = max((r["qps"] for r in syn["runs"] if r["mode"] == "closed"), default=0)
        lines.append(f"- 1M items, closed loop: {best:.0f} QPS sustained" + (f"; other open-loop rates: {others}." if others else "."))
    for label in ("H&M trained", "H&M heaviest", "synthetic 10x trained", "synthetic 100x trained"):
        hm = results.get(label)
        rec = [r for r in hm["runs"] if r["endpoint"] == "/v1/recommendations" and r["mode"] == "open"] if hm else []
        for rate in sorted({int(r["load"]) for r in rec}):
            runs = [r for r in rec if int(r["load"]) == rate]
            p99 = float(sorted(r["p99_ms"] for r in runs)[(len(runs) - 1) // 2])
            ok = p99 <= 60 and rate >= 50 and all(r["errors"] == 0 for r in runs)
            each = ", ".join(f"{r['p99_ms']:.1f}" for r in runs)
            lines.append(f"- target `/v1/recommendations` p99 <= 60 ms at >= 50 QPS ({label}): at {rate} req/s **{'met' if ok else 'not met'}** "
                         f"(median p99 {p99:.1f} ms over {len(runs)} run(s): {each} ms).")
    errors = sum(r["errors"] for res in results.values() for r in res["runs"])
    lines.append(f"- errors across all load runs: {errors}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    names = (
        ("H&M trained", "serving.json"), ("H&M heaviest", "serving_heaviest.json"),
        ("synthetic 10x trained", "serving_scale_x10.json"), ("synthetic 100x trained", "serving_scale_x100.json"),
        ("synthetic 1M", "serving_synthetic_1m.json"),
    )
    results = [(label, r) for label, name in names if (r := _load(args.results / name))]
    if not results:
        print("no serving results yet: run `make bench`", file=sys.stderr)
        return 1
    block = table(results, _load(args.results / "synthetic_index.json")) + verdict(dict(results))
    (args.results / "bench.md").write_text(block)
    print(block)
    if not args.no_readme:
        replace_readme_section(args.readme, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
