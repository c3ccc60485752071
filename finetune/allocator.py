"""How the dataset build has the C allocator hand freed memory back (glibc's ``malloc`` on Linux).

glibc serves a request of at least its *mmap threshold* with a memory map of its own, which ``free`` unmaps,
and smaller ones from its heaps, whose freed blocks it keeps for reuse. The threshold starts at 128 KiB, but
each time a mapped block is freed glibc raises it to that block's size (up to 32 MiB on 64-bit systems:
``mallopt(3)``, ``M_MMAP_THRESHOLD``). A streaming build allocates and frees each batch's columns (a few MiB
each) again and again; after the first ones the threshold has risen past them, they come from the heaps, and
the heaps keep what the largest moment needed, fragmented, however the build goes on. Setting the threshold
fixes it (glibc then no longer moves it) so those columns are mapped and unmapped one by one.

``flywheel dataset`` sets it for its process and the PII workers it starts (:func:`use_mmap_threshold`). A
process that sets ``MALLOC_MMAP_THRESHOLD_`` itself keeps its own value. Between phases the build also hands
back what the heaps hold free (:func:`trim_heap`).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["MMAP_THRESHOLD_BYTES", "trim_heap", "use_mmap_threshold"]

MMAP_THRESHOLD_BYTES = 1 << 20
"""The threshold the dataset commands fix. On the 1 M-conversation bench (``bench/dataset_bench.py``, 2 cores,
2026-11-25, runs alternated in the same hour): peak RSS 608-625 MB in 45.2-48.2 s (3 runs) against 849-938 MB in
38.4-39.3 s without (2 runs); with 4 MiB 660-665 MB in 45.8-45.9 s, with 16 MiB 790 MB in 41.7 s. The extra
time is mostly pass 2's (10 s against 6 s), likely page faults on the fresh maps: with glibc's transparent huge
pages on too (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, which only a process's start can set), one run took
41.1 s at 631 MB."""

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc reads it when a process starts: for the processes this one starts


def use_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` in this process (``mallopt``) and, through the environment
    (``MALLOC_MMAP_THRESHOLD_``), in the processes it starts afterwards. Returns whether this process's
    allocator took it: False where the C library is not glibc, where ``mallopt`` refuses the value or where
    ``MALLOC_MMAP_THRESHOLD_`` is already set; nothing changes then. Raises ``ValueError`` for ``nbytes`` < 1."""
    if nbytes < 1:
        raise ValueError("nbytes must be at least 1")
    if _ENV in os.environ:  # glibc took that one when this process started
        return False
    mallopt = _glibc("mallopt")
    if mallopt is None or not mallopt(_M_MMAP_THRESHOLD, int(nbytes)):
        return False
    os.environ[_ENV] = str(int(nbytes))
    return True


def trim_heap() -> bool:
    """Hand the free memory in glibc's heaps back to the system (``malloc_trim(0)``: every free page of every
    arena, not only the top); allocations are unchanged. Returns whether glibc did release some: False where
    nothing was released or the C library is not glibc."""
    malloc_trim = _glibc("malloc_trim")
    return bool(malloc_trim(0)) if malloc_trim is not None else False


def _glibc(name: str):
    """glibc's function ``name`` through ctypes, None where the C library is not glibc or lacks it."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
