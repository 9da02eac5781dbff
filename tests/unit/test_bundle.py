"""Protects bundle atomicity: a bundle is either complete and verified, or absent; `latest` moves last."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.bundle import BundleError, load_bundle, remove_unfinished, resolve_bundle, write_bundle
from recsys.config import PROJECT_ROOT


def _populate(text: str):
    def fill(d: Path) -> None:
        (d / "models").mkdir()
        (d / "models" / "a.txt").write_text(text)
        (d / "b.bin").write_bytes(b"\x00\x01" * 100)

    return fill


def test_write_verify_and_latest(tmp_path: Path) -> None:
    b1 = write_bundle(tmp_path, _populate("one"), {"mlflow_run_id": "r1"})
    assert (tmp_path / "latest").read_text().strip() == b1.version
    loaded = load_bundle(tmp_path)
    assert loaded.version == b1.version and loaded.manifest["mlflow_run_id"] == "r1"
    assert set(loaded.manifest["files"]) == {"models/a.txt", "b.bin"}
    assert "torch" in loaded.manifest["packages"]
    again = write_bundle(tmp_path, _populate("one"), {"mlflow_run_id": "r2"})
    assert again.path == b1.path, "identical component files are not stored twice"
    b2 = write_bundle(tmp_path, _populate("two"), {})
    assert load_bundle(tmp_path).version == b2.version != b1.version
    assert load_bundle(tmp_path, b1.version).file("models/a.txt").read_text() == "one"


def test_failed_build_leaves_nothing_and_keeps_latest(tmp_path: Path) -> None:
    good = write_bundle(tmp_path, _populate("good"), {})

    def broken(d: Path) -> None:
        (d / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_bundle(tmp_path, broken, {})
    assert load_bundle(tmp_path).version == good.version
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([good.version, "latest"])


def test_tampered_or_incomplete_bundle_is_rejected(tmp_path: Path) -> None:
    b = write_bundle(tmp_path, _populate("x"), {})
    (b.path / "b.bin").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="checksum mismatch for b.bin"):
        load_bundle(tmp_path)
    (b.path / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(b.path)
    with pytest.raises(BundleError, match="run `make train` first"):
        resolve_bundle(tmp_path / "empty")


def test_killed_build_does_not_move_latest(tmp_path: Path) -> None:
    good = write_bundle(tmp_path, _populate("good"), {})
    script = f"""
import time
from pathlib import Path
from recsys.bundle import write_bundle
def slow(d):
    (d / "part.bin").write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)
write_bundle(Path({str(tmp_path)!r}), slow, {{}})
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert load_bundle(tmp_path).version == good.version
    leftovers = remove_unfinished(tmp_path)
    assert len(leftovers) == 1 and not any(p.exists() for p in leftovers)
