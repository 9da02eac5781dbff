"""A synthetic 1M-item catalogue bundle for the serving benchmark, and the recall of its ANN index.

What is synthetic: the item-tower vectors (``--dim`` floats per item drawn around ``--clusters``
random cluster centres, norms spread like trained tower vectors), the users' tower vectors
(their favourite clusters' centres plus noise), the purchases (each user buys from their
favourite clusters, items chosen by a Zipf popularity over the last 30 days) and the catalogue's
names. What is real: the FAISS index class and settings (``ItemIndex.build``: IVF or HNSW over the
exact MIPS-to-L2 reduction, settings from ``configs``), the ``HistoryRecommender`` fitted on
those purchases, and at serving time the app, the candidate generator (history, two-tower and
popularity sources) and its merge (``serving/synthetic_service.py``).

It writes a verified bundle (``"service": "synthetic"``) under ``artifacts/bench/synthetic_bundles``
(reused when one with the same settings exists) and ``bench/results/synthetic_index.{json,md}``:
build time, memory, and ANN recall@100 against exact inner-product search over a sweep of the search
breadth (IVF ``nprobe`` or HNSW ``efSearch``) with single-query latency; the served breadth is the
smallest in the sweep that reaches ``--target-recall``. ``--compare`` builds and sweeps other index
kinds on the same vectors and queries (reported, not served), so the choice is measured in one run.

Usage::

    python bench/synthetic_catalogue.py                     # 1,000,000 items x 64 d
    python bench/synthetic_catalogue.py --items 20000 --users 2000   # a quick small one
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

AS_OF = dt.datetime(2020, 9, 22)
LATENT = 16


def synthesise(n_items: int, n_users: int, dim: int, clusters: int, seed: int) -> dict[str, object]:
    """Item and user tower vectors, a catalogue and purchases (see the module docstring)."""
    rng = np.random.default_rng(seed)
    # Low intrinsic dimension, like trained embeddings (isotropic 64-d clusters are a far harder and
    # unrealistic ANN problem): cluster centres in a LATENT-d space, items = centre + noise there,
    # mapped linearly to ``dim`` with a small isotropic residual.
    projection = (rng.normal(size=(LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)
    centres = rng.normal(size=(clusters, LATENT)).astype(np.float32)
    # Cluster sizes are uneven (a few large product types, many small ones).
    size_weights = rng.pareto(1.5, clusters) + 1.0
    item_cluster = rng.choice(clusters, size=n_items, p=size_weights / size_weights.sum())
    items = np.empty((n_items, dim), dtype=np.float32)
    for start in range(0, n_items, 200_000):
        part = slice(start, min(start + 200_000, n_items))
        z = centres[item_cluster[part]] + rng.normal(size=(part.stop - start, LATENT)).astype(np.float32) * np.float32(0.5)
        items[part] = z @ projection + rng.normal(size=(part.stop - start, dim)).astype(np.float32) * np.float32(0.3 / np.sqrt(dim))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    items *= rng.lognormal(0.17, 0.09, size=(n_items, 1)).astype(np.float32)  # norms ~1.19 +- 0.11, as the H&M tower's
    popularity = 1.0 / (1.0 + rng.permutation(n_items)) ** 1.1  # Zipf over a random item order

    # Users: 1-3 favourite clusters; ~6 purchases each (geometric, 1..60) spread over 30 days.
    n_fav = rng.integers(1, 4, size=n_users)
    fav = rng.choice(clusters, size=(n_users, 3), p=size_weights / size_weights.sum())
    length = np.minimum(rng.geometric(1 / 6, size=n_users), 60)
    user_of = np.repeat(np.arange(n_users), length)
    chosen = fav[user_of, rng.integers(0, 3, size=len(user_of)) % n_fav[user_of]]
    # An item of the chosen cluster, drawn by popularity: items sorted by cluster, cumulative
    # popularity, a uniform draw inside the cluster's span.
    order = np.argsort(item_cluster, kind="stable")
    cum = np.cumsum(popularity[order])
    starts = np.searchsorted(item_cluster[order], np.arange(clusters), "left")
    ends = np.searchsorted(item_cluster[order], np.arange(clusters), "right")
    lo = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    hi = cum[np.maximum(ends - 1, 0)]
    empty = ends[chosen] == starts[chosen]
    draw = lo[chosen] + rng.random(len(chosen)) * (hi[chosen] - lo[chosen])
    bought = order[np.clip(np.searchsorted(cum, draw, "right"), starts[chosen], np.maximum(ends[chosen] - 1, starts[chosen]))]
    bought = np.where(empty, rng.integers(0, n_items, len(chosen)), bought)
    seconds = rng.integers(1, 30 * 86400, size=len(user_of))
    user_latent = np.stack([centres[fav[:, j]] for j in range(3)], axis=1)
    mask = (np.arange(3)[None, :] < n_fav[:, None]).astype(np.float32)[:, :, None]
    user_z = (user_latent * mask).sum(axis=1) / mask.sum(axis=1) + rng.normal(size=(n_users, LATENT)).astype(np.float32) * np.float32(0.5)
    user_vectors = user_z @ projection
    user_vectors *= np.float32(2.0) / np.linalg.norm(user_vectors, axis=1, keepdims=True)  # the H&M tower's users have norm 2

    item_ids = np.char.add("s", np.char.zfill(np.arange(n_items).astype(str), 7))
    user_ids = np.char.add("u", np.char.zfill(np.arange(n_users).astype(str), 7))
    interactions = pl.DataFrame(
        {
            "user_id": user_ids[user_of],
            "item_id": item_ids[bought],
            "timestamp": (np.datetime64(AS_OF, "us") - seconds.astype("timedelta64[s]")).astype("datetime64[us]"),
            "weight": np.ones(len(user_of), dtype=np.float32),
        }
    ).sort("timestamp", maintain_order=True)
    catalogue = pl.DataFrame({"item_id": item_ids, "prod_name": np.char.add("Synthetic item ", np.arange(n_items).astype(str)), "product_type_name": np.char.add("type-", item_cluster.astype(str))})
    return {"items": items, "user_vectors": user_vectors.astype(np.float32), "item_ids": item_ids, "user_ids": user_ids, "interactions": interactions, "catalogue": catalogue}


DEFAULT_SWEEPS = {"ivf": "32,64,128,192,256", "hnsw": "150,256,512,1024"}


def recall_sweep(index, exact: np.ndarray, queries: np.ndarray, breadths: list[int], k: int, list_k: int) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    """ANN recall@k vs the exact top-k rows, and single-query latency for a ``list_k`` list, per search breadth (1 thread).

    Args:
        index: an approximate :class:`~recsys.index.faiss_index.ItemIndex`.
        exact: exact top-k rows per query.
        queries: query vectors.
        breadths: IVF ``nprobe`` or HNSW ``efSearch`` values.
        k: the recall cut-off.
        list_k: the list length a served request asks for (latency is timed for it).
    """
    import faiss

    faiss.omp_set_num_threads(1)
    out = []
    for breadth in breadths:
        lat = []
        hits = []
        for i in range(len(queries)):
            index.set_breadth(breadth)  # an HNSW search widens efSearch to the list length; keep the swept value
            t = time.perf_counter()
            rows, _ = index.search(queries[i : i + 1], list_k)
            lat.append(time.perf_counter() - t)
            top = set(rows[0][:k].tolist())
            hits.append(len(top & set(exact[i].tolist())) / k)
        ms = np.asarray(lat) * 1000
        effective = max(breadth, list_k) if index.kind == "hnsw" else breadth
        row = {"breadth": breadth, "effective": effective, "recall_at_k": round(float(np.mean(hits)), 4),
               "p50_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}
        print(f"  {index.kind} {row}", flush=True)
        out.append(row)
    return out


def build_and_sweep(kind: str, item_ids: np.ndarray, items: np.ndarray, exact: np.ndarray, queries: np.ndarray, index_config, sweep: str, list_k: int):  # type: ignore[no-untyped-def]
    """Build one index kind over ``items`` and sweep its breadth; returns (index, summary)."""
    import tempfile

    from recsys.index.faiss_index import ItemIndex

    config = index_config.model_copy(update={"ann": kind})
    t = time.perf_counter()
    index = ItemIndex.build(item_ids, items, config, threads=2)
    build_s = time.perf_counter() - t
    params = f"M={config.hnsw_m}, efConstruction={config.ef_construction}" if index.kind == "hnsw" else f"{index.index.nlist} cells" if index.kind == "ivf" else "exact"
    print(f"  {index.kind} build ({params}, 2 threads): {build_s:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        saved = index.save(Path(tmp) / "index")
        size = sum(p.stat().st_size for p in saved.iterdir())
    rows = recall_sweep(index, exact, queries, [int(b) for b in sweep.split(",")], 100, list_k)
    return index, {"kind": index.kind, "params": params, "build_s": round(build_s, 1), "index_bytes": size, "recall_sweep": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64, help="item-tower dimension (the trained tower's output_dim is 64)")
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="configs/hm.yaml", help="index and candidate settings come from here")
    parser.add_argument("--ann", choices=["ivf", "hnsw"], default="ivf", help="the served approximate index")
    parser.add_argument("--sweep", help=f"search breadths to measure (IVF nprobe / HNSW efSearch); default {DEFAULT_SWEEPS}")
    parser.add_argument("--compare", default="", help="other index kinds to build and sweep on the same vectors (reported, not served), e.g. hnsw")
    parser.add_argument("--compare-sweep", help="breadths for the --compare kinds (default per kind)")
    parser.add_argument("--queries", type=int, default=1000, help="user vectors for the recall measurement")
    parser.add_argument("--target-recall", type=float, default=0.98, help="serve with the smallest swept breadth reaching this recall@100")
    parser.add_argument("--root", type=Path, default=ROOT / "artifacts" / "bench" / "synthetic_bundles")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "synthetic_index.json")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--exact-max-items", type=int, help="override the config's exact/approximate threshold (tests build tiny bundles)")
    args = parser.parse_args(argv)

    from recsys.config import load_config
    from recsys.data.interactions import TrainingData
    from recsys.models.history import HistoryRecommender
    from recsys.bundle import load_bundle, set_latest, write_bundle

    config = load_config(ROOT / args.config)
    index_config = config.retrieval.index.model_copy(update={"ann": args.ann})
    if args.exact_max_items is not None:
        index_config = index_config.model_copy(update={"exact_max_items": args.exact_max_items})
    sweep = args.sweep or DEFAULT_SWEEPS[args.ann]
    compare = [k.strip() for k in args.compare.split(",") if k.strip() and k.strip() != args.ann]
    candidates = config.retrieval.candidates.model_copy(update={"sources": ["history", "two_tower", "popularity"], "weights": {}})
    settings = {"n_items": args.items, "n_users": args.users, "dim": args.dim, "clusters": args.clusters, "seed": args.seed,
                "index": index_config.model_dump(), "sweep": sweep, "compare": compare, "compare_sweep": args.compare_sweep,
                "target_recall": args.target_recall, "queries": args.queries, "latent": LATENT, "format": 3}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    version = f"synthetic-{args.items // 1000}k-{key}"
    if (args.root / version).is_dir() and args.rebuild:
        import shutil

        shutil.rmtree(args.root / version)
    if (args.root / version).is_dir():
        bundle = load_bundle(args.root, version)
        set_latest(args.root, version)
        print(f"reusing {bundle.path} (same settings); --rebuild to make it again")
        return 0

    t0 = time.perf_counter()
    print(f"synthesising {args.items:,} items x {args.dim} d, {args.users:,} users", flush=True)
    syn = synthesise(args.items, args.users, args.dim, args.clusters, args.seed)
    t_syn = time.perf_counter() - t0
    interactions: pl.DataFrame = syn["interactions"]  # type: ignore[assignment]
    data = TrainingData.build(interactions, syn["catalogue"], None, as_of=AS_OF)  # type: ignore[arg-type]
    history = HistoryRecommender(candidates.popularity_days).fit(data)
    # Users in the history model's order (first-seen); users who bought nothing are left out.
    rows = data.user_index.lookup(syn["user_ids"].tolist())  # type: ignore[union-attr]
    user_vectors = np.zeros((len(data.user_index), args.dim), dtype=np.float32)
    user_vectors[rows[rows >= 0]] = syn["user_vectors"][rows >= 0]  # type: ignore[index]
    counts = np.diff(data.user_items.indptr)
    sample_users = data.user_index.ids[np.argsort(-counts, kind="stable")[:24]]
    print(f"  synthetic data {t_syn:.1f} s; {interactions.height:,} purchases; history fitted {time.perf_counter() - t0:.1f} s", flush=True)

    items: np.ndarray = syn["items"]  # type: ignore[assignment]
    rng = np.random.default_rng(args.seed + 1)
    queries = user_vectors[rng.choice(len(user_vectors), size=min(args.queries, len(user_vectors)), replace=False)]
    import faiss

    from recsys.index.faiss_index import exact_top_k

    faiss.omp_set_num_threads(2)
    t = time.perf_counter()
    exact = exact_top_k(queries, items, 100)
    print(f"  exact top-100 for {len(queries)} queries: {time.perf_counter() - t:.1f} s", flush=True)
    index, served_summary = build_and_sweep(args.ann, syn["item_ids"], items, exact, queries, index_config, sweep, candidates.per_source)  # type: ignore[arg-type]
    compared = [build_and_sweep(kind, syn["item_ids"], items, exact, queries, index_config, args.compare_sweep or DEFAULT_SWEEPS[kind], candidates.per_source)[1]  # type: ignore[arg-type]
                for kind in compare]
    sweep_rows = served_summary["recall_sweep"]
    good = [r for r in sweep_rows if r["recall_at_k"] >= args.target_recall]
    chosen = int(good[0]["breadth"]) if good else int(sweep_rows[-1]["breadth"])
    index.set_breadth(chosen)
    served = index_config.with_breadth(index.kind, chosen)
    build_s = served_summary["build_s"]

    def populate(tmp: Path) -> None:
        index.save(tmp / "index")
        history.save(tmp / "history")
        np.savez(tmp / "users.npz", user_vectors=user_vectors, sample_users=sample_users.astype(str))
        syn["catalogue"].write_parquet(tmp / "items.parquet")  # type: ignore[union-attr]

    info = {
        "service": "synthetic",
        "as_of": AS_OF.isoformat(),
        "synthetic": {**settings, "candidates": candidates.model_dump(), "index": served.model_dump(), "recall_sweep": sweep_rows, "build_s": build_s},
    }
    bundle = write_bundle(args.root, populate, info, version=version)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "bundle": str(bundle.path.relative_to(ROOT)) if bundle.path.is_relative_to(ROOT) else str(bundle.path),
        "settings": settings,
        "load_average_start": round(os.getloadavg()[0], 2),
        "purchases": interactions.height,
        "users_with_history": len(data.user_index),
        "index_kind": index.kind,
        "served": served_summary,
        "compared": compared,
        "recall_k": 100,
        "list_k": candidates.per_source,
        "serving_breadth": chosen,
        "serving_recall_at_100": next(r["recall_at_k"] for r in sweep_rows if r["breadth"] == chosen),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"bundle {bundle.path} ({time.perf_counter() - t0:.0f} s in all)")
    return 0


BREADTH = {"ivf": "nprobe", "hnsw": "efSearch"}


def markdown(r: dict[str, object]) -> str:
    s = r["settings"]  # type: ignore[index]
    lines = [
        f"Synthetic catalogue, {r['date']}: {s['n_items']:,} items x {s['dim']} d (synthetic two-tower vectors, {s['clusters']:,} clusters), "  # type: ignore[index]
        f"{r['users_with_history']:,} users, {r['purchases']:,} purchases; recall@{r['recall_k']} vs exact inner product over {s['queries']:,} "  # type: ignore[index]
        f"user vectors, latency of one query for a list of {r['list_k']} on 1 thread.",
        "",
        "| index | build s (2 threads) | MiB on disk | breadth | recall@100 vs exact | 1-query p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for summary in [r["served"], *r["compared"]]:  # type: ignore[list-item]
        for row in summary["recall_sweep"]:
            served = summary is r["served"] and row["breadth"] == r["serving_breadth"]
            lines.append(
                f"| {summary['kind'].upper()} ({summary['params']}) | {summary['build_s']} | {summary['index_bytes'] / 2**20:,.0f} | "
                f"{BREADTH.get(summary['kind'], 'breadth')} {row['breadth']}{' **(served)**' if served else ''} | {row['recall_at_k']:.3f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
