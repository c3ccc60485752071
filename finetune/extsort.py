"""External sort of a Parquet file: range buckets on the first sort key, each bucket sorted with Arrow.

The streaming build needs its candidates in stream order (conversation id first). DuckDB's ``ORDER BY``
over the candidate query holds far more than its ``memory_limit`` at a million conversations (about
1.2 GB of RSS with a 1 GB limit, and it ran out of memory under 640 MB), so the query is written unsorted and
sorted here in memory proportional to ``bucket_rows``:

1. **Boundaries**: every ``stride``-th value of the first key (about 64 per bucket, read one row group at a
   time) gives ``k - 1`` boundaries at its quantiles, ``k = ceil(rows / bucket_rows)``;
2. **Distribution**: each batch of the source goes, row by row, to the bucket whose range holds its first
   key (``b[j-1] <= key < b[j]``; nulls to the last bucket), appended to that bucket's Arrow IPC file;
3. **Sort**: bucket after bucket is read whole, sorted by all keys with Arrow's stable sort (nulls last,
   as DuckDB's default), and appended to the target.

Strings compare by code point in Python and by UTF-8 bytes in Arrow and DuckDB: the same order. The
result is the source's rows in key order, whatever the boundaries (they only size the buckets); rows
equal in every key keep the source's order among them. Memory: one source batch plus the largest bucket
and its sorted copy (buckets hold ``bucket_rows`` rows on average, more where one first-key value has
many rows: rows sharing a first key are never split).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["sort_parquet"]

_SAMPLES_PER_BUCKET = 64
_MAX_BUCKETS = 1024


def _boundaries(source: pq.ParquetFile, column: str, buckets: int) -> np.ndarray:
    """``buckets - 1`` (or fewer, when values repeat) ascending distinct values of ``column`` splitting its
    non-null values into about equal parts (object array of Python values)."""
    rows = source.metadata.num_rows
    stride = max(1, rows // (buckets * _SAMPLES_PER_BUCKET))
    sample = []
    seen = 0
    for i in range(source.metadata.num_row_groups):
        col = source.read_row_group(i, columns=[column])[column]
        n = len(col)
        picks = np.arange((-seen) % stride, n, stride)
        seen += n
        sample.append(pc.drop_null(col.take(pa.array(picks))).combine_chunks())
    values = pa.concat_arrays(sample) if sample else pa.array([])
    if not len(values):
        return np.array([], dtype=object)
    ordered = values.take(pc.sort_indices(values)).to_numpy(zero_copy_only=False)
    cuts = [ordered[(j * len(ordered)) // buckets] for j in range(1, buckets)]
    return np.array(sorted(set(cuts)), dtype=object)


def _bucket_of(col: pa.Array, bounds: np.ndarray) -> np.ndarray:
    """Bucket number of each value of ``col`` (int64): how many boundaries are <= it; nulls last."""
    if not len(bounds):
        return np.zeros(len(col), dtype=np.int64)
    values = col.to_numpy(zero_copy_only=False)
    valid = ~pc.is_null(col).to_numpy(zero_copy_only=False)
    out = np.full(len(col), len(bounds), dtype=np.int64)
    out[valid] = np.searchsorted(bounds, values[valid], side="right")
    return out


def sort_parquet(source: Path, target: Path, keys: Sequence[tuple[str, str]], work: Path,
                 bucket_rows: int = 32_768, batch_rows: int = 8192, compression: str = "lz4") -> int:
    """Write the rows of the Parquet file ``source`` to ``target`` ordered by ``keys`` (``(column,
    "ascending" | "descending")`` pairs, nulls last), through bucket files in the folder ``work`` (made and
    removed here). ``bucket_rows``: rows a bucket holds on average (memory scales with it); ``batch_rows``:
    rows read at a time and the target's row-group size. Returns the number of rows. Raises
    ``ValueError`` for an empty ``keys`` and what pyarrow raises for unreadable files or unknown columns."""
    if not keys:
        raise ValueError("sort_parquet needs at least one sort key")
    file = pq.ParquetFile(source, pre_buffer=False)
    schema, rows = file.schema_arrow, file.metadata.num_rows
    sort_keys = [(name, order, "at_end") for name, order in keys]
    writer = pq.ParquetWriter(target, schema, compression=compression)
    try:
        buckets = min(_MAX_BUCKETS, max(1, math.ceil(rows / max(1, bucket_rows))))
        if buckets == 1:
            table = file.read()
            if table.num_rows:
                writer.write_table(table.sort_by(sort_keys), row_group_size=batch_rows)
            return rows
        first = keys[0][0]
        bounds = _boundaries(file, first, buckets)
        work.mkdir(parents=True, exist_ok=True)
        paths = [work / f"{j}.arrow" for j in range(len(bounds) + 1)]
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        sinks = [pa.ipc.new_file(p, schema, options=options) for p in paths]
        try:
            for batch in file.iter_batches(batch_size=batch_rows):
                bucket = _bucket_of(batch.column(first), bounds)
                order = np.argsort(bucket, kind="stable")
                grouped = batch.take(pa.array(order))
                counts = np.bincount(bucket, minlength=len(sinks))
                start = 0
                for j in np.flatnonzero(counts).tolist():
                    sinks[j].write_batch(grouped.slice(start, int(counts[j])))
                    start += int(counts[j])
        finally:
            for sink in sinks:
                sink.close()
        for path in paths:
            with pa.memory_map(str(path)) as mapped:
                table = pa.ipc.open_file(mapped).read_all()
            if table.num_rows:
                writer.write_table(table.sort_by(sort_keys), row_group_size=batch_rows)
            del table
            path.unlink()
        return rows
    finally:
        writer.close()
        shutil.rmtree(work, ignore_errors=True)
