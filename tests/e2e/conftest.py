"""End-to-end fixtures: a small real bundle trained on the H&M sample, and the real server in a subprocess.

The bundle is the development service (``serving/dev_service.py``: history + ALS + content
candidates, LightGBM reranker) trained on the last 3 days of the shared H&M data (~30 s), saved
as two versions plus a tampered copy, so reload and checksum rejection are exercised for real.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from recsys.config import PROJECT_ROOT, load_config
from serving.dev_service import DevService, DevSettings
from training.bundle import set_latest

VERSIONS = ("v-e2e-a", "v-e2e-b")
BROKEN = "v-e2e-broken"


@dataclass
class Server:
    """A running server: its base URL, process and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


@pytest.fixture(scope="session")
def e2e_bundles(hm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundles folder with two good versions of the H&M dev service and one with a bad checksum."""
    root = tmp_path_factory.mktemp("e2e")
    config = load_config(PROJECT_ROOT / "configs" / "hm.yaml", overrides={"work_dir": str(root / "work"), "data": {"data_dir": str(hm_dir)}})
    service = DevService.train(config, DevSettings(days=3))
    bundles = root / "bundles"
    for version in (*VERSIONS, BROKEN):
        service.save_bundle(bundles, version=version)
    target = bundles / BROKEN / "als" / "arrays.npz"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte: same size, wrong checksum
    target.write_bytes(bytes(data))
    set_latest(bundles, VERSIONS[0])
    return bundles


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def run_server(bundles: Path, log: Path, workers: int = 1, watch_s: float = 0.0, ready_timeout_s: float = 120.0) -> Iterator[Server]:
    """Start ``recsys serve`` on a free loopback port, wait for /ready, and always stop it."""
    port = free_port()
    cmd = [sys.executable, "-m", "training.cli", "serve", "--bundle", str(bundles), "--port", str(port), "--workers", str(workers), "--watch", str(watch_s)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        server = Server(f"http://127.0.0.1:{port}", process, log)
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if process.poll() is not None:
                    pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"server not ready after {ready_timeout_s} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
            yield server
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM (uvicorn shuts down gracefully, workers included), then SIGKILL the group if needed."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the group this fixture created (start_new_session)
        process.wait(5)


@pytest.fixture(scope="session")
def server(e2e_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server (1 worker) shared by the server, property-based and browser tests."""
    with run_server(e2e_bundles, tmp_path_factory.mktemp("server") / "server.log") as running:
        yield running
