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
back what the heaps hold free (:func:`trim_heap`), and a thread does so every half second while the build runs
(:func:`trimming`): DuckDB's threads allocate and free small blocks in glibc's heaps (the Parquet metadata of each
data file read, among others; its buffers come from its own jemalloc), which leaves them fragmented.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_INTERVAL_S", "trim_heap", "trimming", "use_mmap_threshold"]

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


TRIM_INTERVAL_S = 0.5
"""How often :func:`trimming` hands the heaps' free pages back, seconds. On the dataset bench (2 cores, 2026-11-25,
alternated with the tree without the thread in the same hour), at 8,057,280 conversations: peak RSS 1,051-1,055 MB
against 1,226 MB (the selection's), pass 1 748-755 against 892 MB, pass 2 738-755 against 906 MB, in 432-434 s
against 400 s (one run each way, and only the selection trimmed in one of the two); at 1,007,160: 607-633 against
610-642 MB, 39.0-42.2 against 39.2-39.8 s. At 8 M, while DuckDB aggregated the feedback of 13,640 data files,
glibc's heaps held 356 MB, 201 MB of it free."""


@contextmanager
def trimming(interval_s: float | None = TRIM_INTERVAL_S) -> Iterator[bool]:
    """While the ``with`` block runs, a daemon thread calls :func:`trim_heap` every ``interval_s`` seconds (and
    is stopped and joined when the block ends, however it ends). Yields whether it runs: False for
    ``interval_s`` None or where the C library is not glibc. Raises ``ValueError`` for ``interval_s`` <= 0."""
    if interval_s is not None and interval_s <= 0:
        raise ValueError("interval_s must be positive")
    if interval_s is None or _glibc("malloc_trim") is None:
        yield False
        return
    stop = threading.Event()

    def trim() -> None:
        while not stop.wait(interval_s):
            trim_heap()

    thread = threading.Thread(target=trim, name="flywheel-trim-heap", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join()


@functools.cache
def _glibc(name: str):
    """glibc's function ``name`` through ctypes, None where the C library is not glibc or lacks it."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
