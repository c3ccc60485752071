"""Ordered prefetching through a thread pool: the next items' work runs while the caller uses the current one."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor

__all__ = ["prefetch"]


def prefetch(pool: Executor, items: Iterable, fn: Callable, depth: int = 1) -> Iterator:
    """``fn(item)`` for each of ``items``, in order; up to ``depth`` items ahead are computed in ``pool``
    while the caller works on the current one (items are drawn in the caller's thread, in order). Raises
    what ``fn`` raised, when its result is reached."""
    futures: deque = deque()
    for item in items:
        futures.append(pool.submit(fn, item))
        if len(futures) > depth:
            yield futures.popleft().result()
    while futures:
        yield futures.popleft().result()
