"""How this process's C heap hands memory back: large blocks straight from and to the OS.

glibc serves a block under its mmap threshold from a heap arena, and raises that threshold
(up to 32 MiB) each time a larger mmapped block is freed. After the first volume is freed,
every later mask and slab under 32 MiB comes from the arenas, one per worker thread, where
freed space stays resident and fragments: a batch of 8 phantom studies at concurrency 2
peaked at 1.6 GB instead of 1.0 GB (issue 11, benchmarks/bench_batch.py). A fixed threshold
keeps blocks of 1 MiB and more in mmap, which returns them to the OS when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD_BYTES = 1 << 20


def keep_large_blocks_out_of_the_heap() -> None:
    """Fix glibc's mmap and trim thresholds at 1 MiB; nothing happens on another C library."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): their heaps behave otherwise
        mallopt = None
    if mallopt is None:
        return
    for option in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD):
        if mallopt(option, _THRESHOLD_BYTES) != 1:
            log.debug("mallopt(%d) refused; the C heap keeps its defaults", option)
