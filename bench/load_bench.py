"""Load benchmark of the HTTP API on loopback: p50/p99 latency, sustained QPS, errors, server memory.

Starts the real server (``recsys serve``, one uvicorn worker per core by default) on a bundle,
then drives it with a small asyncio HTTP/1.1 client over keep-alive connections (cheap enough
per request that the client does not eat the cores it is measuring). Two modes per endpoint:

- ``closed``: C connections each send the next request as soon as the last one answered
  -> the sustained throughput (QPS) and its latencies;
- ``open``: requests are *scheduled* at a fixed rate and latency is measured from the scheduled
  time, so queueing delay counts (no coordinated omission) -> p99 at a target QPS.

Usage::

    python bench/load_bench.py                       # latest bundle, else the dev bundle
    python bench/load_bench.py --bundle artifacts/bundles --duration 20 --rates 400

Results go to ``bench/results/serving.json`` and ``bench/results/serving.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import psutil
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report_files import http_share  # noqa: E402
from tests.e2e.live import run_server  # noqa: E402  (the server helper the e2e tests and screenshots use)

T = TypeVar("T")


@dataclass
class Run:
    """One load run's outcome."""

    endpoint: str
    mode: str
    load: float  # connections (closed) or target requests/s (open)
    seconds: float
    requests: int
    errors: int
    qps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_ms: float = float("nan")  # server CPU (all workers) per answered request
    client_cpu_ms: float = float("nan")  # this load generator's CPU per answered request
    busiest_worker_share: float = float("nan")  # the busiest worker's part of all workers' CPU (0.5 = even on 2)


def http_request(path: str, body: dict[str, object], port: int) -> bytes:
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


class _ResponseReader(asyncio.Protocol):
    """Collects one HTTP/1.1 response at a time (status and Content-Length body) from a keep-alive connection.

    A protocol rather than ``asyncio`` streams: the load generator shares the server's cores, and
    parsing in ``data_received`` costs a fraction of a ``readline()`` per header line.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        waiter.set_result(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))


class Connection:
    """One keep-alive HTTP/1.1 connection; reads responses by Content-Length (the API always sends it).

    uvicorn closes a connection idle for 5 s; one idle for ``max_idle_s`` is reopened before use, so
    the client never sends into a connection the server has already closed.
    """

    def __init__(self, port: int, max_idle_s: float = 3.0):
        self.port = port
        self.max_idle_s = max_idle_s
        self.protocol: _ResponseReader | None = None
        self.last_used = 0.0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.protocol = await loop.create_connection(_ResponseReader, "127.0.0.1", self.port)
        self.last_used = time.perf_counter()

    async def send(self, request: bytes) -> int:
        if self.protocol is not None and (self.protocol.lost or time.perf_counter() - self.last_used > self.max_idle_s):
            await self.close()
        if self.protocol is None:
            await self.open()
        assert self.protocol is not None and self.protocol.transport is not None
        self.protocol.waiter = asyncio.get_running_loop().create_future()
        self.protocol.transport.write(request)
        status = await self.protocol.waiter
        self.last_used = time.perf_counter()
        return status

    async def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
        self.protocol = None


async def closed_loop(requests: list[bytes], port: int, connections: int, seconds: float) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def user(n: int) -> None:
        nonlocal errors
        conn = Connection(port)
        i = n
        try:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    status = await conn.send(requests[i % len(requests)])
                except (OSError, ConnectionError, asyncio.IncompleteReadError):
                    errors += 1
                    await conn.close()
                    conn = Connection(port)
                    continue
                latencies.append(time.perf_counter() - start)
                errors += status != 200
                i += connections
        finally:
            await conn.close()

    begin = time.perf_counter()
    await asyncio.gather(*(user(n) for n in range(connections)))
    return latencies, errors, time.perf_counter() - begin


async def open_loop(requests: list[bytes], port: int, rate: float, seconds: float, max_connections: int = 64, fifo: bool = True) -> tuple[list[float], int, float]:
    """Send at ``rate`` per second on a pool of connections; latency counts from the scheduled send time.

    The connections are opened before the clock starts and used round-robin (``fifo``): each keep-alive
    connection is pinned to the uvicorn worker that accepted it, so reusing only the most recently used
    one (LIFO) sent most requests to one worker while the other idled. A request waiting for a free
    connection counts as queueing (its latency still runs from the scheduled time).
    """
    pool: asyncio.Queue[Connection] = asyncio.Queue() if fifo else asyncio.LifoQueue()
    max_connections = min(max_connections, max(8, int(rate / 2)))  # each one busy often enough not to idle out (uvicorn: 5 s)
    conns = [Connection(port) for _ in range(max_connections)]
    for c in conns:
        await c.open()
        pool.put_nowait(c)
    latencies: list[float] = []
    errors = 0
    tasks = []
    begin = time.perf_counter()
    total = int(rate * seconds)

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            status = await conn.send(requests[i % len(requests)])
            latencies.append(time.perf_counter() - scheduled)
            errors += status != 200
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            errors += 1
            await conn.close()
            conn = Connection(port)
        finally:
            pool.put_nowait(conn)

    for i in range(total):
        scheduled = begin + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - begin
    while not pool.empty():
        await pool.get_nowait().close()
    return latencies, errors, elapsed


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh uvloop event loop (the server runs on uvloop too).

    The generator shares the server's two cores; the stock asyncio loop spent more of them per
    request on its timers and wake-ups.
    """
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def summarise(endpoint: str, mode: str, load: float, latencies: list[float], errors: int, elapsed: float) -> Run:
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    p = np.percentile(ms, [50, 90, 99])
    return Run(endpoint, mode, load, round(elapsed, 1), len(latencies), errors, round(len(latencies) / elapsed, 1),
               round(float(p[0]), 2), round(float(p[1]), 2), round(float(p[2]), 2), round(float(ms.max()), 2))


def cpu_by_process(pid: int) -> dict[int, float]:
    """User + system CPU seconds of a process and of each of its children (the uvicorn workers), by pid."""
    out: dict[int, float] = {}
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
    except psutil.NoSuchProcess:
        pass
    return out


def busiest_share(before: dict[int, float], after: dict[int, float], supervisor: int) -> float:
    """The busiest worker's share of the workers' CPU between two samples (NaN with fewer than 2 workers).

    The kernel spreads connections over the workers' sockets by a hash, so one worker can get more
    than its share for a whole run; this number says how uneven a run was.
    """
    spent = [after[p] - before.get(p, 0.0) for p in after if p != supervisor]
    total = sum(spent)
    return round(max(spent) / total, 3) if len(spent) > 1 and total > 0 else float("nan")


def measured(run, pid: int, endpoint: str, mode: str, load: float) -> Run:  # type: ignore[no-untyped-def]
    """Run one load (a coroutine factory) and summarise it with the server's and the client's CPU per request."""
    server0, client0 = cpu_by_process(pid), time.process_time()
    lat, err, elapsed = run_loop(run())
    server1, client = cpu_by_process(pid), time.process_time() - client0
    server = sum(server1.values()) - sum(server0.get(p, 0.0) for p in server1) if server1 else float("nan")  # {}: the server is gone
    out = summarise(endpoint, mode, load, lat, err, elapsed)
    n = max(len(lat), 1)
    out.server_cpu_ms, out.client_cpu_ms = round(server / n * 1000, 2), round(client / n * 1000, 2)
    out.busiest_worker_share = busiest_share(server0, server1, pid)
    return out


def server_memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of the server and its worker processes, summed, in MB.

    RSS counts a page shared by the supervisor and its forked workers once per process; PSS splits
    it among them, so the PSS sum is what the server costs the machine.
    """
    try:
        proc = psutil.Process(pid)
        procs = [p for p in (proc, *proc.children(recursive=True)) if p.is_running()]
        rss = sum(p.memory_info().rss for p in procs)
        pss = sum(p.memory_full_info().pss for p in procs)
        return round(rss / 2**20, 1), round(pss / 2**20, 1)
    except psutil.NoSuchProcess:
        return float("nan"), float("nan")


def settle(below: float, max_s: float) -> float:
    """Wait until the 1-min load average is below ``below`` (at most ``max_s``); returns the seconds waited.

    The runs before (a training stage, the previous benchmark's server, a 1M-item index build) leave
    the machine busy for a minute or two, and a run started then measures them as much as the server.
    """
    start = time.monotonic()
    if below > 0:
        while os.getloadavg()[0] >= below and time.monotonic() - start < max_s:
            time.sleep(2.0)
    waited = round(time.monotonic() - start, 1)
    if waited >= 2:
        print(f"waited {waited:.0f} s for the load average to settle (now {os.getloadavg()[0]:.2f})", flush=True)
    return waited


def random_customers(bundle: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` customers drawn uniformly (fixed seed) from those with history in a trained bundle.

    Raises:
        SystemExit: the bundle has no ``data/history.parquet`` (not a trained bundle).
    """
    import polars as pl

    from recsys.bundle import MANIFEST, resolve_bundle

    path = bundle if (bundle / MANIFEST).is_file() else resolve_bundle(bundle)
    history = path / "data" / "history.parquet"
    if not history.is_file():
        raise SystemExit(f"--users random: {history} not found (only trained bundles carry their customers' history)")
    ids = pl.read_parquet(history, columns=["user_id"])["user_id"].unique().sort().to_list()
    picked = np.random.default_rng(seed).choice(len(ids), size=min(n, len(ids)), replace=False)
    return [ids[i] for i in picked]


def default_bundle(config_path: str) -> Path:
    """The config's bundles folder, trained first when it has no ``latest`` pointer."""
    from recsys.config import load_config
    from training.cli import ensure_bundle

    return ensure_bundle(load_config(ROOT / config_path))


def bodies(users: list[str], candidates_k: int, n_candidates: int) -> dict[str, list[dict[str, object]]]:
    """The request bodies of each endpoint, one per user (the HTTP runs and the in-process pass share them)."""
    return {
        "/v1/candidates": [{"user_id": u, "k": candidates_k} for u in users],
        "/v1/recommendations": [{"user_id": u, "k": 12, "n_candidates": n_candidates, "details": False} for u in users],
    }


def workloads(port: int, users: list[str], candidates_k: int, n_candidates: int) -> dict[str, list[bytes]]:
    return {endpoint: [http_request(endpoint, b, port) for b in body_list] for endpoint, body_list in bodies(users, candidates_k, n_candidates).items()}


def in_process_cpu(bundle: Path, work: dict[str, list[dict[str, object]]], threads: int, repeat: int = 2) -> dict[str, dict[str, float]]:
    """CPU per request of the same requests answered in this process, without HTTP: the app's share.

    Loads the bundle as a server worker does (``threads`` CPU threads, as each of the workers
    gets) and answers every request body of the run through the same validation and payload
    builders the server's fast path calls (``serving.app``), timing thread CPU per request.

    Args:
        bundle: the bundle (or bundles folder) the server ran.
        work: endpoint -> the request bodies of the run.
        threads: CPU threads per request (``RECSYS_SERVE_THREADS`` of each worker).
        repeat: passes over the bodies (the first warms caches and pages; the last is timed).

    Returns:
        endpoint -> {"mean_ms", "p50_ms", "p99_ms", "service_mean_ms"} (the last: the service call
        alone, without request validation and JSON).
    """
    os.environ["RECSYS_SERVE_THREADS"] = str(threads)
    from serving import schemas
    from serving.app import _candidates_response, _query, _recommendations_response
    from serving.reload import load_service

    service = load_service(bundle)
    answers: dict[str, tuple[Any, Any, Any]] = {
        "/v1/candidates": (schemas.CandidatesRequest, _candidates_response, lambda b: service.candidates(_query(b))),
        "/v1/recommendations": (schemas.RecommendationsRequest, _recommendations_response, lambda b: service.recommendations(_query(b), b.n_candidates)),
    }
    out: dict[str, dict[str, float]] = {}
    for endpoint, bodies in work.items():
        model, answer, call = answers[endpoint]
        payloads = [json.dumps(b).encode() for b in bodies]
        for _ in range(repeat):
            whole, alone = [], []
            for payload in payloads:
                start = time.thread_time()
                body = model.model_validate(json.loads(payload))
                answer(service, body)
                whole.append(time.thread_time() - start)
                start = time.thread_time()
                call(body)
                alone.append(time.thread_time() - start)
        ms = np.asarray(whole) * 1000
        out[endpoint] = {"mean_ms": float(ms.mean()), "p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "service_mean_ms": float(np.mean(alone) * 1000)}
    return out


def markdown(result: dict[str, object]) -> str:
    lines = [
        f"Serving benchmark, {result['date']} — bundle `{result['bundle_version']}` ({result['catalogue_note']}), "
        f"{result['workers']} uvicorn worker(s) on {result['cpus']} cores, load average at start {result['load_average_start']}.",
        "",
        "| endpoint | mode | load | requests | errors | QPS | p50 ms | p90 ms | p99 ms | server CPU ms/req | client CPU ms/req | busiest worker |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:  # type: ignore[attr-defined]
        load = f"{int(r['load'])} conn." if r["mode"] == "closed" else f"{int(r['load'])} req/s"
        lines.append(f"| `{r['endpoint']}` | {r['mode']} | {load} | {r['requests']:,} | {r['errors']} | {r['qps']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r.get('server_cpu_ms', float('nan')):.2f} | {r.get('client_cpu_ms', float('nan')):.2f} | {r.get('busiest_worker_share', float('nan')):.0%} |")
    lines.append("")
    in_process: dict[str, dict[str, float]] = result.get("in_process") or {}  # type: ignore[assignment]
    for endpoint, v in in_process.items():
        if (line := http_share(endpoint, v, result["runs"])) is not None:  # type: ignore[arg-type]
            lines.append(line)
    lines.append("")
    if "server_pss_mb" in result:
        lines.append(
            f"Server memory after the runs, supervisor and workers: {result['server_pss_mb']} MB PSS (shared pages split among the "
            f"processes sharing them: what the machine gives), {result['server_rss_mb']} MB RSS summed (shared pages counted in every process)."
        )
    else:
        lines.append(f"Server memory (all workers, RSS): {result['server_rss_mb']} MB after the runs.")
    return "\n".join(lines) + "\n"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM would end the process without running `finally`, leaving the server (its own session)
    # and its workers running and skewing the next benchmark; as SystemExit the server is stopped.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/hm.yaml")
    parser.add_argument("--bundle", type=Path, help="bundle or bundles folder (default: trained bundles, else the dev bundle)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--connections", type=int, default=16, help="closed-loop connections")
    parser.add_argument("--rates", default="400", help="open-loop rates for /v1/candidates (comma-separated)")
    parser.add_argument("--recommend-rates", default="100", help="open-loop rates for /v1/recommendations")
    parser.add_argument("--repeat", type=int, default=1, help="runs at each fixed (--rates / --recommend-rates) rate: a p99 of one run is noisy here")
    parser.add_argument("--candidates-k", type=int, default=100)
    parser.add_argument("--n-candidates", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    parser.add_argument("--note", default="H&M sample", help="what the catalogue is (goes into the table caption)")
    parser.add_argument("--endpoints", default="/v1/candidates,/v1/recommendations", help="which endpoints to drive (comma-separated)")
    parser.add_argument("--visitors", type=int, default=8, help="unknown ids among the requests (the cheap popularity path)")
    parser.add_argument("--auto-rates", default="", help="extra open-loop rates as fractions of the closed-loop QPS, e.g. 0.5,0.8")
    parser.add_argument("--user-template", default="", help="draw --user-count ids from this format instead of /v1/users/sample, e.g. u{:07d}")
    parser.add_argument("--user-count", type=int, default=0, help="ids 0..N-1 for --user-template")
    parser.add_argument("--users", choices=["heaviest", "random"], default="heaviest",
                        help="customers to request for: the 24 with the most purchases (/v1/users/sample: the costliest requests) "
                        "or --sample drawn at random from the bundle's customers with history (typical traffic)")
    parser.add_argument("--sample", type=int, default=1000, help="how many ids to draw with --user-template or --users random")
    parser.add_argument("--no-in-process", dest="in_process", action="store_false",
                        help="skip answering the same requests in this process afterwards (the HTTP layer's share)")
    parser.add_argument("--settle-load", type=float, default=1.0, help="wait for the 1-min load average to fall below this first (0: do not wait)")
    parser.add_argument("--settle-max-s", type=float, default=180.0, help="longest wait for --settle-load")
    parser.add_argument("--ready-timeout-s", type=float, default=300.0, help="longest wait for the server to load the bundle (a 100x bundle takes minutes)")
    args = parser.parse_args(argv)

    bundle = args.bundle or default_bundle(args.config)
    log = ROOT / "artifacts" / "bench" / "serving_server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    settled_s = settle(args.settle_load, args.settle_max_s)
    load_start = round(os.getloadavg()[0], 2)
    with run_server(bundle, log, workers=args.workers, ready_timeout_s=args.ready_timeout_s) as server:
        process = server.process
        port = int(server.url.rsplit(":", 1)[1])
        base = server.url
        version = httpx.get(f"{base}/ready").json()["model_version"]
        if args.user_template:
            rng = np.random.default_rng(0)
            users = [args.user_template.format(int(i)) for i in rng.choice(args.user_count, size=min(args.sample, args.user_count), replace=False)]
        elif args.users == "random":
            users = random_customers(bundle, args.sample)
        else:
            users = [u["user_id"] for u in httpx.get(f"{base}/v1/users/sample", params={"n": 24}, timeout=60).json()["users"]]
        users += [f"visitor-{i}" for i in range(args.visitors)]  # unknown ids: the popularity fallback path
        print(f"benchmarking bundle {version} with {args.workers} worker(s), {len(users)} users, {args.duration:.0f} s per run", flush=True)
        work = workloads(port, users, args.candidates_k, args.n_candidates)
        wanted = [e.strip() for e in args.endpoints.split(",") if e.strip()]
        runs: list[Run] = []
        for endpoint, requests in ((e, work[e]) for e in wanted):
            run_loop(closed_loop(requests, port, 4, 2.0))  # warm-up: imports, caches, connections
            runs.append(measured(lambda: closed_loop(requests, port, args.connections, args.duration), process.pid, endpoint, "closed", args.connections))
            print(runs[-1], flush=True)
            rates = args.rates if endpoint == "/v1/candidates" else args.recommend_rates
            fixed = [float(r) for r in rates.split(",") if r.strip()]
            auto = [float(round(runs[-1].qps * float(f))) for f in args.auto_rates.split(",") if f.strip()]
            for rate in sorted({r for r in fixed + auto if r > 0}):
                for _ in range(args.repeat if rate in fixed else 1):
                    runs.append(measured(lambda rate=rate: open_loop(requests, port, rate, args.duration), process.pid, endpoint, "open", rate))
                    print(runs[-1], flush=True)
        rss, pss = server_memory_mb(process.pid)
    in_process: dict[str, dict[str, float]] = {}
    if args.in_process:
        wanted_bodies = {e: b for e, b in bodies(users, args.candidates_k, args.n_candidates).items() if e in wanted}
        in_process = in_process_cpu(bundle, wanted_bodies, max(1, (os.cpu_count() or 1) // max(args.workers, 1)))
        for endpoint, v in in_process.items():
            print(f"in process {endpoint}: {v['mean_ms']:.2f} ms CPU per request ({v['service_mean_ms']:.2f} ms the service call alone)", flush=True)

    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "bundle": str(bundle),
        "bundle_version": version,
        "catalogue_note": args.note,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_average_start": load_start,
        "settle_wait_s": settled_s,
        "python": platform.python_version(),
        "client": "asyncio HTTP/1.1 keep-alive, same machine",
        "request_users": len(users) - args.visitors,
        "request_user_choice": "template" if args.user_template else args.users,
        "request_visitors": args.visitors,
        "candidates_k": args.candidates_k,
        "n_candidates": args.n_candidates,
        "server_rss_mb": rss,
        "server_pss_mb": pss,
        "in_process": in_process,
        "runs": [asdict(r) for r in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0 if all(r.errors == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
