"""A real server in a subprocess and headless Chromium: shared by the e2e tests and ``bench/screenshots.py``.

Nothing here imports pytest, so tools outside the test suite can use it.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from recsys.config import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
MAX_PNG_BYTES = 400_000
FLAT_COLOURS = 64  # palette entries kept for the page's own flat colours


class ServerError(RuntimeError):
    """The server exited or did not become ready; the message ends with its log."""


@dataclass
class Server:
    """A running server: its base URL, process and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def run_server(
    bundles: Path, log: Path, workers: int = 1, watch_s: float = 0.0, ready_timeout_s: float = 120.0, config: Path | None = None
) -> Iterator[Server]:
    """Start ``recsys serve`` on a free loopback port, wait for /ready, and always stop it.

    Raises:
        ServerError: the process exited, or /ready did not answer 200 within ``ready_timeout_s``.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "training.cli", "serve", "--bundle", str(bundles), "--port", str(port), "--workers", str(workers), "--watch", str(watch_s)]
    if config is not None:
        cmd += ["--config", str(config)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        server = Server(f"http://127.0.0.1:{port}", process, log)
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if process.poll() is not None:
                    raise ServerError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise ServerError(f"server not ready after {ready_timeout_s} s:\n{log.read_text()[-3000:]}")
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
            os.killpg(process.pid, signal.SIGKILL)  # the group run_server created (start_new_session)
        process.wait(5)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (a ``playwright.sync_api.Browser``), always closed."""
    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"Chromium is not installed at {CHROMIUM}: run `make browsers` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def save_png(page: Any, path: Path, full_page: bool = False, clip: dict[str, float] | None = None) -> Path:
    """Save a 256-colour PNG of the page (a full-colour screenshot of product photos is ~400 KB; this is ~250 KB).

    Raises:
        AssertionError: the file is not under ``MAX_PNG_BYTES``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = page.screenshot(full_page=full_page, clip=clip)
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    # The page's most frequent exact colours (backgrounds, text, bars, chips) get their own palette
    # entries, so flat UI areas stay flat; a median-cut palette of the rest covers the photos.
    # Dithering against it keeps product colours true (plain quantising shifts them).
    counts = image.getcolors(maxcolors=image.width * image.height) or []
    flat = [colour for _, colour in sorted(counts, reverse=True)[:FLAT_COLOURS]]
    photos = image.quantize(colors=256 - len(flat), method=Image.Quantize.MEDIANCUT)
    palette = Image.new("P", (1, 1))
    palette.putpalette(photos.getpalette()[: 3 * (256 - len(flat))] + [v for colour in flat for v in colour])
    image.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
    assert path.stat().st_size < MAX_PNG_BYTES, f"{path} is {path.stat().st_size} bytes"
    return path


def wait_images(page: Any, selector: str, timeout_ms: float = 20_000) -> None:
    """Wait until every image under ``selector`` has finished loading (or failed and been replaced)."""
    page.wait_for_function(
        "sel => Array.from(document.querySelectorAll(sel)).every(img => img.complete)", arg=selector, timeout=timeout_ms
    )


def rendered(page: Any, selector: str) -> list[int]:
    """naturalWidth of every image under ``selector`` (0 = did not render)."""
    return page.eval_on_selector_all(selector, "imgs => imgs.map(i => i.naturalWidth)")
