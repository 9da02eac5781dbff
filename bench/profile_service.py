"""Where a request's time goes inside the trained-bundle service (no HTTP): per-stage timers + cProfile.

Loads :class:`serving.bundle_service.BundleService` once in this process, then calls
``candidates`` (k=100) and ``recommendations`` (200 candidates reranked) for sample customers and
visitors, timing each candidate source, the merge, the user state, the features and the reranker.

Usage::

    python bench/profile_service.py --bundle artifacts/bundles [--cprofile 30]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    ms = np.asarray(out) * 1000
    return float(np.median(ms)), float(np.percentile(ms, 99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "bundles")
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cprofile", type=int, default=0, help="cProfile this many recommendation calls and print the top functions")
    args = parser.parse_args(argv)

    from serving.bundle_service import BundleService
    from serving.service import Query

    t = time.perf_counter()
    service = BundleService.load(args.bundle)
    print(f"load: {time.perf_counter() - t:.1f} s ({service.data.n_items:,} items)", flush=True)
    users = [u.user_id for u in service.sample_users(args.users)]
    gen = service.generator
    rows = []
    for name, fn in [
        ("candidates k=100", lambda u: service.candidates(Query(user_id=u, k=100))),
        ("recommendations 200", lambda u: service.recommendations(Query(user_id=u, k=12), 200)),
    ]:
        for u in users[:2]:
            fn(u)  # warm
        per = [timed(lambda u=u: fn(u), args.repeat)[0] for u in users]
        rows.append((name, np.median(per), np.percentile(per, 99)))
        vis = [timed(lambda i=i: fn(f"visitor-{i}"), args.repeat)[0] for i in range(4)]
        rows.append((name + " (visitor)", np.median(vis), np.max(vis)))
    for name, p50, p99 in rows:
        print(f"{name:32s} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")

    # Stage timers for known users.
    stage: dict[str, list[float]] = {}
    for u in users:
        gen.source_lists([u])
        for s, v in gen.timings.items():
            stage.setdefault(f"source {s}", []).append(v * 1000)
        lists = gen.source_lists([u])
        from recsys.candidates.merge import merge

        t = time.perf_counter()
        cands = merge(lists, [u], 200, gen.weights, gen.config.rrf_k)[u]
        stage.setdefault("merge", []).append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        state = service._state(u)
        stage.setdefault("user state", []).append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        x = service._features(state, cands)
        stage.setdefault("features", []).append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        scores = service.ranker.predict(x, threads=service.threads)
        stage.setdefault("ranker scores (200)", []).append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        service.ranker.contributions(x[np.argsort(-scores, kind="stable")[:12]], threads=service.threads)
        stage.setdefault("ranker contributions (top 12)", []).append((time.perf_counter() - t) * 1000)
    for s, v in stage.items():
        print(f"  {s:28s} median {np.median(v):7.2f} ms   max {np.max(v):7.2f} ms")

    if args.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        for i in range(args.cprofile):
            service.recommendations(Query(user_id=users[i % len(users)], k=12), 200)
            service.candidates(Query(user_id=users[i % len(users)], k=100))
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(45)
        print(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
