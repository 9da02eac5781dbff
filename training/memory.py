"""Peak resident memory of the training process, stage by stage.

The kernel keeps a high-water mark of a process's resident set (``VmHWM`` in
``/proc/self/status``). Writing ``5`` to ``/proc/self/clear_refs`` resets it to the current
resident set, so resetting before a stage and reading after it gives that stage's own peak, and
the stage that sets the run's peak is a fact rather than a guess. Where the reset is not allowed
(not Linux, a locked-down kernel), the mark is the run's peak so far and says so. The allocator
is trimmed between stages by :func:`recsys.memory.release_free_memory`.
"""

from __future__ import annotations

import logging
import re
import resource
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Reset this process's resident-set high-water mark to its current resident set.

    Returns:
        Whether the kernel accepted the reset (False: later readings are peaks since the start).
    """
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark in MB (since the last reset or the start).

    Returns:
        ``VmHWM`` from ``/proc/self/status``, or ``ru_maxrss`` where that file is missing.
    """
    try:
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        match = None
    if match:
        return int(match.group(1)) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mb() -> float:
    """This process's resident set now in MB (``VmRSS``; 0 where ``/proc`` is missing)."""
    try:
        match = re.search(r"^VmRSS:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        match = None
    return int(match.group(1)) / 1024 if match else 0.0


def log_memory(logger: logging.Logger, step: str) -> None:
    """Log the resident set after ``step`` and the stage's peak so far.

    The peak only grows between two of these lines in the step that set it, so a stage's log says
    which of its steps holds its peak (the 100x rung's label folds sit 4 GB over the 16 GB target).

    Args:
        logger: the calling module's logger.
        step: what just finished, e.g. "two-tower fit".
    """
    logger.info("memory after %s: %.0f MB resident, stage peak %.0f MB", step, resident_mb(), peak_rss_mb())
