"""Where a request's time goes: the service's stages, then the service call vs the whole HTTP app.

Loads a bundle's service once in this process (the trained :class:`serving.bundle_service.BundleService`
or the 1M-item synthetic catalogue's service), then calls ``candidates`` (k=100) and, with a
reranker, ``recommendations`` (200 candidates reranked) for sample customers and visitors, timing
each candidate source, the merge, the user state, the features and the reranker. ``--http N``
then sends N requests through the real ASGI app in-process (no sockets: uvicorn's own HTTP parsing
is not included) and prints CPU per request for the service call alone and for the whole app
(routing, validation, JSON), so the HTTP layer's share is a number.

Usage::

    python bench/profile_service.py --bundle artifacts/bundles [--cprofile 30] [--http 500]
    python bench/profile_service.py --bundle artifacts/bench/synthetic_bundles --users 500 --http 1000
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
os.environ.setdefault("OMP_NUM_THREADS", "1")  # as each of the server's 2 workers on 2 cores (serving/server.py)
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


def http_share(service, path: str, call, body, users: list[str], n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """CPU ms per request of the service call alone and of the whole ASGI app (same users, in-process)."""
    import asyncio
    import json

    from serving.app import create_app

    app = create_app(service)
    payloads = [json.dumps(body(u)).encode() for u in users]

    async def one(payload: bytes) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
                 "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
                 "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]}
        messages = [{"type": "http.request", "body": payload, "more_body": False}]

        async def receive():  # type: ignore[no-untyped-def]
            return messages.pop() if messages else {"type": "http.disconnect"}

        sent: list[dict] = []  # type: ignore[type-arg]

        async def send(message):  # type: ignore[no-untyped-def]
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    async def run() -> float:
        for p in payloads[:5]:
            await one(p)
        start = time.process_time()
        for i in range(n):
            await one(payloads[i % len(payloads)])
        return (time.process_time() - start) / n * 1000

    start = time.process_time()
    for i in range(n):
        call(users[i % len(users)])
    service_ms = (time.process_time() - start) / n * 1000
    return service_ms, asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "bundles")
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cprofile", type=int, default=0, help="cProfile this many recommendation calls and print the top functions")
    parser.add_argument("--http", type=int, default=0, help="requests per endpoint through the in-process ASGI app (CPU per request)")
    args = parser.parse_args(argv)
    os.environ.setdefault("RECSYS_SERVE_THREADS", "1")  # what each of the 2 workers on 2 cores gets

    from serving.reload import load_service
    from recsys.query import Query

    t = time.perf_counter()
    service = load_service(args.bundle)
    synthetic = not hasattr(service, "engine")
    engine = None if synthetic else service.engine
    gen = service.generator if synthetic else engine.generator
    rng = np.random.default_rng(0)  # customers at random: the page's sample favours long histories
    n_users = len(gen.history.user_index)
    users = gen.history.user_index.ids[rng.choice(n_users, size=min(args.users, n_users), replace=False)].tolist()
    print(f"load: {time.perf_counter() - t:.1f} s ({len(gen.history.item_index):,} items)", flush=True)
    endpoints = [("candidates k=100", "/v1/candidates", lambda u: service.candidates(Query(user_id=u, k=100)), lambda u: {"user_id": u, "k": 100})]
    if not synthetic:
        endpoints.append(("recommendations 200", "/v1/recommendations", lambda u: service.recommendations(Query(user_id=u, k=12), 200),
                          lambda u: {"user_id": u, "k": 12, "n_candidates": 200, "details": False}))
    rows = []
    for name, _, fn, _ in endpoints:
        for u in users[:2]:
            fn(u)  # warm
        per = [timed(lambda u=u: fn(u), args.repeat)[0] for u in users]
        rows.append((name, np.median(per), np.percentile(per, 99)))
        vis = [timed(lambda i=i: fn(f"visitor-{i}"), args.repeat)[0] for i in range(4)]
        rows.append((name + " (visitor)", np.median(vis), np.max(vis)))
    for name, p50, p99 in rows:
        print(f"{name:32s} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
    if args.http:
        for name, path, fn, body in endpoints:
            service_ms, app_ms = http_share(service, path, fn, body, users, args.http)
            print(f"{name:32s} CPU per request: service {service_ms:6.2f} ms, whole app {app_ms:6.2f} ms (HTTP layer {app_ms - service_ms:5.2f} ms)")
    if synthetic:
        stage: dict[str, list[float]] = {}
        for u in users:
            gen.source_lists([u])
            for s, v in gen.timings.items():
                stage.setdefault(f"source {s}", []).append(v * 1000)
        for s, v in stage.items():
            print(f"  {s:28s} median {np.median(v):7.2f} ms   max {np.max(v):7.2f} ms")
        return 0

    # Stage timers for known users.
    stage: dict[str, list[float]] = {}
    for u in users:
        gen.source_lists([u])
        for s, v in gen.timings.items():
            stage.setdefault(f"source {s}", []).append(v * 1000)
        query = Query(user_id=u, k=12)
        t = time.perf_counter()
        cands = engine._merged(query, 200)
        stage.setdefault("merged candidates (table or live)", []).append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        state = engine._state(query, None)
        stage.setdefault("user state", []).append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        x = engine._feature_matrix(state, cands)
        stage.setdefault("features", []).append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        scores = engine.ranker.predict(x, threads=engine.threads)
        stage.setdefault("ranker scores (200)", []).append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        engine.ranker.contributions(x[np.argsort(-scores, kind="stable")[:12]], threads=engine.threads)
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
