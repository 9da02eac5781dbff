"""Pinned virtual environments for the peer libraries of the benchmark (one per family).

Each peer library (RecTools, Cornac, implicit) runs through its own published package in its
own venv, built from ``bench/peers/<family>/requirements.lock``, because their pins clash with
each other and with the project (RecTools needs numpy < 2, the project numpy 2). The project
only ever talks to them through ``peer_runner.py`` and integer arrays on disk.

Run with the project venv's python (stdlib only)::

    python bench/peers/envs.py --root artifacts/peers [--only rectools,cornac,implicit]

A build happens only when an env is missing or its lock (or the install flags) changed: a sha256
stamp written after a successful install records what the env was built from, so reruns are
instant. The env is installed under a temporary name and renamed into place when complete, so a
half-built env is never picked up.

Re-resolve a lock (CPU torch comes from /opt/wheels, never a CUDA build)::

    cd bench/peers/<family>
    ../../../.venv/bin/python -m uv pip compile requirements.in -o requirements.lock \\
        --python-version 3.11 --find-links /opt/wheels -q
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PEERS_DIR.parents[1]
FAMILIES: tuple[str, ...] = ("rectools", "cornac", "implicit")
FIND_LINKS = "/opt/wheels"
# The locks are resolved for this interpreter version; a venv on another one would not match them.
PYTHON_VERSION = (3, 11)
STAMP_NAME = "peer-lock.sha256"
# Bytecode is compiled at install time because the peers' imports (torch, Lightning) take several times
# longer without .pyc files, and PYTHONDONTWRITEBYTECODE may be set where the benchmark runs.
# The flags are part of the stamp, so changing them rebuilds the envs.
INSTALL_FLAGS: tuple[str, ...] = ("--find-links", FIND_LINKS, "--compile-bytecode", "-q")
# Versions printed by the CLI: the library itself plus what decides its numerics.
KEY_PACKAGES: dict[str, tuple[str, ...]] = {
    "rectools": ("rectools", "torch", "pytorch-lightning", "numpy", "pandas", "scipy"),
    "cornac": ("cornac", "numpy", "scipy"),
    "implicit": ("implicit", "numpy", "scipy"),
}

log = logging.getLogger("peers.envs")


def lock_file(family: str) -> Path:
    """The pinned requirements of one family.

    Args:
        family: one of :data:`FAMILIES`.

    Returns:
        Path of ``bench/peers/<family>/requirements.lock``.

    Raises:
        ValueError: for an unknown family.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown peer family {family!r}; expected one of {', '.join(FAMILIES)}")
    return PEERS_DIR / family / "requirements.lock"


def env_python(venv: Path) -> Path:
    """The interpreter inside a venv.

    Args:
        venv: the venv directory.

    Returns:
        ``<venv>/bin/python``.
    """
    return venv / "bin" / "python"


def _stamp_value(lock: Path) -> str:
    """sha256 of the lock and the install flags: what the env was built from."""
    return hashlib.sha256(lock.read_bytes() + " ".join(INSTALL_FLAGS).encode()).hexdigest()


def _is_current(venv: Path, stamp: str) -> bool:
    """True when ``venv`` was fully installed from a lock with this hash."""
    stamp_file = venv / STAMP_NAME
    return env_python(venv).exists() and stamp_file.is_file() and stamp_file.read_text().strip() == stamp


@contextmanager
def _family_lock(family_dir: Path) -> Iterator[None]:
    """Serialise builds of one family across processes (two benchmark runs starting at once)."""
    family_dir.mkdir(parents=True, exist_ok=True)
    with open(family_dir / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str]) -> None:
    """Run a build step; on failure raise with the tool's own output (uv says which pin failed)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-4000:]
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def _build(family: str, tmp: Path, lock: Path, stamp: str, base_python: str) -> None:
    """Create a venv at ``tmp``, install the lock into it, and stamp it as complete."""
    # No pip inside: uv installs from the outside, and the env stays smaller.
    _run([base_python, "-m", "venv", "--without-pip", str(tmp)])
    py = env_python(tmp)
    probe = subprocess.run(
        [str(py), "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    version = tuple(int(v) for v in probe.stdout.split())
    if version != PYTHON_VERSION:
        raise RuntimeError(
            f"{base_python} is Python {version}; the {family} lock is resolved for {PYTHON_VERSION}"
        )
    _run([sys.executable, "-m", "uv", "pip", "install", "--python", str(py), *INSTALL_FLAGS, "-r", str(lock)])
    # Written last: its presence with the right hash is what marks the env as usable.
    (tmp / STAMP_NAME).write_text(stamp + "\n")


def ensure_env(family: str, root: Path, base_python: str = "python3") -> Path:
    """Build (if missing or stale) the pinned venv of one peer family.

    The env lives at ``<root>/<family>/venv``. Only ``bin/python`` is meant to be used: the env is
    built under a temporary name and renamed, so console scripts in ``bin/`` carry the temporary path
    in their shebangs.

    Args:
        family: one of :data:`FAMILIES`.
        root: directory holding all peer envs, e.g. ``artifacts/peers``.
        base_python: interpreter that creates the venv (must be Python 3.11, as the locks are).

    Returns:
        Path of the env's python.

    Raises:
        ValueError: for an unknown family.
        RuntimeError: when creating the venv or installing the lock fails (with the tool's output).
    """
    lock = lock_file(family)
    stamp = _stamp_value(lock)
    family_dir = root.resolve() / family
    venv = family_dir / "venv"
    if _is_current(venv, stamp):
        return env_python(venv)
    with _family_lock(family_dir):
        if _is_current(venv, stamp):  # another process built it while we waited
            return env_python(venv)
        start = time.perf_counter()
        log.info("%s: building env from %s", family, lock.relative_to(PROJECT_ROOT))
        # Leftovers of a killed build; safe to delete while we hold the family lock.
        for leftover in [*family_dir.glob("venv.tmp-*"), *family_dir.glob("venv.old-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = family_dir / f"venv.tmp-{os.getpid()}"
        try:
            _build(family, tmp, lock, stamp, base_python)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if venv.exists():
            # Built from another lock or with other flags: move aside first, so the swap is two renames.
            old = family_dir / f"venv.old-{os.getpid()}"
            venv.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(venv)
        log.info("%s: env ready in %.1f s", family, time.perf_counter() - start)
    return env_python(venv)


def package_versions(python: Path, packages: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of some distributions, as seen by another interpreter.

    Args:
        python: the interpreter to ask.
        packages: distribution names.

    Returns:
        Name to version; ``"missing"`` for distributions that are not installed.
    """
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        out[name] = 'missing'\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def _parse_families(only: str | None) -> list[str]:
    if not only:
        return list(FAMILIES)
    chosen = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in FAMILIES]
    if unknown:
        raise SystemExit(
            f"envs.py: unknown family {', '.join(unknown)}; expected some of {', '.join(FAMILIES)}"
        )
    return chosen


def main(argv: list[str] | None = None) -> int:
    """CLI: build the requested envs and print each env's python and key package versions.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        Process exit status (0 when every env is ready, 1 when one failed to build).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--root", type=Path, default=PROJECT_ROOT / "artifacts" / "peers", help="where the envs live"
    )
    parser.add_argument("--only", default=None, help="comma-separated families (default: all)")
    parser.add_argument(
        "--base-python", default="python3", help="Python 3.11 interpreter that creates the venvs"
    )
    args = parser.parse_args(argv)
    # Turn SIGTERM into an exception, so subprocess.run kills a running uv and the temporary env is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    status = 0
    for family in _parse_families(args.only):
        start = time.perf_counter()
        try:
            python = ensure_env(family, args.root, args.base_python)
        except RuntimeError as exc:
            log.error("%s: %s", family, exc)
            status = 1
            continue
        versions = package_versions(python, KEY_PACKAGES[family])
        log.info("%s: ready after %.1f s", family, time.perf_counter() - start)
        print(f"{family}: {python}  " + " ".join(f"{name}=={version}" for name, version in versions.items()))
    return status


if __name__ == "__main__":
    sys.exit(main())
