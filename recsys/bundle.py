"""Versioned model bundles: a self-contained directory the server loads, written atomically.

Layout::

    <work_dir>/bundles/
      v20261121-081500-ab12cd/     one complete bundle
        manifest.json              versions, config, data fingerprint, MLflow run id, file checksums
        ...component files...
      latest                       text file naming the newest verified bundle directory

A bundle is assembled in a hidden temp directory, its checksums are computed and verified, and
only then is it renamed into place; ``latest`` moves last (also by rename). A crash at any point
leaves the previous bundle and pointer untouched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from recsys.atomic import write_json, write_text

MANIFEST = "manifest.json"
POINTER = "latest"
BUNDLE_FORMAT = 1
_PACKAGES = ("recsys-hybrid", "torch", "torchrec", "implicit", "lightgbm", "faiss-cpu", "polars", "numpy", "mlflow", "transformers")


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, or fails its checksum verification."""


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        """The bundle's version name, from its manifest."""
        return str(self.manifest["version"])

    def file(self, relative: str) -> Path:
        """Path of a component file; raises if the manifest does not list it."""
        if relative not in self.manifest["files"]:
            raise BundleError(f"bundle {self.version} has no file {relative!r}")
        return self.path / relative


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks.

    Args:
        path: the file.
        chunk: bytes read at a time.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Installed versions of Python and the key packages (those not installed are left out)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_bundle(
    root: Path,
    populate: Callable[[Path], None],
    info: dict[str, Any],
    version: str | None = None,
) -> Bundle:
    """Build a bundle in a temp dir, checksum and verify it, rename it into place, then move ``latest``.

    Args:
        root: the bundles folder (``<work_dir>/bundles``).
        populate: writes the component files into the directory it is given.
        info: extra manifest fields (config, data fingerprint, mlflow run id, metrics ...).
        version: bundle version; default ``v<UTC timestamp>-<content hash>``.

    Returns:
        The verified bundle at its final path.
    """
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        populate(tmp)
        files = {
            str(p.relative_to(tmp)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        if not files:
            raise BundleError("populate() wrote no files")
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:8]
        same = sorted(root.glob(f"v*-{digest}")) if version is None else []
        if same:
            # Identical component files (e.g. a re-run that reused every stage): keep one copy.
            shutil.rmtree(tmp, ignore_errors=True)
            set_latest(root, same[-1].name)
            return Bundle(same[-1], verify_bundle(same[-1]))
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        version = version or f"v{stamp}-{digest}"
        manifest = {
            "format": BUNDLE_FORMAT,
            "version": version,
            "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "packages": package_versions(),
            "files": files,
            **info,
        }
        write_json(tmp / MANIFEST, manifest, sort_keys=True, default=str)
        verify_bundle(tmp)
        final = root / version
        if final.exists():
            raise BundleError(f"bundle {final} already exists")
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    set_latest(root, version)
    return Bundle(final, manifest)


def remove_unfinished(root: Path) -> list[Path]:
    """Delete temp directories left by a killed bundle build.

    Call only where no other build can be running at the same time (the start of a training run).

    Args:
        root: the bundles folder.

    Returns:
        The ``.building-*`` directories removed.
    """
    removed = []
    for tmp in root.glob(".building-*"):
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def verify_bundle(path: Path) -> dict[str, Any]:
    """Check that every file the manifest lists exists with its size and checksum.

    Args:
        path: the bundle directory.

    Returns:
        The manifest.

    Raises:
        BundleError: no or invalid manifest, an unsupported format, or naming the first missing or
            altered file.
    """
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: no {MANIFEST} (incomplete or not a bundle)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path}: not valid JSON: {exc}") from exc
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: unsupported bundle format {manifest.get('format')!r}")
    for relative, entry in manifest.get("files", {}).items():
        p = path / relative
        if not p.is_file():
            raise BundleError(f"bundle {path.name}: file {relative} is missing")
        if p.stat().st_size != entry["bytes"] or sha256_file(p) != entry["sha256"]:
            raise BundleError(f"bundle {path.name}: checksum mismatch for {relative}")
    return manifest


def set_latest(root: Path, version: str) -> None:
    """Point ``latest`` at a bundle (atomic rename of a small text file).

    Args:
        root: the bundles folder.
        version: the bundle directory name to point at.
    """
    write_text(root / POINTER, version + "\n")


def resolve_bundle(root_or_path: Path, version: str | None = None) -> Path:
    """The bundle directory for a bundles root (+ optional version, else ``latest``) or a bundle path.

    Args:
        root_or_path: a bundle directory (has a manifest) or a bundles folder.
        version: bundle to pick in a bundles folder; default the one ``latest`` names.

    Returns:
        The bundle directory (not verified).

    Raises:
        BundleError: no ``latest`` pointer when needed, or the version's directory does not exist.
    """
    if (root_or_path / MANIFEST).is_file():
        return root_or_path
    if version is None:
        pointer = root_or_path / POINTER
        if not pointer.is_file():
            if root_or_path.is_dir() and any(root_or_path.iterdir()):
                raise BundleError(f"{root_or_path}: neither a bundle (no {MANIFEST}) nor a bundles folder (no {POINTER})")
            raise BundleError(f"no bundle found: {pointer} does not exist (run `make train` first)")
        version = pointer.read_text().strip()
    path = root_or_path / version
    if not path.is_dir():
        raise BundleError(f"bundle {version!r} not found in {root_or_path}")
    return path


def load_bundle(root_or_path: Path, version: str | None = None) -> Bundle:
    """Resolve and verify a bundle (checksums included).

    Args:
        root_or_path: a bundle directory or a bundles folder (see :func:`resolve_bundle`).
        version: bundle to pick in a bundles folder; default ``latest``.

    Returns:
        The verified bundle.

    Raises:
        BundleError: the bundle cannot be found or fails verification.
    """
    path = resolve_bundle(root_or_path, version)
    return Bundle(path, verify_bundle(path))


_GENERATED = ("format", "version", "created_utc", "packages", "files")


def copy_bundle(source: Bundle, root: Path, version: str) -> Bundle:
    """Write a verified copy of a bundle under another version name (staging, rollbacks, tests).

    Args:
        source: a verified bundle.
        root: the bundles folder to write into (``latest`` moves to the copy).
        version: the copy's version name.

    Returns:
        The copy, with a fresh manifest (same component files and facts, new version and checksums).
    """

    def populate(d: Path) -> None:
        for relative in source.manifest["files"]:
            target = d / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source.path / relative, target)

    info = {k: v for k, v in source.manifest.items() if k not in _GENERATED}
    return write_bundle(root, populate, info, version)
