"""Pickle-free storage helpers: sparse matrices and id indexes as plain numpy arrays."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import IdIndex


def csr_to_arrays(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """CSR matrix -> {prefix_data, prefix_indices, prefix_indptr, prefix_shape}.

    Args:
        prefix: key prefix, so several matrices share one ``.npz``.
        matrix: any scipy sparse matrix (converted to CSR).
    """
    m = matrix.tocsr()
    return {
        f"{prefix}_data": m.data,
        f"{prefix}_indices": m.indices,
        f"{prefix}_indptr": m.indptr,
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """Inverse of :func:`csr_to_arrays`.

    Args:
        prefix: the prefix used when saving.
        arrays: the loaded arrays.
    """
    shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
    return sp.csr_matrix((arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]), shape=shape)


def index_to_arrays(prefix: str, index: IdIndex) -> dict[str, np.ndarray]:
    """An id index as ``{prefix_ids: str array}``.

    Args:
        prefix: key prefix, so several indexes share one ``.npz``.
        index: the id index.

    Returns:
        One entry: the ids as a string array.
    """
    return {f"{prefix}_ids": index.ids.astype(str)}


def index_from_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> IdIndex:
    """Inverse of :func:`index_to_arrays`.

    Args:
        prefix: the prefix used when saving.
        arrays: the loaded arrays.

    Returns:
        The rebuilt id index.
    """
    return IdIndex.shared(arrays[f"{prefix}_ids"])  # the parts of one bundle list the same ids


MMAP_MIN_BYTES = 16 * 2**20  # members of an .npz from this size on are memory-mapped by load_npz


def load_npz(path: str | Path, mmap_min_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (written by ``np.savez``), the large ones memory-mapped.

    ``np.savez`` stores each array uncompressed in the zip, so an array's bytes lie contiguous in
    the file and can be mapped instead of read: the server's worker processes then share one copy
    of a bundle's vectors and factors through the page cache (the 100x rung's two-tower alone holds
    3 GB of user and item vectors), and a load reads only the pages it touches.

    Args:
        path: the ``.npz`` file.
        mmap_min_bytes: arrays at least this large (uncompressed, without Python objects) are mapped;
            smaller or compressed ones are read into memory (default ``MMAP_MIN_BYTES``).

    Returns:
        name -> array (mapped arrays are copy-on-write views of the file: a write changes this
        process's copy of that page, never the file).
    """
    path = Path(path)
    threshold = MMAP_MIN_BYTES if mmap_min_bytes is None else mmap_min_bytes
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, path.open("rb") as raw:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            mapped = _mapped_member(path, raw, info) if info.compress_type == zipfile.ZIP_STORED and info.file_size >= threshold else None
            if mapped is None:
                with archive.open(info) as member:
                    mapped = np.lib.format.read_array(member, allow_pickle=False)
            out[name] = mapped
    return out


def _mapped_member(path: Path, raw: BinaryIO, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A stored zip member's ``.npy`` array as a copy-on-write memory map (None: it holds Python objects)."""
    raw.seek(info.header_offset)
    local = raw.read(30)  # the local file header; its name and extra field lengths can differ from the central directory's
    if local[:4] != b"PK\x03\x04":
        raise ValueError(f"{path}: member {info.filename} has no local zip header")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    raw.seek(info.header_offset + 30 + name_length + extra_length)
    version = np.lib.format.read_magic(raw)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(raw) if version == (1, 0) else np.lib.format.read_array_header_2_0(raw)
    if dtype.hasobject:
        return None
    # Copy-on-write ("c", MAP_PRIVATE): the pages are the file's, shared between processes, until a
    # process writes one; the arrays stay writable because implicit's solvers take writable buffers.
    values = np.memmap(path, dtype=dtype, mode="c", offset=raw.tell(), shape=shape, order="F" if fortran else "C")
    return values.view(np.ndarray)
