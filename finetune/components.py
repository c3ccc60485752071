"""The components that the splits follow: prompt clusters joined by shared conversations and LSH links, in files.

Kept rows join when they share a conversation or a prompt cluster, and clusters also join through their LSH
links (:meth:`finetune.neardup.StreamingClusters.link_batches`). Pass 1 logs the kept rows in stream order, each
conversation's rows back to back, so joining every cluster a conversation's rows carry to the first of them
gives the components a graph with a node per conversation and per cluster gives
(:func:`finetune.splits.assign_splits`), with a node per cluster only: :class:`ClusterComponents` is a
union-find over cluster ids. A union makes the smaller root the parent of the larger (so a node's parent is
never above it), a find halves the path it walks (Tarjan and van Leeuwen, "Worst-case analysis of set union
algorithms", JACM 1984), and :meth:`ClusterComponents.flatten` then points every cluster at its root in one
ascending pass: a component is named by its smallest cluster id.

Memory: with a ``folder``, the parent of each cluster (int32) is a memory map of a file there
(:class:`MappedArray`) whose pages are dropped from the process after each batch of unions or lookups (they
stay in the system's page cache), so the process holds what one batch touches, not a number a cluster.
"""

from __future__ import annotations

import mmap
import tempfile
from pathlib import Path

import numpy as np
from numba import njit

__all__ = ["ClusterComponents", "MappedArray"]

_FILL_ITEMS = 1 << 20  # items a file is filled with at a time


class MappedArray:
    """A 1-D array of ``n`` items of ``dtype``, each set to ``fill`` (``None``: to its index), in a new file of
    ``folder`` mapped into memory (``None``: an ordinary array in memory). :attr:`array` is the writable numpy
    view; :meth:`drop_pages` drops its pages from the process (written ones stay in the page cache, and the
    file); :meth:`close` unmaps and deletes the file. Raises ``OSError`` when the folder cannot be written."""

    def __init__(self, folder: Path | None, n: int, dtype, fill) -> None:
        self.path: Path | None = None
        self._map: mmap.mmap | None = None
        dtype = np.dtype(dtype)
        if folder is None or n == 0:
            self.array = np.arange(n, dtype=dtype) if fill is None else np.full(n, fill, dtype=dtype)
            return
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, suffix=".array")
        self.path = Path(name)
        with open(fd, "wb") as fh:
            for lo in range(0, n, _FILL_ITEMS):
                items = min(n, lo + _FILL_ITEMS) - lo
                part = np.arange(lo, lo + items, dtype=dtype) if fill is None else np.full(items, fill, dtype=dtype)
                part.tofile(fh)
        with open(self.path, "r+b") as fh:
            self._map = mmap.mmap(fh.fileno(), 0)
        self.array = np.frombuffer(self._map, dtype=dtype)

    def drop_pages(self) -> None:
        """Drop the array's pages from this process's memory (no-op in memory)."""
        if self._map is not None and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        """Unmap and delete the file (no-op in memory)."""
        if self._map is not None:
            self.array = None
            self._map.close()
            self._map = None
            self.path.unlink(missing_ok=True)


@njit(cache=True, nogil=True, inline="always")
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True, nogil=True, inline="always")
def _union(parent, a, b):
    ra, rb = _find(parent, a), _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@njit(cache=True, nogil=True)
def _join_runs(parent, groups, clusters, group, first):  # pragma: no cover - compiled
    for i in range(len(groups)):
        if groups[i] != group:
            group, first = groups[i], clusters[i]
        else:
            _union(parent, first, clusters[i])
    return group, first


@njit(cache=True, nogil=True)
def _join_pairs(parent, pairs):  # pragma: no cover - compiled
    for i in range(pairs.shape[0]):
        _union(parent, pairs[i, 0], pairs[i, 1])


@njit(cache=True, nogil=True)
def _flatten(parent, lo, hi):  # pragma: no cover - compiled
    for i in range(lo, hi):
        parent[i] = parent[parent[i]]


class ClusterComponents:
    """Union-find over ``n_clusters`` cluster ids (``0 <= id < n_clusters < 2**31``), its parents in a file
    of ``folder`` (:class:`MappedArray`; ``None``: in memory).

    Feed it the kept rows batch by batch in stream order (:meth:`join_conversations`) and the LSH links
    (:meth:`join_pairs`), then :meth:`flatten` once; :meth:`roots` then names each cluster's component by
    its smallest cluster id. Raises ``ValueError`` for ids outside the range and ``RuntimeError`` for a
    lookup before :meth:`flatten` or a union after it."""

    def __init__(self, n_clusters: int, folder: Path | None = None) -> None:
        if not 0 <= n_clusters < 2**31:
            raise ValueError(f"ClusterComponents takes 0 to 2**31 - 1 clusters, not {n_clusters}")
        self.n = n_clusters
        self._parent = MappedArray(folder, n_clusters, np.int32, None)  # fill None: each its own parent
        self._group, self._first = np.int64(-1), np.int32(0)
        self.flat = False

    def _check(self, ids: np.ndarray) -> None:
        if self.flat:
            raise RuntimeError("ClusterComponents: union after flatten")
        if len(ids) and (ids.min() < 0 or ids.max() >= self.n):
            raise ValueError(f"cluster ids must lie in [0, {self.n})")

    def join_conversations(self, groups: np.ndarray, clusters: np.ndarray) -> None:
        """Join the clusters of rows of one conversation: ``groups`` (int, (n,): conversation numbers, each
        conversation's rows back to back, in the same order over successive calls) and ``clusters`` (int,
        (n,): each row's cluster id)."""
        clusters = np.ascontiguousarray(clusters, dtype=np.int32)
        self._check(clusters)
        self._group, self._first = _join_runs(self._parent.array, np.ascontiguousarray(groups, dtype=np.int64),
                                              clusters, self._group, self._first)
        self._parent.drop_pages()

    def join_pairs(self, pairs: np.ndarray) -> None:
        """Join the two clusters of each row of ``pairs`` (int, (m, 2))."""
        pairs = np.ascontiguousarray(np.asarray(pairs).reshape(-1, 2), dtype=np.int32)
        self._check(pairs.ravel())
        _join_pairs(self._parent.array, pairs)
        self._parent.drop_pages()

    def flatten(self) -> None:
        """Point every cluster at its component's root (its smallest cluster id), in ascending chunks."""
        for lo in range(0, self.n, _FILL_ITEMS):
            _flatten(self._parent.array, lo, min(self.n, lo + _FILL_ITEMS))
            self._parent.drop_pages()
        self.flat = True

    def roots(self, clusters: np.ndarray) -> np.ndarray:
        """int64 (n,): the component (smallest cluster id) of each of ``clusters`` (int, (n,))."""
        if not self.flat:
            raise RuntimeError("ClusterComponents: roots before flatten")
        clusters = np.asarray(clusters, dtype=np.int64)
        if len(clusters) and (clusters.min() < 0 or clusters.max() >= self.n):
            raise ValueError(f"cluster ids must lie in [0, {self.n})")
        out = self._parent.array[clusters].astype(np.int64)
        self._parent.drop_pages()
        return out

    def close(self) -> None:
        """Delete the parents' file."""
        self._parent.close()

