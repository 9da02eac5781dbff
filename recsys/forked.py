"""Run one function over blocks of work in forked processes that share the caller's fitted models.

Batch jobs over many users (scoring every test user's list against a 619k-item catalogue) are
single-threaded numpy and FAISS by design: one BLAS thread keeps a user's scores independent of
how many users share a product. Forked processes use the other cores instead, and see the
caller's models through copy-on-write pages without saving or pickling them.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# The function and blocks of the running call: a forked worker inherits them (a closure over fitted
# models cannot be pickled, and need not be: the child has the parent's memory).
_TASK: tuple[Callable[[Any], Any], Sequence[Any]] | None = None


def forked_map(fn: Callable[[T], R], blocks: Sequence[T], workers: int) -> list[R]:
    """``[fn(b) for b in blocks]``, the blocks shared among ``workers`` forked processes.

    Each result is the same whichever process computes it, so the output does not depend on
    ``workers``. Each worker runs numpy, FAISS and torch on one thread.

    Args:
        fn: the work of one block (may close over anything: it is inherited, not pickled).
        blocks: the blocks, e.g. fixed-size slices of a user list.
        workers: processes; 1 (or no ``fork`` on this platform) runs in this process.

    Returns:
        The results in the order of ``blocks``.

    Raises:
        RuntimeError: a call is already running, or a worker died (e.g. killed for memory).
    """
    global _TASK
    if workers <= 1 or len(blocks) <= 1 or "fork" not in mp.get_all_start_methods():
        return [fn(b) for b in blocks]
    if _TASK is not None:
        raise RuntimeError("forked_map: calls cannot be nested")
    _TASK = (fn, blocks)
    try:
        with ProcessPoolExecutor(min(workers, len(blocks)), mp_context=mp.get_context("fork"), initializer=one_thread_per_library) as pool:
            # A dead worker breaks the pool and every pending result raises, instead of waiting forever.
            return list(pool.map(_run_block, range(len(blocks))))
    except BrokenProcessPool as error:
        raise RuntimeError(f"forked_map: a worker died ({error}); was it killed for memory?") from error
    finally:
        _TASK = None


def _run_block(i: int) -> Any:
    assert _TASK is not None, "forked_map: a worker without its task"
    fn, blocks = _TASK
    return fn(blocks[i])


def one_thread_per_library() -> None:
    """One thread per library in a forked worker: the workers are the parallelism (and libgomp must not reuse the parent's team)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
