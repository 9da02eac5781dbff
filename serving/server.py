"""Run the HTTP server: uvicorn on 127.0.0.1, the latest bundle (or one named), N workers.

``recsys serve`` and ``make serve`` end up in :func:`serve`. Workers are separate processes, so the
settings travel in environment variables and every worker builds its app with
:func:`app_from_env` (uvicorn's factory mode) and loads the bundle itself.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from training.bundle import MANIFEST, resolve_bundle

log = logging.getLogger(__name__)

_ENV_BUNDLE = "RECSYS_SERVE_BUNDLE"
_ENV_ROOT = "RECSYS_SERVE_ROOT"
_ENV_WATCH = "RECSYS_SERVE_WATCH_S"


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
    """

    bundle: Path
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    watch_s: float = 0.0
    log_level: str = "info"


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
    from serving.app import admin_token_from_env, create_app
    from serving.reload import ServiceHolder, load_service

    bundle, root = Path(os.environ[_ENV_BUNDLE]), Path(os.environ[_ENV_ROOT])
    holder = ServiceHolder(root, bundle_path=bundle, service=load_service(bundle))
    freeze_loaded_objects()
    holder.on_swap.append(lambda _version, _previous: freeze_loaded_objects())
    log.info("worker %d serving bundle %s", os.getpid(), holder.version)
    return create_app(holder, watch_interval_s=float(os.environ.get(_ENV_WATCH, "0")), admin_token=admin_token_from_env())


def freeze_loaded_objects() -> None:
    """Move what is alive now (the loaded bundle) out of the cyclic garbage collector's reach.

    A bundle's objects live as long as it is served, yet every full collection traversed them:
    65 ms per collection on the 1M-item synthetic catalogue (its id lists hold a million strings),
    a stall of the worker that lands straight in the p99. ``gc.freeze`` leaves them to reference
    counting only; request garbage is collected as before.
    """
    gc.collect()
    gc.freeze()


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
        uvicorn.run(
            "serving.server:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            access_log=False,  # per-request logs cost ~10% throughput; /metrics has the counts
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
