"""Atomic writes: readers see the old complete file/folder or the new complete one, never half of one.

Every artifact in the project is written through these helpers (temp path in the same folder,
then ``os.replace`` / ``rename``), so a killed process leaves at most a hidden temp entry behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on failure it is removed.

    The temp name keeps ``path``'s suffix, so writers that add an extension (``np.savez``) or pick a
    format from it (matplotlib, polars) behave as for the final name.

    Args:
        path: the final file; its parent folder is created if missing.

    Yields:
        The temp path to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically.

    Args:
        path: the file.
        text: its new content.

    Returns:
        ``path`` as a Path.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, payload: Any, **dumps: Any) -> Path:
    """Write JSON atomically.

    Args:
        path: the file.
        payload: anything :func:`json.dumps` accepts.
        **dumps: keyword arguments for :func:`json.dumps` (default ``indent=2``).

    Returns:
        ``path`` as a Path.
    """
    return write_text(path, json.dumps(payload, **{"indent": 2, **dumps}))


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """``np.savez`` atomically (load it back with ``allow_pickle=False``).

    Args:
        path: the ``.npz`` file.
        **arrays: name -> array.

    Returns:
        ``path`` as a Path.
    """
    with atomic_path(path) as tmp:
        np.savez(tmp, allow_pickle=True, **arrays)  # numpy's default; named so **arrays types as arrays
    return Path(path)


def write_dir(directory: str | Path, populate: Callable[[Path], None], replace: bool = True) -> Path:
    """Build a folder in a hidden temp folder beside it, then rename it into place.

    Args:
        directory: the final folder.
        populate: writes the contents into the folder it is given.
        replace: an existing folder is swapped out (True) or is an error (False).

    Raises:
        FileExistsError: ``directory`` exists and ``replace`` is False.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        populate(tmp)
        if directory.exists():
            if not replace:
                raise FileExistsError(f"{directory} already exists")
            old = directory.with_name(f".{directory.name}.old.{os.getpid()}")
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old)
        else:
            tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def link_or_copy(source: str | Path, target: str | Path) -> Path:
    """Hard-link ``source`` at ``target``, or copy it where a link is impossible (another file system).

    Artifacts are never changed in place (every writer replaces a whole file or folder), so a
    bundle may share its large files with the training stage that made them instead of doubling
    the disk they take (the 100x rung's generator is several GB).

    Args:
        source: an existing file.
        target: the new name (must not exist).

    Returns:
        ``target`` as a Path.
    """
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return Path(target)


def copy_tree_linked(source: str | Path, target: str | Path) -> Path:
    """``shutil.copytree`` whose files are hard links where possible (see :func:`link_or_copy`).

    Args:
        source: an existing folder.
        target: the new folder (must not exist).

    Returns:
        ``target`` as a Path.
    """
    return Path(shutil.copytree(source, target, copy_function=link_or_copy))
