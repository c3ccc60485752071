"""A compact, append-only map from 64-bit keys to 32-bit values, for state kept across a streaming build.

Keys live in sorted runs of numpy arrays (an LSM-style layout): each :meth:`KeyIndex.add` appends one
sorted run and runs are merged while the newest is at least half the size of the one before, so there
are O(log n) runs and every key is stored once. Memory is 12 bytes a key (8 for the key, 4 for the
value) plus, during a merge (linear, :func:`_merge`), the merged copy and 9 bytes a key of the newer run.
Lookups are vectorised binary searches over the runs. Nothing is ever deleted.

With a ``folder``, the in-memory runs are written to disk as one sorted run whenever they pass
``memory_keys`` keys (:class:`DiskRun`); beyond :data:`_MAX_DISK_RUNS` of them, disk runs are merged as the
in-memory ones are (streaming, in chunks). Memory then holds at most ``memory_keys`` keys in runs and nothing
per key on disk: a disk run's blocks of 512 keys (4 KiB), their Bloom filters (16 bits a key, 7 probes: under
0.1 % of absent keys reach the keys; Bloom, "Space/time trade-offs in hash coding with allowable errors", CACM
1970) and its fence keys (the first key of each block) are all in files, read through memory maps whose pages
a lookup drops from the process again (they stay in the system's page cache, so a lookup reads no disk while
the files fit there). A lookup finds each needle's block among the fences, tests the block's filter and
binary-searches the block's keys only for the needles the filter lets through.
"""

from __future__ import annotations

import mmap
import tempfile
from pathlib import Path

import numpy as np

from finetune import kernels, minhash

__all__ = ["DiskRun", "KeyIndex", "mix64"]


def mix64(*parts: np.ndarray) -> np.ndarray:
    """One uint64 per position from equally long integer arrays ``parts`` (MurmurHash3's finalizer chained
    over them). Equal inputs give equal outputs; different ones collide with probability about 2**-64."""
    h = np.zeros(len(parts[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, part in enumerate(parts):
            h ^= np.asarray(part).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15 * (i + 1) & 0xFFFFFFFFFFFFFFFF)
            h = minhash.fmix(h, minhash._F64)
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


_BLOCK = 512  # keys per block of a disk run: 4 KiB of keys
_MAX_DISK_RUNS = 8  # disk runs merge only beyond this many (a merge rewrites both runs and their filters)
_BLOOM_BITS = 16
"""Bits of a disk run's Bloom filter per key: with 7 probes, (1 - e**(-7/16))**7, about 0.07 %, of absent keys
pass a block's filter and cost a block read (Bloom 1970; every block's filter holds exactly :data:`_BLOCK` keys,
so blocking adds no load variance)."""
_BLOOM_WORDS = _BLOCK * _BLOOM_BITS // 64  # uint64 words of one block's filter: 1 KiB
_WINDOW_BLOCKS = 4096
"""Blocks a lookup maps at a time before it drops their pages again: 4 MiB of filter, 16 MiB of keys, 8 MiB of
values."""
_BLOCK_BYTES = (_BLOCK * 8, _BLOCK * 4, _BLOOM_WORDS * 8)  # a block's bytes in the keys, values and filter files
_PROBES = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                    0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB], dtype=np.uint64)
"""Odd multipliers: probe ``i`` of a key is a bit chosen by the high bits of ``key * _PROBES[i]``
(multiply-shift hashing, :func:`finetune.kernels.bloom_add`; the keys are already mixed 64-bit hashes)."""


class DiskRun:
    """One sorted run of ``n`` keys and their values in files in ``folder``, padded to whole blocks of
    :data:`_BLOCK` keys with the last key, with a Bloom filter per block (1 KiB, :data:`_BLOOM_BITS` a key)
    and the fence keys (the first key of every block) in two more files. Built from ``chunks``: ``(keys,
    values)`` pairs whose keys ascend across chunks (unique), values int32-sized; ``n`` is their total length
    (> 0). Raises ``ValueError`` when the chunks hold other than ``n`` keys, ``OSError`` when ``folder``
    cannot be written.

    Nothing of the run stays in memory: all four files are read through memory maps whose pages a lookup
    drops from the process again (they stay in the system's page cache), :data:`_WINDOW_BLOCKS` blocks at a
    time (the kernel maps up to 16 neighbouring pages on each fault, so dropping them only at the end of a
    lookup let the keys' pages of a batch's many hits pile up: 160 MB at 8 M conversations). A lookup of sorted
    needles finds each needle's block by binary search over the fences, tests the needle against that block's
    filter (:func:`finetune.kernels.bloom_maybe`) and, only for the needles that pass, binary-searches the
    block's keys (:func:`finetune.kernels.find_in_blocks`).
    """

    def __init__(self, folder: Path, chunks, n: int) -> None:
        self.n = n
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, suffix=".keys")
        self.paths = [Path(name)] + [Path(name).with_suffix(s) for s in (".values", ".bloom", ".fence")]
        written, pending = 0, np.zeros(0, dtype=np.uint64)
        with open(fd, "wb") as kf, open(self.paths[1], "wb") as vf, open(self.paths[2], "wb") as bf, \
                open(self.paths[3], "wb") as ff:
            for keys, values in chunks:
                if not len(keys):
                    continue
                keys.tofile(kf)
                np.asarray(values, dtype=np.int32).tofile(vf)
                written += len(keys)
                pending = np.concatenate([pending, keys])
                full = len(pending) - len(pending) % _BLOCK
                self._write_blocks(pending[:full].reshape(-1, _BLOCK), bf, ff)
                pending = pending[full:].copy()
            if written != n:
                raise ValueError(f"DiskRun: {written} keys written, {n} announced")
            pad = (-n) % _BLOCK
            if pad:
                padding = np.full(pad, pending[-1], dtype=np.uint64)
                padding.tofile(kf)
                np.zeros(pad, dtype=np.int32).tofile(vf)
                self._write_blocks(np.concatenate([pending, padding]).reshape(1, _BLOCK), bf, ff)
        self._files = [open(path, "rb") for path in self.paths]
        self._maps = [mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) for fh in self._files]
        self.keys = np.frombuffer(self._maps[0], dtype=np.uint64)
        self.values = np.frombuffer(self._maps[1], dtype=np.int32)
        self.bits = np.frombuffer(self._maps[2], dtype=np.uint64).reshape(-1, _BLOOM_WORDS)
        self.fence = np.frombuffer(self._maps[3], dtype=np.uint64)

    @staticmethod
    def _write_blocks(blocks: np.ndarray, bloom_file, fence_file) -> None:
        """Append the filters and fence keys of ``blocks`` (uint64, ``(m, _BLOCK)`` keys) to their files."""
        if not len(blocks):
            return
        bits = np.zeros((len(blocks), _BLOOM_WORDS), dtype=np.uint64)
        kernels.bloom_add(bits, blocks, _PROBES)
        bits.tofile(bloom_file)
        np.ascontiguousarray(blocks[:, 0]).tofile(fence_file)

    @property
    def disk_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.paths)

    def drop_pages(self) -> None:
        """Drop the run's file pages from this process's memory (they stay in the page cache)."""
        for mapped in self._maps:
            if hasattr(mapped, "madvise"):
                mapped.madvise(mmap.MADV_DONTNEED)

    def _windows(self, block: np.ndarray):
        """``(w, lo, hi)`` for each window ``w`` of :data:`_WINDOW_BLOCKS` blocks that holds some of ``block``
        (ascending block numbers; ``-1``, before the first block, lies in none): ``block[lo:hi]`` lie in it."""
        cuts = np.searchsorted(block, np.arange(0, len(self.fence) + _WINDOW_BLOCKS, _WINDOW_BLOCKS))
        for w, (lo, hi) in enumerate(zip(cuts[:-1].tolist(), cuts[1:].tolist())):
            if lo < hi:
                yield w, lo, hi

    def _drop_window(self, w: int, which: tuple[int, ...]) -> None:
        """Drop window ``w``'s pages of the maps ``which`` (0 keys, 1 values, 2 filter) from the process."""
        for i in which:
            mapped = self._maps[i]
            if hasattr(mapped, "madvise"):
                size = _WINDOW_BLOCKS * _BLOCK_BYTES[i]
                mapped.madvise(mmap.MADV_DONTNEED, w * size, min(size, len(mapped) - w * size))

    def get(self, needles: np.ndarray) -> np.ndarray:
        """Values of ``needles`` (uint64, sorted): int64, ``-1`` where absent. The filter, then the keys and
        values, are read a window of :data:`_WINDOW_BLOCKS` blocks at a time, each window's pages dropped
        after it."""
        out = np.full(len(needles), -1, dtype=np.int64)
        if not len(needles):
            return out
        block = np.searchsorted(self.fence, needles, side="right") - 1
        self.drop_pages()  # the fences' pages
        maybe = np.zeros(len(needles), dtype=bool)
        for w, lo, hi in self._windows(block):
            first = w * _WINDOW_BLOCKS
            maybe[lo:hi] = kernels.bloom_maybe(self.bits[first:first + _WINDOW_BLOCKS], block[lo:hi], needles[lo:hi],
                                               _PROBES, first)
            self._drop_window(w, (2,))
        maybe = np.flatnonzero(maybe)
        block = block[maybe]
        for w, lo, hi in self._windows(block):
            at = kernels.find_in_blocks(self.keys, block[lo:hi], needles[maybe[lo:hi]], _BLOCK)
            hit = at >= 0
            out[maybe[lo:hi][hit]] = self.values[at[hit]]
            self._drop_window(w, (0, 1))
        self.drop_pages()  # what the kernel mapped around a window's faults, beyond the window
        return out

    def chunks(self, size: int = 1 << 18):
        """The run's ``(keys, values)`` in ascending chunks of ``size`` (copies; pages dropped after each)."""
        for lo in range(0, self.n, size):
            hi = min(self.n, lo + size)
            yield self.keys[lo:hi].copy(), self.values[lo:hi].copy()
            self.drop_pages()

    def remove(self) -> None:
        """Close and delete the run's files."""
        self.keys = self.values = self.bits = self.fence = None
        for mapped in self._maps:
            mapped.close()
        for fh in self._files:
            fh.close()
        for path in self.paths:
            path.unlink(missing_ok=True)


def _merged_chunks(a: DiskRun, b: DiskRun, size: int = 1 << 18):
    """The keys and values of runs ``a`` and ``b`` merged, in ascending chunks (a streaming 2-way merge)."""
    ia, ib = a.chunks(size), b.chunks(size)
    ka, va = next(ia, (None, None))
    kb, vb = next(ib, (None, None))
    while ka is not None and kb is not None:
        limit = min(ka[-1], kb[-1])  # everything up to it is in hand on both sides
        ca, cb = int(np.searchsorted(ka, limit, side="right")), int(np.searchsorted(kb, limit, side="right"))
        keys = np.empty(ca + cb, dtype=np.uint64)
        values = np.empty(ca + cb, dtype=np.int32)
        _merge(ka[:ca], va[:ca], kb[:cb], vb[:cb], keys, values)
        yield keys, values
        ka, va = (ka[ca:], va[ca:]) if ca < len(ka) else next(ia, (None, None))
        kb, vb = (kb[cb:], vb[cb:]) if cb < len(kb) else next(ib, (None, None))
    for keys, values, rest in ((ka, va, ia), (kb, vb, ib)):
        if keys is not None:
            yield keys, values
            yield from rest


class KeyIndex:
    """uint64 key → int32 value; a key is added once (the first value stays).

    ``get(keys)`` returns int64 values (``-1`` where a key is absent); ``add(keys, values)`` inserts keys
    that are absent (the caller checks with :meth:`get`; duplicates within one call keep the first).
    ``len(index)`` is the number of keys; ``nbytes`` the memory the index holds, ``disk_bytes`` what its
    disk runs hold. ``folder``: where runs go once the in-memory ones pass ``memory_keys`` keys (None: all
    in memory); :meth:`close` deletes them.
    """

    def __init__(self, folder: Path | None = None, memory_keys: int = 1 << 20) -> None:
        self._keys: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._disk: list[DiskRun] = []
        self.folder = folder
        self.memory_keys = memory_keys

    def __len__(self) -> int:
        return sum(len(k) for k in self._keys) + sum(run.n for run in self._disk)

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in zip(self._keys, self._values))  # disk runs hold nothing here

    @property
    def disk_bytes(self) -> int:
        return sum(run.disk_bytes for run in self._disk)

    def close(self) -> None:
        """Delete the disk runs (the index is empty of them afterwards)."""
        for run in self._disk:
            run.remove()
        self._disk = []

    def _merge_newest(self) -> None:
        """Merge the two newest in-memory runs into one."""
        b, bv = self._keys.pop(), self._values.pop()
        a, av = self._keys.pop(), self._values.pop()
        self._keys.append(np.empty(len(a) + len(b), dtype=np.uint64))
        self._values.append(np.empty(len(a) + len(b), dtype=np.int32))
        _merge(a, av, b, bv, self._keys[-1], self._values[-1])

    def get(self, keys: np.ndarray) -> np.ndarray:
        """Values of ``keys`` (uint64, any shape flattened to 1-D): int64, ``-1`` where absent."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64).ravel()
        out = np.full(len(keys), -1, dtype=np.int64)
        if not (self._keys or self._disk) or not len(keys):
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
        missing = np.flatnonzero(found < 0)
        for run in self._disk:
            if not len(missing):
                break
            got = run.get(needles[missing])
            found[missing] = got
            missing = missing[got < 0]
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
            self._merge_newest()
        if self.folder is not None and sum(len(k) for k in self._keys) > self.memory_keys:
            while len(self._keys) > 1:
                self._merge_newest()
            keys, values = self._keys.pop(), self._values.pop()
            self._disk.append(DiskRun(self.folder, [(keys, values)], len(keys)))
            del keys, values
            while len(self._disk) > _MAX_DISK_RUNS and self._disk[-1].n * 2 >= self._disk[-2].n:
                b, a = self._disk.pop(), self._disk.pop()
                self._disk.append(DiskRun(self.folder, _merged_chunks(a, b), a.n + b.n))
                a.remove()
                b.remove()
