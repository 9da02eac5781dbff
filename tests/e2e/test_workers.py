"""The multi-worker server (serving/server.py): one bundle loaded once and shared by forked workers, one SO_REUSEPORT
socket per worker, readiness of all, replacement, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from recsys.config import PROJECT_ROOT
from tests.e2e.conftest import run_server

pytestmark = pytest.mark.e2e


def _answering_pids(url: str, connections: int = 32) -> set[int]:
    """The worker pid behind each of ``connections`` fresh keep-alive connections."""
    clients = [httpx.Client(base_url=url, timeout=30) for _ in range(connections)]
    try:
        return {c.get("/health").json()["pid"] for c in clients}
    finally:
        for c in clients:
            c.close()


def _wait_ready(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/ready", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the server did not become ready again"
        time.sleep(0.3)


def test_two_workers_share_connections_are_replaced_and_stop_together(e2e_bundles: Path, tmp_path: Path) -> None:
    with run_server(e2e_bundles, tmp_path / "server.log", workers=2) as server:
        pids = _answering_pids(server.url)
        # 32 connections hashed over two sockets: both workers take some (all on one: p = 2 * 0.5**32)
        assert len(pids) == 2, "connections reach both workers"
        assert pids <= {p.pid for p in psutil.Process(server.process.pid).children()}
        # Forked from the supervisor's loaded bundle, a worker's own pages are a small part of what it
        # maps (measured: ~8%; a spawned worker that loads its own copy: ~65%).
        for pid in pids:
            memory = psutil.Process(pid).memory_full_info()
            assert memory.uss < 0.3 * memory.rss, f"worker {pid} holds {memory.uss >> 20} of {memory.rss >> 20} MB alone: the bundle is not shared"
        assert "the workers share it" in server.log.read_text()

        port = server.url.rsplit(":", 1)[1]
        second = subprocess.run(
            [sys.executable, "-m", "training.cli", "serve", "--bundle", str(e2e_bundles), "--port", port, "--workers", "2"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
        )
        assert second.returncode != 0 and "cannot serve" in second.stdout + second.stderr, "a second server must not join the port"

        killed = min(pids)
        os.kill(killed, signal.SIGKILL)
        time.sleep(0.5)  # the supervisor notices within 0.2 s and un-readies the server until the replacement listens
        _wait_ready(server.url)
        after = _answering_pids(server.url)
        assert killed not in after and len(after) == 2, "the dead worker was replaced"
        workers = after
    for pid in workers:  # SIGTERM to the supervisor stopped every worker
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
