"""Give freed tensor memory back to the operating system at once (glibc).

A conversion allocates and frees one large buffer after another. glibc serves buffers above its
mmap threshold with ``mmap`` (returned on free), but raises that threshold dynamically, up to
32 MiB, after each such free: later buffers then come from the heap, whose freed pages stay
resident and fragment. Fixing the threshold keeps the resident memory of a conversion at what it
actually holds (see ``benchmarks/convert_memory.py``). A no-op outside glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 20


def return_freed_memory(threshold: int = THRESHOLD) -> bool:
    """Serve allocations of ``threshold`` bytes or more with ``mmap`` (process-wide, from now
    on). Returns False where glibc's ``mallopt`` is not available."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
