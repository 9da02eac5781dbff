"""Retrieval benchmark on the H&M last-day protocol: two-tower, each candidate source, merged set.

    nice -n 10 .venv/bin/python bench/retrieval_bench.py                 # full run (~30-40 min on 2 busy cores)
    .venv/bin/python bench/retrieval_bench.py --from-summary artifacts/retrieval_run/summary.json

The first form runs :func:`training.retrieval.run_retrieval` (what ``recsys retrieval`` runs);
the second formats the summary that a ``recsys retrieval --json`` run already wrote. Either way
``bench/results/retrieval.json`` gets the measured numbers beside the data set's reference
baselines (../shared/data/hm/README.md), plus the machine they were measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Recall@100 on the same protocol, from ../shared/data/hm/README.md.
REFERENCE_RECALL_100 = {
    "popularity (last 2 days)": 0.1328,
    "history + popularity fill": 0.3145,
    "ALS-64": 0.2833,
    "ALS-128": 0.3126,
    "history + ALS-128 fill": 0.3508,
    "item-kNN cosine": 0.3122,
}
TARGETS = {"two_tower_recall@100": 0.313, "candidates_recall@100": 0.42}


def compact(summary: dict) -> dict:
    """The committed result: small, numbers only, with the targets and references beside them."""
    tt, cands, index = summary["two_tower"], summary["candidates"], summary["index"]
    return {
        "protocol": summary["protocol"],
        "users": summary["users"],
        "content_encoder": summary["content_encoder"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "note": "2 shared CPU cores, other jobs running"},
        "test": summary["test"],
        "two_tower": {k: v for k, v in tt.items() if k != "validation_history"}
        | {"validation_recall_by_epoch": [round(h.get("val_recall_at_100", float("nan")), 4) for h in tt["validation_history"]]},
        "index": index,
        "candidates": cands,
        "reference_recall@100": REFERENCE_RECALL_100,
        "targets": TARGETS,
        "met": {
            "two_tower_recall@100": tt["recall@100"] >= TARGETS["two_tower_recall@100"],
            "candidates_recall@100": cands["recall@100"] >= TARGETS["candidates_recall@100"],
        },
        "timings_seconds": summary["timings_seconds"],
    }


def index_sweep(artifacts: Path, ef_values: list[int], users: int = 2036, k: int = 100) -> list[dict]:
    """ANN recall@k and query time of the saved HNSW index at several efSearch values.

    Uses the two-tower saved by the run (``<artifacts>/candidates/two_tower``) and its index
    (``<artifacts>/two_tower_index``); queries are the first ``users`` user vectors.
    """
    import time

    import numpy as np

    from recsys.index.faiss_index import ItemIndex, ann_recall
    from recsys.two_tower.recommender import TwoTowerRecommender

    tower = TwoTowerRecommender.load(artifacts / "candidates" / "two_tower")
    index = ItemIndex.load(artifacts / "two_tower_index")
    queries = tower.user_vectors[np.linspace(0, len(tower.user_vectors) - 1, users).astype(int)]
    rows = []
    for ef in ef_values:
        index.index.hnsw.efSearch = ef
        start = time.perf_counter()
        index.search(queries, k)
        ms = 1000 * (time.perf_counter() - start) / len(queries)
        rows.append({"ef_search": ef, f"ann_recall@{k}": round(ann_recall(index, queries, tower.item_vectors, k), 4), "query_ms_per_user": round(ms, 3)})
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/hm.yaml")
    parser.add_argument("--from-summary", type=Path, help="format an existing `recsys retrieval --json` summary")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "retrieval.json")
    parser.add_argument("--index-sweep", type=Path, metavar="ARTIFACTS", help="also measure the saved HNSW index at several efSearch")
    args = parser.parse_args()
    if args.from_summary:
        summary = json.loads(args.from_summary.read_text())
    else:
        import logging

        from recsys.config import load_config
        from recsys.data import load_dataset
        from training.retrieval import run_retrieval

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        config = load_config(args.config)
        summary = run_retrieval(config, load_dataset(config.data))
    result = compact(summary)
    if args.index_sweep:
        result["index_sweep"] = index_sweep(args.index_sweep, [256, 512, 1024, 2048])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(args.out)
    print(json.dumps({"test": result["test"], "met": result["met"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
