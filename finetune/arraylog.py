"""Append-only arrays that a streaming build keeps across batches, in a file of its work folder.

The build's per-batch bookkeeping (keep masks, the conversation number and prompt cluster of each kept row,
the near-duplicate links) grows with the data: ~7 MB at 1 M conversations, ~27 MB at 4 M. :class:`ArrayLog`
writes each batch's array to a file instead (``numpy.ndarray.tofile``) and reads it back when asked
(``numpy.fromfile`` at the array's offset): a batch at a time in pass 2, whole for the splits.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["ArrayLog"]


class ArrayLog:
    """An append-only sequence of 1-D arrays of one ``dtype`` (one per :meth:`append`, e.g. one per batch).

    With a ``folder``, the items go to a new file in it (created there; deleted with the folder: the build
    removes its work folder at the end) and memory holds only the end offset of each array (8 bytes an
    array); without one (``None``), the arrays stay in memory. ``log[i]`` is the ``i``-th array (a copy read
    back from the file), ``len(log)`` the number of arrays,
    ``nbytes`` the memory held and ``disk_bytes`` the file's size. Raises ``OSError`` when the folder
    cannot be written.
    """

    def __init__(self, folder: Path | None, dtype) -> None:
        self.dtype = np.dtype(dtype)
        self._ends = [0]  # item offsets: array i is items _ends[i]:_ends[i + 1]
        self._arrays: list[np.ndarray] | None = None
        self.path: Path | None = None
        if folder is None:
            self._arrays = []
        else:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=folder, suffix=".log")
            os.close(fd)
            self.path = Path(name)

    def __len__(self) -> int:
        return len(self._ends) - 1

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (0 with a folder, where only the offsets stay)."""
        return sum(a.nbytes for a in self._arrays) if self._arrays is not None else 0

    @property
    def disk_bytes(self) -> int:
        return self._ends[-1] * self.dtype.itemsize if self.path is not None else 0

    def append(self, array: np.ndarray) -> None:
        """Add ``array`` (any shape, flattened; cast to the log's dtype) as the next item."""
        array = np.ascontiguousarray(array, dtype=self.dtype).ravel()
        self._ends.append(self._ends[-1] + len(array))
        if self._arrays is not None:
            self._arrays.append(array)
        elif len(array):
            with open(self.path, "ab") as f:
                array.tofile(f)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._arrays is not None:
            return self._arrays[i]
        start, end = self._ends[i], self._ends[i + 1]
        if end == start:
            return np.empty(0, dtype=self.dtype)
        return np.fromfile(self.path, dtype=self.dtype, count=end - start, offset=start * self.dtype.itemsize)
