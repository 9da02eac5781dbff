"""Two-tower training speed over torchrun ranks (`make bench-ranks`): one process against N ranks.

    .venv/bin/python bench/ranks_bench.py --config configs/hm.yaml --worlds 1,2 --repeat 2

Each run is ``recsys.two_tower.distributed`` (the early-stopping run on the config's split; what
``make train NPROC=N`` runs for every two-tower fit) for a fixed number of epochs: one plain
process (``config.threads`` torch threads), or ``torchrun --nproc_per_node=N`` (the threads split
between the ranks, the item table sharded column-wise). World sizes alternate within each repeat,
so a slow spell of a shared machine falls on both. Recorded per run: training examples/s of every
epoch (feature building and validation excluded), the whole command's seconds, the best
validation recall. Results: ``bench/results/two_tower_ranks.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.atomic import write_json, write_text  # noqa: E402


def run_once(config: str, world: int, epochs: int, out: Path) -> dict[str, object]:
    """One early-stopping run of ``epochs`` epochs in ``world`` processes.

    Args:
        config: project config path.
        world: 1 (a plain process) or the torchrun ranks.
        epochs: epochs to run (early stopping off).
        out: the run's result folder.

    Returns:
        World size, per-epoch examples/s, training and wall seconds, best recall.
    """
    override = json.dumps({"retrieval": {"two_tower": {"max_epochs": epochs, "patience": 99}}})
    module = ["-m", "recsys.two_tower.distributed", "--config", config, "--out", str(out), "--override", override]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if world == 1:
        cmd = [sys.executable, *module]
    else:
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))  # torchrun would set 1; each rank takes its share
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", *module]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"world {world} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads((out / "result.json").read_text())
    rates = [h["examples_per_second"] for h in result["history"]]
    return {
        "world": result["world_size"], "examples_per_second": rates, "train_seconds": result["seconds"],
        "wall_seconds": wall, "best_recall": result["best_recall"], "epochs": result["epochs"],
    }


def report(runs: list[dict[str, object]], config: str, epochs: int) -> tuple[dict[str, object], str]:
    """The JSON summary and markdown table of the runs (median examples/s per world size)."""
    worlds = sorted({int(r["world"]) for r in runs})  # type: ignore[call-overload]
    by_world = {w: [r for r in runs if r["world"] == w] for w in worlds}
    # Epoch 1 includes the sharded tables' first touches; later epochs are the steady rate.
    steady = {w: statistics.median(x for r in rs for x in r["examples_per_second"][1:] or r["examples_per_second"]) for w, rs in by_world.items()}  # type: ignore[index,union-attr]
    summary = {
        "config": config, "epochs": epochs, "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "runs": runs, "median_examples_per_second": steady,
    }
    base = steady[worlds[0]]
    lines = [
        f"Two-tower training over torchrun ranks (`make bench-ranks`), {summary['machine']}: `{config}`, {epochs} epochs per run, "
        "examples/s of the training steps (median over epochs 2.. of every run of that size).",
        "",
        "| ranks | runs | examples/s | vs 1 | train s (each run) | wall s (each run) | best recall |",
        "|---:|---:|---:|---:|---|---|---|",
    ]
    for w, rs in by_world.items():
        train = ", ".join(format(r["train_seconds"], ".0f") for r in rs)
        wall = ", ".join(format(r["wall_seconds"], ".0f") for r in rs)
        recall = ", ".join(format(r["best_recall"], ".4f") for r in rs)
        lines.append(f"| {w} | {len(rs)} | {steady[w]:,.0f} | {steady[w] / base:.2f}x | {train} | {wall} | {recall} |")
    return summary, "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/hm.yaml")
    parser.add_argument("--worlds", default="1,2", help="comma-separated world sizes")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "two_tower_ranks.json")
    args = parser.parse_args()
    worlds = [int(w) for w in args.worlds.split(",")]
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="ranks-bench-") as tmp:
        for repeat in range(args.repeat):
            order = worlds if repeat % 2 == 0 else worlds[::-1]
            for world in order:
                run = run_once(args.config, world, args.epochs, Path(tmp) / f"w{world}-r{repeat}")
                print(f"repeat {repeat + 1}/{args.repeat}, {world} rank(s): {', '.join(f'{x:,.0f}' for x in run['examples_per_second'])} examples/s, "  # type: ignore[attr-defined]
                      f"{run['wall_seconds']:.0f} s", flush=True)
                runs.append(run)
    summary, table = report(runs, args.config, args.epochs)
    write_json(args.out, summary, indent=2)
    write_text(args.out.with_suffix(".md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
