"""Screened two-tower batch search: time per customer and cold items rescored, by screen rank.

    .venv/bin/python bench/screen_rank_bench.py --tower <stage>/generator/two_tower --ranks 32 64 128

The precomputed candidates spend most of their time in the two-tower's exact batch search
(``recsys.index.screened``): every bought item scored in full, the never-bought ones screened
through a rank-``r`` bound. A lower rank makes the screen cheaper and lets more cold items
through to be rescored. This loads a fitted tower's saved vectors (memory-mapped), takes its
window's bought items as the warm set, and searches the same sample of customers at each rank on
one thread (as a precompute worker does), highest rank first, checking that every rank returns the
same lists; ranks below one that rescores more than ``SCREEN_MAX_HITS`` per customer are skipped.
Results go to ``bench/results/screen_rank.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from recsys.index.faiss_index import SCREEN_MAX_HITS  # noqa: E402
from recsys.index.screened import ScreenedSearch  # noqa: E402
from recsys.models.serialization import load_npz  # noqa: E402


def run(tower_dir: Path, ranks: list[int], users: int, k: int, batch: int, seed: int) -> dict:
    """Search ``users`` sampled customers at every rank.

    Args:
        tower_dir: a saved two-tower model folder (``arrays.npz`` with item and user vectors).
        ranks: screen ranks to compare.
        users: customers sampled (fixed seed).
        k: list length (the candidates' ``per_source``).
        batch: customers per search call (the precompute's batch).
        seed: the sample's seed.

    Returns:
        The measured record.
    """
    faiss.omp_set_num_threads(1)
    arrays = load_npz(tower_dir / "arrays.npz")
    items, user_vectors = arrays["item_vectors"], arrays["user_vectors"]
    warm = np.bincount(arrays["seen_indices"], minlength=len(items)) > 0
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(user_vectors), size=min(users, len(user_vectors)), replace=False))
    queries = np.ascontiguousarray(user_vectors[sample], dtype=np.float32)
    record: dict = {
        "tower": str(tower_dir), "items": int(len(items)), "dim": int(items.shape[1]), "warm_items": int(warm.sum()),
        "customers": int(len(sample)), "k": k, "batch": batch, "threads": 1,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "ranks": [],
    }
    reference: np.ndarray | None = None
    too_loose = False
    for rank in sorted(ranks, reverse=True):
        if too_loose:  # a lower rank lets even more through: the range search's hit lists grew to 12 GB at rank 32 (100x)
            record["ranks"].append({"rank": rank, "skipped": f"a higher rank already rescored over {SCREEN_MAX_HITS} cold items per customer"})
            continue
        start = time.perf_counter()
        search = ScreenedSearch.build(items, warm, rank)
        built = time.perf_counter() - start
        if search is None:
            record["ranks"].append({"rank": rank, "skipped": "the screen cannot pay at this rank"})
            continue
        found, hits, start = [], [], time.perf_counter()
        for lo in range(0, len(queries), batch):
            rows, _ = search.search(queries[lo : lo + batch], k)
            found.append(rows)
            hits.append(search.hits_per_query)
            too_loose = too_loose or search.hits_per_query > SCREEN_MAX_HITS
        seconds = time.perf_counter() - start
        rows = np.concatenate(found)
        same = reference is None or bool(np.array_equal(rows, reference))
        reference = rows if reference is None else reference
        entry = {
            "rank": rank, "build_seconds": round(built, 2), "search_seconds": round(seconds, 2),
            "ms_per_customer": round(1e3 * seconds / len(queries), 3), "cold_rescored_per_customer": round(float(np.mean(hits)), 1),
            "same_lists_as_highest_rank": same,
        }
        record["ranks"].append(entry)
        print(json.dumps(entry), flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tower", type=Path, required=True, help="a saved two-tower folder (e.g. <stage>/generator/two_tower)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--users", type=int, default=8192)
    parser.add_argument("--k", type=int, default=150)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/screen_rank.json"))
    args = parser.parse_args()
    record = run(args.tower, args.ranks, args.users, args.k, args.batch, args.seed)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
