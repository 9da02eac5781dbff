"""Hand freed memory back to the kernel, where a step frees gigabytes the next one does not reuse.

glibc keeps freed blocks mapped for reuse, and a heap cannot shrink below a live block, so after a
large temporary (a stage's working set, the two-tower's training examples) is freed the process
stays at its high-water mark until the allocator is trimmed.
"""

from __future__ import annotations

import ctypes
import gc


def release_free_memory() -> bool:
    """Collect garbage and hand the allocator's free pages back to the kernel (glibc ``malloc_trim``).

    A stage's large temporaries are freed when it returns, but glibc keeps much of that memory
    mapped for reuse, so the next stage would start from the last one's high-water mark instead of
    what is live (about 4 GB stayed resident between the 10x rung's stages). Called between
    training stages and after the two-tower's examples are freed.

    Returns:
        Whether memory was trimmed (False where glibc is not the allocator).
    """
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.malloc_trim(0))
