"""Pickle-free storage helpers: sparse matrices and id indexes as plain numpy arrays."""

from __future__ import annotations

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
    return IdIndex(arrays[f"{prefix}_ids"])
