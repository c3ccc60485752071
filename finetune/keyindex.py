"""A compact, append-only map from 64-bit keys to 32-bit values, for state kept across a streaming build.

Keys live in sorted runs of numpy arrays (an LSM-style layout): each :meth:`KeyIndex.add` appends one
sorted run and runs are merged while the newest is at least half the size of the one before, so there
are O(log n) runs and every key is stored once. Memory is 12 bytes a key (8 for the key, 4 for the
value) plus, during a merge (linear, :func:`_merge`), the merged copy and 9 bytes a key of the newer run. Lookups are vectorised binary
searches over the runs. Nothing is ever deleted.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KeyIndex", "mix64"]

_M1, _M2, _S = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53), np.uint64(33)


def mix64(*parts: np.ndarray) -> np.ndarray:
    """One uint64 per position from equally long integer arrays ``parts`` (MurmurHash3's finalizer chained
    over them). Equal inputs give equal outputs; different ones collide with probability about 2**-64."""
    h = np.zeros(len(parts[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, part in enumerate(parts):
            h ^= np.asarray(part).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15 * (i + 1) & 0xFFFFFFFFFFFFFFFF)
            h ^= h >> _S
            h *= _M1
            h ^= h >> _S
            h *= _M2
            h ^= h >> _S
    return h


def _merge(a: np.ndarray, av: np.ndarray, b: np.ndarray, bv: np.ndarray, keys: np.ndarray, values: np.ndarray) -> None:
    """Merge the sorted runs ``a`` and ``b`` (with their values) into ``keys`` and ``values`` (length
    ``len(a) + len(b)``) in linear time: ``b``'s keys go after the equal keys of ``a``, as a stable sort of
    the two runs back to back would put them."""
    at = np.searchsorted(a, b, side="right") + np.arange(len(b))
    from_a = np.ones(len(keys), dtype=bool)
    from_a[at] = False
    keys[at] = b
    values[at] = bv
    keys[from_a] = a
    values[from_a] = av


class KeyIndex:
    """uint64 key → int32 value; a key is added once (the first value stays).

    ``get(keys)`` returns int64 values (``-1`` where a key is absent); ``add(keys, values)`` inserts keys
    that are absent (the caller checks with :meth:`get`; duplicates within one call keep the first).
    ``len(index)`` is the number of keys; ``nbytes`` the memory the runs hold.
    """

    def __init__(self) -> None:
        self._keys: list[np.ndarray] = []
        self._values: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(k) for k in self._keys)

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in zip(self._keys, self._values))

    def get(self, keys: np.ndarray) -> np.ndarray:
        """Values of ``keys`` (uint64, any shape flattened to 1-D): int64, ``-1`` where absent."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64).ravel()
        out = np.full(len(keys), -1, dtype=np.int64)
        if not self._keys or not len(keys):
            return out
        # sorted needles: neighbouring lookups touch neighbouring memory (about 4x faster on runs of
        # millions of keys than searching in the callers' random order)
        order = np.argsort(keys)
        needles = keys[order]
        found = np.full(len(keys), -1, dtype=np.int64)
        for run_keys, run_values in zip(self._keys, self._values):
            pos = np.searchsorted(run_keys, needles)
            pos[pos == len(run_keys)] = 0
            hit = run_keys[pos] == needles
            found[hit] = run_values[pos[hit]]
        out[order] = found
        return out

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Boolean mask: which ``keys`` are present."""
        return self.get(keys) >= 0

    def add(self, keys: np.ndarray, values: np.ndarray | int = 0) -> None:
        """Insert ``keys`` (uint64, absent from the index) with ``values`` (int32-sized, or one for all).
        Raises ``ValueError`` for a value outside int32."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64).ravel()
        if not len(keys):
            return
        values = np.broadcast_to(np.asarray(values, dtype=np.int64), keys.shape)
        if len(values) and (values.max() > np.iinfo(np.int32).max or values.min() < 0):
            raise ValueError("KeyIndex values must be in [0, 2**31)")
        uniq, first = np.unique(keys, return_index=True)
        self._keys.append(uniq)
        self._values.append(values[first].astype(np.int32))
        while len(self._keys) > 1 and len(self._keys[-1]) * 2 >= len(self._keys[-2]):
            b, bv = self._keys.pop(-1), self._values.pop(-1)
            a, av = self._keys.pop(-1), self._values.pop(-1)
            self._keys.append(np.empty(len(a) + len(b), dtype=np.uint64))
            self._values.append(np.empty(len(a) + len(b), dtype=np.int32))
            _merge(a, av, b, bv, self._keys[-1], self._values[-1])
