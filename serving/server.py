"""Run the HTTP server: uvicorn on 127.0.0.1, the latest bundle (or one named), N workers.

``recsys serve`` and ``make serve`` end up in :func:`serve`. Workers are separate processes, so the
settings travel in environment variables and every worker builds its app with
:func:`app_from_env` (uvicorn's factory mode) and loads the bundle itself.

With several workers each one listens on its own ``SO_REUSEPORT`` socket (:func:`_run_worker`),
bound only once its bundle is loaded and warm; the kernel spreads new connections over those
sockets by a hash of the connection. uvicorn's own multi-worker mode shares one listening socket,
and whichever worker won the accept race kept winning it: over 20 trials of 64 keep-alive
connections the busiest of 2 workers held 50-94% of them (median 78%), and at 400 req/s the
overloaded worker's queue, not the work, set the p99. With one socket per worker: 50-61%.
``/ready`` answers 200 only when every worker is listening.

The supervisor loads the bundle once and forks the workers from it, so they share its pages
(numpy arrays, FAISS indexes, polars buffers) instead of each holding a copy: at the 10x rung two
spawned workers held 12.7 GB between them. A worker that reloads a newer bundle (the ``latest``
watch, the admin endpoint) loads that one for itself; ``--no-shared-bundle`` spawns workers that
each load their own copy, as before.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from recsys.bundle import MANIFEST, resolve_bundle
from serving.app import admin_token_from_env, create_app
from serving.reload import ServiceHolder, load_service, warm_up
from serving.service import RecommendationService

log = logging.getLogger(__name__)

_ENV_BUNDLE = "RECSYS_SERVE_BUNDLE"
_ENV_ROOT = "RECSYS_SERVE_ROOT"
_ENV_WATCH = "RECSYS_SERVE_WATCH_S"
_ENV_READY_DIR = "RECSYS_SERVE_READY_DIR"  # one file per listening worker
_ENV_WORKERS = "RECSYS_SERVE_WORKERS"


@dataclass(frozen=True)
class ServeSettings:
    """Where the bundle is and how to run.

    Attributes:
        bundle: a bundle folder, or a bundles folder whose ``latest`` pointer is followed.
        host: bind address (loopback by default: the admin endpoint must not face a network).
        port: TCP port.
        workers: uvicorn worker processes (one per core for throughput).
        watch_s: poll ``latest`` this often and reload when it moves (0: off).
        log_level: uvicorn log level.
        shared_bundle: with several workers, load the bundle once in the supervisor and fork the
            workers from it (shared pages); False spawns workers that each load their own copy.
    """

    bundle: Path
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    watch_s: float = 0.0
    log_level: str = "info"
    shared_bundle: bool = True


# The supervisor's loaded service, inherited by the workers it forks (None: each worker loads its own).
_preloaded: RecommendationService | None = None


def locate(bundle: Path) -> tuple[Path, Path]:
    """(bundle folder, bundles root) for a bundle folder or a bundles folder.

    Raises:
        BundleError: nothing servable there (the message says to run ``make train``).
    """
    if (bundle / MANIFEST).is_file():
        return bundle, bundle.parent
    return resolve_bundle(bundle), bundle


def app_from_env() -> FastAPI:
    """The app of one worker: load the bundle named in the environment (uvicorn factory)."""

    bundle, root = Path(os.environ[_ENV_BUNDLE]), Path(os.environ[_ENV_ROOT])
    service = _preloaded
    if service is None:
        service = load_service(bundle)
        warm_up(service)  # before the first request, not during it
    holder = ServiceHolder(root, bundle_path=bundle, service=service)
    freeze_loaded_objects()
    holder.on_swap.append(lambda _version, _previous: freeze_loaded_objects())
    log.info("worker %d serving bundle %s%s", os.getpid(), holder.version, " (the supervisor's, shared)" if _preloaded is not None else "")
    return create_app(
        holder, watch_interval_s=float(os.environ.get(_ENV_WATCH, "0")), admin_token=admin_token_from_env(), workers_ready=all_workers_listening
    )


def all_workers_listening() -> bool:
    """Whether every worker of this server listens (always true for a single-process server)."""
    ready_dir = os.environ.get(_ENV_READY_DIR)
    if not ready_dir:
        return True
    try:
        return len(os.listdir(ready_dir)) >= int(os.environ.get(_ENV_WORKERS, "1"))
    except OSError:
        return False


def freeze_loaded_objects() -> None:
    """Move what is alive now (the loaded bundle) out of the cyclic garbage collector's reach.

    A bundle's objects live as long as it is served, yet every full collection traversed them:
    65 ms per collection on the 1M-item synthetic catalogue (its id lists hold a million strings),
    a stall of the worker that lands straight in the p99. ``gc.freeze`` leaves them to reference
    counting only; request garbage is collected as before.
    """
    gc.collect()
    gc.freeze()


def preload(bundle: Path) -> RecommendationService:
    """Load and warm the bundle in the supervisor, for the workers it forks to share.

    The loading runs in a thread of its own: OpenMP (GNU libgomp, under FAISS and OpenBLAS) is not
    fork-safe for a thread that has used a thread team, and every forked worker continues as the
    supervisor's main thread, whose event loop answers the cheap requests inline.

    Raises:
        BundleError, ReloadError: as :func:`load_service` and :func:`warm_up`.
    """
    result: list[RecommendationService] = []
    failure: list[BaseException] = []

    def load() -> None:
        try:
            service = load_service(bundle)
            warm_up(service)
            result.append(service)
        except BaseException as exc:  # handed to the main thread, which raises it
            failure.append(exc)

    start = time.perf_counter()
    loader = threading.Thread(target=load, name="recsys-preload")
    loader.start()
    loader.join()
    if failure:
        raise failure[0]
    freeze_loaded_objects()  # frozen before the fork: the workers' collections leave these pages alone
    log.info("loaded bundle %s in the supervisor in %.1f s; the workers share it", bundle, time.perf_counter() - start)
    return result[0]


def serve(settings: ServeSettings) -> None:
    """Resolve the bundle (fail fast with a clear message), then run uvicorn until stopped."""
    import uvicorn

    bundle, root = locate(settings.bundle)
    os.environ[_ENV_BUNDLE], os.environ[_ENV_ROOT] = str(bundle), str(root)
    os.environ[_ENV_WATCH] = str(settings.watch_s)
    # Cores per worker for LightGBM / FAISS threads: N workers with all-core thread pools each would
    # oversubscribe the CPU (and OpenMP's spinning threads burn what the other workers need).
    os.environ.setdefault("RECSYS_SERVE_THREADS", str(max(1, (os.cpu_count() or 1) // max(settings.workers, 1))))
    # The same for OpenMP's default team size: omp_set_num_threads() at load only binds the loading
    # thread, and requests run in worker threads, whose FAISS calls otherwise opened all-core
    # teams that spin-wait (measured: ~2-3 ms of CPU per H&M request on 2 cores).
    os.environ.setdefault("OMP_NUM_THREADS", os.environ["RECSYS_SERVE_THREADS"])
    metrics_dir = None
    if settings.workers > 1:
        # Prometheus values of all workers are summed through files in this folder.
        metrics_dir = tempfile.mkdtemp(prefix="recsys-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    print(f"serving {bundle} on http://{settings.host}:{settings.port}/ ({settings.workers} worker(s))", flush=True)
    try:
        if settings.workers > 1 and hasattr(socket, "SO_REUSEPORT") and settings.port != 0:
            _supervise(settings)
        else:
            uvicorn.run(**_uvicorn_options(settings), workers=settings.workers)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


_GRACEFUL_SHUTDOWN_S = 10


def _uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """What uvicorn runs, for ``uvicorn.run`` and each worker's ``uvicorn.Config`` alike."""
    return {
        "app": "serving.server:app_from_env",
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # per-request logs cost ~10% throughput; /metrics has the counts
        "timeout_graceful_shutdown": _GRACEFUL_SHUTDOWN_S,
    }


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket of this worker alone in the port's ``SO_REUSEPORT`` group."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _check_port_free(host: str, port: int) -> None:
    """Fail fast when something else listens on the port (a plain bind, no ``SO_REUSEPORT``).

    Without this, a second server of the same user would silently join the first one's
    ``SO_REUSEPORT`` group and take half its connections.

    Raises:
        SystemExit: the address is in use.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # old connections in TIME_WAIT do not count
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"cannot serve on {host}:{port}: {exc.strerror}") from exc


def _run_worker(settings: ServeSettings) -> None:
    """One worker process: load and warm the bundle, then listen on its own socket and serve."""
    import uvicorn

    config = uvicorn.Config(**_uvicorn_options(settings))
    config.load()  # app_from_env: the bundle is loaded and warmed before the socket exists
    sock = _listening_socket(settings.host, settings.port)
    ready_dir = os.environ.get(_ENV_READY_DIR)
    if ready_dir:
        Path(ready_dir, str(os.getpid())).touch()
    uvicorn.Server(config).run(sockets=[sock])


def _supervise(settings: ServeSettings) -> None:
    """Start ``settings.workers`` worker processes, replace any that dies, stop them all on SIGINT / SIGTERM."""
    global _preloaded
    _check_port_free(settings.host, settings.port)
    shared = settings.shared_bundle and "fork" in multiprocessing.get_all_start_methods()
    if shared:
        _preloaded = preload(Path(os.environ[_ENV_BUNDLE]))
    context: Any = multiprocessing.get_context("fork" if shared else "spawn")  # typeshed's BaseContext lists no Process
    ready_dir = tempfile.mkdtemp(prefix="recsys-ready-")
    os.environ[_ENV_READY_DIR], os.environ[_ENV_WORKERS] = ready_dir, str(settings.workers)
    stopping = []

    def request_stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start() -> multiprocessing.process.BaseProcess:
        # A replacement is forked from the supervisor's first bundle too; with the watch on it then
        # moves to the latest one like the others.
        process = context.Process(target=_run_worker, args=(settings,), name="recsys-worker")
        process.start()
        return process

    workers = [start() for _ in range(settings.workers)]
    try:
        while not stopping:
            for i, process in enumerate(workers):
                if not process.is_alive():
                    marker = Path(ready_dir, str(process.pid))
                    if not marker.exists():  # it never listened: restarting would fail the same way
                        raise SystemExit(f"worker {process.pid} failed to start (exit code {process.exitcode}); see the log above")
                    log.error("worker %s exited with %s; starting a replacement", process.pid, process.exitcode)
                    marker.unlink()
                    workers[i] = start()
            time.sleep(0.2)
    finally:
        for process in workers:  # uvicorn in each worker shuts down gracefully on SIGTERM
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + _GRACEFUL_SHUTDOWN_S + 5
        for process in workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(ready_dir, ignore_errors=True)
        _preloaded = None
