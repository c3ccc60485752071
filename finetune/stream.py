"""The streaming build: select → clean → deduplicate → split → redact → write, in batches of rows.

1. **Selection**: DuckDB streams the candidate query's rows (:func:`finetune.select.candidate_query`)
   unsorted through its Arrow reader (spilling to disk beyond ``duckdb_memory``) into
   :class:`finetune.extsort.ExternalSort`, which writes them in stream order (:data:`finetune.select.SORT_KEYS`:
   conversation id first) to an Arrow IPC file in the work folder, in record batches of ``batch_rows``,
   through sorted runs of ``sort_rows`` rows. DuckDB's own ``ORDER BY`` took some 1.2 GB of
   memory under a 1 GB limit at a million conversations (and ran out of memory under 640 MB), and its
   Python result (``fetch_record_batch``) holds the whole sorted result.
2. **Pass 1** reads it back batch by batch: :class:`finetune.cleaning.Cleaner` computes the
   cleaning masks and fingerprints of the next batch in a second thread while this one is deduplicated
   against what earlier batches kept; it records which rows of each batch are kept.
3. **Splits**: a union-find over the prompt clusters, joined by shared conversations and LSH links
   (:mod:`finetune.components`), gives each kept row a component; each component goes to the split
   :func:`finetune.splits.split_indices` gives the component's smallest conversation id (its first one in
   stream order).
4. **Pass 2** re-reads the selection, keeps the rows pass 1 kept, applies the PII redaction of each batch's
   distinct texts, and appends each split to ``data/<split>.parquet`` (the JSONL exports are written from
   these when asked: :func:`finetune.exports.write_export`). For large builds Presidio (:mod:`finetune.redact`)
   runs in worker processes (started, and loading Presidio, during the selection) from the start of pass 1,
   over the whole selection in chunks of record batches, so pass 2 mostly finds its chunks done; small builds
   redact in this process, chunk by chunk as pass 2 reaches them.

Memory: DuckDB is capped by ``duckdb_memory`` (it spills to the work folder beyond it, but a join that
spills is several times slower), so ``sft`` and ``kto`` candidates are selected in hash partitions of the
answers when their join's hash table would pass three quarters of it (``partition_answers``; the
``preference`` query runs whole); the sort holds a run or range of ``sort_rows`` rows (:mod:`finetune.extsort`);
pass 1 holds a few batches and its key indexes at most ``memory_keys`` keys each in memory (12 bytes a key),
the rest on disk with their Bloom filters and fence keys (read through memory maps whose pages each lookup
drops again: :mod:`finetune.keyindex`); its per-row arrays for the splits and pass 2 (keep mask, conversation
number and prompt cluster of each kept row, near-duplicate links) go to files in the work folder
(:mod:`finetune.arraylog`); pass 2 holds a few batches and the PII text keys (a key index like pass 1's).
Freed memory is handed back to the system between phases (``flywheel dataset`` has Arrow allocate from the
system allocator: :data:`finetune.cli.ARROW_POOL`), and within them where glibc's mmap threshold is fixed
(:mod:`finetune.allocator`: a batch's freed columns are unmapped instead of kept in glibc's heap), and by a
thread that returns the heaps' free pages every ``trim_interval_s`` (:func:`finetune.allocator.trimming`).
:attr:`StreamStats.state_bytes` and ``state_disk_bytes`` report pass 1's state; :attr:`StreamStats.peak_rss_mb`
the peak of each phase.

The output depends only on the rows, the spec and ``batch_rows``: the same spec on the same snapshots
with the same batch size is written byte for byte the same.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter, deque
from contextlib import ExitStack, closing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from finetune import extsort, select
from finetune.allocator import TRIM_INTERVAL_S, trim_heap, trimming
from finetune.cleaning import ANSWERS, Cleaner, step_names
from finetune.columns import prompt_parts, string_column
from finetune.components import MappedArray
from finetune.config import memory_bytes
from finetune.errors import DatasetError
from finetune.exports import SCHEMAS, format_rows
from finetune.prefetch import prefetch
from finetune.redact import Redactor, replace_texts, start_workers
from finetune.spec import DatasetSpec
from finetune.splits import SPLITS, split_indices

__all__ = ["StreamConfig", "StreamStats", "run"]

_SELECTED = "selected.arrow"


@dataclass(frozen=True)
class StreamConfig:
    """Knobs of the streaming build.

    ``batch_rows``: candidate rows per batch (memory scales with it). ``sort_rows``: rows per run and range of
    the selection's external sort (memory scales with it too: at 1 M conversations the selection's peak RSS was
    0.90 GB with 16,384 against 1.13 GB with 32,768, in the same time, below pass 2's peak then, ~1.04 GB;
    fewer rows make more runs, and each range reads a slice of every run). ``memory_keys``: keys each of pass 1's key
    indexes keeps in memory before writing a run to the work folder (:class:`finetune.keyindex.KeyIndex`;
    None: all in memory). ``partition_answers``: answers one selection query joins to
    their feedback (DuckDB's hash table takes :data:`finetune.select.ANSWER_BYTES` each; None: as many as
    three quarters of ``duckdb_memory`` hold): ``sft`` and ``kto`` candidates of more answers are selected in
    hash partitions of the answers, each reading the lake's texts again (:func:`finetune.select.answer_partitions`).
    ``duckdb_memory``: DuckDB's ``memory_limit``, which the selection fills as the answers grow and then holds: with
    256 MB the bench's peak RSS was 0.61, 0.78 and 0.80 GB at 1, 4 and 8 M conversations, in 41-44, 221 and 527 s
    (2 cores, 2026-11-25), against 0.62, 0.92 and 1.05 GB in 40-42, 186 and 434 s with 512 MB (fewer partitions,
    each reading the lake's texts again). ``duckdb_threads``: its ``threads`` (None: DuckDB's default). ``pii_workers``:
    processes redacting PII (0: in this process; None: 0 below ``pii_pool_min_rows`` selected rows,
    else one per CPU core, at most 4); they are started while the selection streams, as soon as it is known
    to need them (loading Presidio takes each ~2.5 CPU seconds, which the selection leaves idle), and redact the
    selection ahead from the start of pass 1, in chunks of whole record batches of about ``pii_chunk_rows`` rows
    (a worker's memory scales with it). ``prepare_threads``: threads
    computing pass 1's cleaning masks and fingerprints ahead of the batch being deduplicated (at most one per CPU core).
    ``trim_interval_s``: seconds between the returns of glibc's free heap pages to the system by a thread running
    through the build (:func:`finetune.allocator.trimming`; None: no thread).
    """

    batch_rows: int = 8192
    sort_rows: int = 16_384
    partition_answers: int | None = None
    memory_keys: int | None = 1 << 20
    duckdb_memory: str = "256MB"
    duckdb_threads: int | None = None
    pii_workers: int | None = None
    pii_pool_min_rows: int = 50_000
    pii_chunk_rows: int = 8192
    prepare_threads: int = 2
    trim_interval_s: float | None = TRIM_INTERVAL_S

    def answers_per_query(self) -> int:
        """``partition_answers``, or three quarters of ``duckdb_memory`` over :data:`finetune.select.ANSWER_BYTES`
        (the rest for the scan of the lake's texts). Raises ``ValueError`` for a malformed ``duckdb_memory``."""
        if self.partition_answers is not None:
            return self.partition_answers
        return max(1, 3 * memory_bytes(self.duckdb_memory) // (4 * select.ANSWER_BYTES))


@dataclass
class StreamStats:
    """Counts and sizes of one streaming build: ``steps`` (name, rows after), ``dropped`` (name → rows),
    ``pii`` (texts, texts_changed, entities), ``splits`` (name → rows), ``distribution`` (split → dim →
    value → rows), ``state_bytes`` (cross-batch state in memory at the end of pass 1), ``state_disk_bytes``
    (what it holds on disk: the key-index runs and the per-row arrays' files), ``pii_workers`` (processes
    used), ``seconds`` (phase -> wall seconds: select, pass 1, splits, pass 2), ``peak_rss_mb`` (phase -> this
    process's peak resident memory during the phase, MiB; Linux only; ``splits`` starts from what pass 1 left,
    its state included)."""

    steps: list[tuple[str, int]]
    dropped: dict[str, int]
    pii: dict[str, Any]
    splits: dict[str, int]
    distribution: dict[str, dict[str, dict[str, int]]]
    state_bytes: int
    pii_workers: int
    state_disk_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, int] = field(default_factory=dict)


def _peak_rss_mb() -> int | None:
    """This process's peak resident set size so far (``VmHWM``), MiB; None where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) // 1024 for line in fh if line.startswith("VmHWM"))
    except (OSError, StopIteration, ValueError):
        return None


def _reset_peak_rss() -> None:
    """Start a new peak for :func:`_peak_rss_mb` (Linux: ``5`` to /proc/self/clear_refs); no-op elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _release_memory() -> None:
    """Hand memory freed by the phase just ended back to the system: Arrow's pool keeps freed blocks for
    reuse (``release_unused``) and glibc's heap keeps freed small blocks (:func:`finetune.allocator.trim_heap`);
    neither changes what is allocated, only the resident memory between phases."""
    import gc

    gc.collect()
    pa.default_memory_pool().release_unused()
    trim_heap()


def _select(con_factory, spec: DatasetSpec, folder: Path, config: StreamConfig,
            on_rows=lambda rows: None) -> tuple[Path, list[int]]:
    """Write the candidates in stream order to ``folder/selected.arrow`` (Arrow IPC, record batches of
    ``batch_rows``); returns the path and the batches' sizes. DuckDB streams the candidate query's rows
    unsorted (spilling beyond ``duckdb_memory``; in hash partitions of the answers when they are more than
    :meth:`StreamConfig.answers_per_query`) into :class:`finetune.extsort.ExternalSort`, which orders
    them in runs and ranges of about ``sort_rows`` rows. ``on_rows(n)`` is called with the rows streamed so far,
    first with 0 and then after each batch."""
    spill = folder / ".duckdb_tmp"
    selected = folder / _SELECTED
    con = con_factory(config.duckdb_memory, config.duckdb_threads)
    sorter = None
    try:
        con.execute(f"SET temp_directory = '{spill}'")
        con.execute("SET preserve_insertion_order = false")
        # DuckDB keeps the lake files it reads in memory for re-reads; a build reads each once
        con.execute("SET enable_external_file_cache = false")
        parts = select.answer_partitions(con, spec, config.answers_per_query())
        streamed = 0
        on_rows(streamed)
        for k in range(parts):
            sql, params = select.candidate_query(con, spec, ordered=False, partition=(k, parts) if parts > 1 else None)
            reader = con.execute(sql, params).to_arrow_reader(int(config.batch_rows))
            if sorter is None:
                sorter = extsort.ExternalSort(reader.schema, select.SORT_KEYS[spec.format], folder / ".sort_tmp",
                                              bucket_rows=config.sort_rows)
            for batch in reader:
                sorter.add(batch)
                streamed += batch.num_rows
                on_rows(streamed)
            del reader
    except BaseException:
        if sorter is not None:
            sorter.close()
        raise
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    _release_memory()  # DuckDB's freed memory, which Arrow's pool cannot reuse
    return selected, sorter.finish(selected, config.batch_rows)


def run(con_factory, spec: DatasetSpec, folder: Path, config: StreamConfig = StreamConfig()) -> StreamStats:
    """Build ``spec`` into ``folder`` (``data/<split>.parquet``).

    ``con_factory(memory_limit, threads)`` returns a DuckDB connection with the lake views
    (:func:`finetune.select.open_lake`'s first value). Raises DatasetError when nothing is selected, and
    what the selection raises.
    """
    folder.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    with ExitStack() as stack:  # shuts the PII workers down however the build ends
        pool: list[ProcessPoolExecutor] = []

        def on_rows(rows: int) -> None:
            # PII workers load Presidio while the selection runs, once it is known to need them
            workers = _pii_workers(config, rows) if spec.cleaning.pii else 0
            if workers and not pool:
                pool.append(start_workers(list(spec.cleaning.pii_entities), workers))
                stack.callback(pool[0].shutdown, wait=True, cancel_futures=True)

        stack.enter_context(trimming(config.trim_interval_s))
        started = time.perf_counter()
        selected, sizes = _select(con_factory, spec, folder, config, on_rows)
        seconds["select"] = time.perf_counter() - started
        memory = {"select": _peak_rss_mb()}
        _release_memory()
        _reset_peak_rss()
        try:
            return _passes(spec, folder, config, selected, sizes, seconds, memory, pool[0] if pool else None)
        finally:
            selected.unlink(missing_ok=True)


def _pii_workers(config: StreamConfig, rows: int) -> int:
    """PII worker processes for a selection of ``rows`` rows (so far): ``config.pii_workers``, or none below
    ``pii_pool_min_rows`` rows and one per CPU core, at most 4, from there."""
    if config.pii_workers is not None:
        return config.pii_workers
    return 0 if rows < config.pii_pool_min_rows else min(4, os.cpu_count() or 1)


def _passes(spec: DatasetSpec, folder: Path, config: StreamConfig, selected: Path, sizes: list[int],
            seconds: dict[str, float], memory: dict[str, int | None], pool: ProcessPoolExecutor | None) -> StreamStats:
    fmt = spec.format
    state = folder / ".state"
    # key indexes (pass 1's and the PII text keys) keep memory_keys keys in memory, the rest under `state`
    spill, memory_keys = (state, config.memory_keys) if config.memory_keys is not None else (None, 0)
    selected_rows = sum(sizes)
    # PII redaction of the whole selection starts now, in the workers (started by the selection: `pool`, shut
    # down by `run`), while pass 1 cleans it
    redactor = (Redactor(list(spec.cleaning.pii_entities), _pii_workers(config, selected_rows), selected, sizes,
                         ANSWERS[fmt], config.pii_chunk_rows, spill, memory_keys, pool)
                if spec.cleaning.pii and selected_rows else None)
    try:
        return _clean_and_write(spec, folder, config, selected, seconds, memory, redactor, spill, memory_keys)
    finally:
        if redactor is not None:
            redactor.close()
        shutil.rmtree(state, ignore_errors=True)


def _clean_and_write(spec: DatasetSpec, folder: Path, config: StreamConfig, selected: Path,
                     seconds: dict[str, float], memory: dict[str, int | None],
                     redactor: Redactor | None, spill: Path | None, memory_keys: int) -> StreamStats:
    """Pass 1, the splits and pass 2 of :func:`run` (see the module doc), with ``redactor`` already started
    when PII is on; key indexes spill under ``spill`` beyond ``memory_keys`` keys."""
    fmt = spec.format
    cleaner = Cleaner(spec, spill, memory_keys)
    started = time.perf_counter()
    threads = max(1, min(config.prepare_threads, os.cpu_count() or 1))
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="flywheel-prepare") as pool:
            batches = extsort.read_batches(selected)
            for prepared in prefetch(pool, batches, cleaner.prepare, depth=threads):
                cleaner.apply(prepared)
        # before close, which deletes the disk runs
        state_bytes, state_disk_bytes = cleaner.state_bytes, cleaner.disk_bytes
    finally:
        cleaner.close()
    seconds["pass 1"] = time.perf_counter() - started
    memory["pass 1"] = _peak_rss_mb()
    counts = cleaner.counts
    if counts["selected"] == 0:
        raise DatasetError(f"{spec.name}: the selection matched nothing in the lake")
    rows = counts["selected"]
    steps, dropped = [("selected", rows)], {}
    flag = select.DROPPED_FLAG[fmt]
    if flag:
        dropped[flag[1]] = cleaner.flag_dropped
    for name in step_names(fmt):
        rows -= counts[name]
        steps.append((name, rows))
        dropped[name] = counts[name]
    _reset_peak_rss()
    started = time.perf_counter()
    components = cleaner.components()
    seconds["splits"] = time.perf_counter() - started
    memory["splits"] = _peak_rss_mb()
    keep, kept_clusters = cleaner.keep, cleaner.kept_clusters
    # the split of each component, by its root cluster (-1: not met yet), in a file beside the parents
    comp_split = MappedArray(spill, components.n, np.int8, -1)
    del cleaner
    _release_memory()
    _reset_peak_rss()
    # the union-find's and the splits' files are closed however pass 2 ends
    with closing(components), closing(comp_split):
        started = time.perf_counter()
        kept_rows = rows
        if not kept_rows:
            redactor = None
        fractions = spec.split.fractions()
        out = _SplitWriters(fmt, folder / "data")

        def kept(item: tuple[int, pa.RecordBatch]) -> tuple[int, int, pa.Table]:
            i, batch = item
            return i, batch.num_rows, pa.Table.from_batches([batch]).filter(pa.array(keep[i]))

        with closing(out), ThreadPoolExecutor(1, thread_name_prefix="flywheel-read") as pool:
            row_end = 0  # rows of the selection read so far
            for i, batch_rows, table in prefetch(pool, enumerate(extsort.read_batches(selected)), kept):
                row_start, row_end = row_end, row_end + batch_rows
                if not table.num_rows:
                    continue
                comp = components.roots(kept_clusters[i])
                split_of_row = comp_split.array[comp]
                unknown = np.flatnonzero(split_of_row < 0)
                if len(unknown):
                    # a component's first row in stream order holds its smallest conversation id
                    comps, first = np.unique(comp[unknown], return_index=True)
                    names = table["conversation_id"].take(pa.array(unknown[first])).to_pylist()
                    comp_split.array[comps] = split_indices(spec.split.seed, names, fractions)
                    split_of_row = comp_split.array[comp]
                comp_split.drop_pages()
                changed = redactor.batch_changes(table, row_start, row_end) if redactor is not None else {}
                out.add(table, split_of_row, changed)
            out.flush()
        seconds["pass 2"] = time.perf_counter() - started
        memory["pass 2"] = _peak_rss_mb()
        if redactor is not None:
            pii = redactor.summary()
            steps.append(("PII redacted (rows kept)", kept_rows))
        else:
            pii = {"texts": 0, "texts_changed": 0, "entities": {}, "disabled": not spec.cleaning.pii}
        distribution = {name: {dim: dict(sorted(c.items())) for dim, c in d.items()} for name, d in out.dist.items()}
        seconds = {k: round(v, 2) for k, v in seconds.items()}
        return StreamStats(steps, dropped, pii, out.rows, distribution, state_bytes,
                           redactor.workers if redactor else 0, state_disk_bytes, seconds,
                           {k: v for k, v in memory.items() if v is not None})


class _SplitWriters:
    """Pass 2's output: ``<data>/<split>.parquet`` for each of :data:`finetune.splits.SPLITS` (the format's
    :data:`finetune.exports.SCHEMAS`, Snappy), written in one thread (Arrow releases the GIL) while the caller
    formats the next batch, a few batches in flight at most; ``rows`` (split → rows) and ``dist`` (split → source,
    model, app → value → rows) count what was written. :meth:`flush` waits for the writes (and raises what they
    raised); :meth:`close` stops the thread and closes the files."""

    def __init__(self, fmt: str, data: Path) -> None:
        self.fmt = fmt
        data.mkdir(exist_ok=True)
        self.rows = {name: 0 for name in SPLITS}
        self.dist = {name: {dim: Counter() for dim in ("source", "model", "app")} for name in SPLITS}
        self._writers = {name: pq.ParquetWriter(data / f"{name}.parquet", SCHEMAS[fmt], compression="snappy")
                         for name in SPLITS}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="flywheel-write")
        self._writes: deque = deque()

    def add(self, table: pa.Table, split_of_row: np.ndarray, changed: dict[str, str]) -> None:
        """Format the kept rows of one batch (``table``) with the PII replacements ``changed`` (text → redacted
        text) and queue each split's rows (``split_of_row``: index into SPLITS per row) for writing."""
        _, _, contents = prompt_parts(table)
        prompt_contents = replace_texts(contents, changed)
        answers = {name: replace_texts(string_column(table, name), changed) for name in ANSWERS[self.fmt]}
        # the rows grouped by split (stable), so that each split's part is a slice, not a copy
        order = np.argsort(split_of_row, kind="stable")
        rows_out = format_rows(self.fmt, table, prompt_contents, answers, order)
        ends = np.cumsum(np.bincount(split_of_row, minlength=len(SPLITS)))
        for i, name in enumerate(SPLITS):
            start = int(ends[i - 1]) if i else 0
            part = rows_out.slice(start, int(ends[i]) - start)
            if not part.num_rows:
                continue
            self._writes.append(self._pool.submit(self._writers[name].write_table, part))
            self.rows[name] += part.num_rows
            for dim in self.dist[name]:
                counted = pc.value_counts(pc.fill_null(part[dim], "(none)")).to_pylist()
                self.dist[name][dim].update({c["values"]: c["counts"] for c in counted})
        while len(self._writes) > 2 * len(SPLITS):  # a few batches in flight at most
            self._writes.popleft().result()

    def flush(self) -> None:
        while self._writes:
            self._writes.popleft().result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for writer in self._writers.values():
            writer.close()
