"""PII redaction of a build's texts: the whole selection redacted ahead, in worker processes, while the
build cleans it; then applied batch after batch.

:class:`Redactor` splits the selection file into chunks of record batches and, from the start of pass 1,
redacts each chunk's distinct texts in ``workers`` spawned processes (each with its own Presidio and spaCy;
none: in this process, when pass 2 reaches the chunk): texts a Presidio pattern recognizer could match
(:func:`finetune.piigate.arrow_candidates` for the requested entities; all texts when PERSON is wanted) go
to :meth:`finetune.pii.PiiRedactor.redact_found`, and only what was found comes back. Pass 2 waits for the
chunks its batch lies in, counts the batch's texts not seen in an earlier batch, and applies the changes
with :func:`replace_texts`. The report counts each distinct text of the kept rows once, as if each batch's
new texts had been redacted there (a text's redaction depends on the text alone); texts of rows dropped
by cleaning are redacted too, but not counted or written.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from finetune import extsort
from finetune.columns import blank, prompt_parts, string_column
from finetune.piigate import arrow_candidates

__all__ = ["Redactor", "replace_texts", "start_workers"]

_WORKER_REDACTOR: list = []

_NOT_IMPORTED = ("torch", "transformers")
"""Modules a PII worker process makes unimportable before loading Presidio: ``presidio_analyzer`` imports
``transformers`` (for its transformers NLP engine) and thinc imports ``torch`` when they are installed, each
behind ``try: import ... except ImportError``, and neither is used by the spaCy pipeline and pattern
recognizers here. A ``None`` entry in ``sys.modules`` makes ``import`` raise ``ImportError`` (Python's import
system); it saves ~5 s and ~320 MB per worker (7.0 → 2.1 s, 528 → 206 MB peak RSS on this machine)."""


def _init_worker(entities: list[str]) -> None:
    """Load a :class:`finetune.pii.PiiRedactor` in this (spawned, fresh) worker process, without
    :data:`_NOT_IMPORTED` unless something imported them already."""
    for name in _NOT_IMPORTED:
        sys.modules.setdefault(name, None)
    from finetune.pii import PiiRedactor

    _WORKER_REDACTOR.append(PiiRedactor(entities=entities))


def start_workers(entities: list[str], workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` (>= 1) spawned processes that each load a :class:`finetune.pii.PiiRedactor` for
    ``entities`` (:func:`_init_worker`, ~2.5 CPU seconds), all started now: the build starts them while its
    selection still runs, so that they are ready for :class:`Redactor`. The caller shuts the pool down (or
    :meth:`Redactor.close` does)."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(list(entities),))
    for _ in range(workers):  # the pool spawns a process per task submitted while none is idle
        pool.submit(os.getpid)
    return pool


def all_texts(table: pa.Table, answer_columns: tuple[str, ...]) -> pa.Array:
    """The non-null texts of ``table``'s prompt messages, then of ``answer_columns`` (Arrow strings, repeats
    included), in row order."""
    _, _, contents = prompt_parts(table)
    texts = pa.concat_arrays([contents.cast(pa.string())]
                             + [string_column(table, a).cast(pa.string()) for a in answer_columns])
    return pc.drop_null(texts)


def distinct_texts(table: pa.Table, answer_columns: tuple[str, ...]) -> pa.Array:
    """The distinct non-null texts of :func:`all_texts`, but blank ones (empty or only whitespace), in order
    of first appearance."""
    distinct = pc.unique(all_texts(table, answer_columns))
    return distinct.filter(pc.invert(blank(distinct)))


def _redact_chunk(redactor, path: str, groups: list[int], answer_columns: tuple[str, ...],
                  gate: tuple[str, ...] | None, prescan: bool = False) -> dict[str, tuple[str, dict[str, int]]]:
    """:meth:`finetune.pii.PiiRedactor.redact_found` over the distinct texts of record batches ``groups`` of
    the selection file ``path`` (Arrow IPC): with ``gate`` (entities), only those
    :func:`finetune.piigate.arrow_candidates` keeps for one of them, each recognizer only where its own
    entity's gate is found. ``prescan``: the phone gate's hits of those texts found at once with RE2
    (:meth:`finetune.pii.PiiRedactor.prescan`; worth its ~0.5 s set-up in worker processes)."""
    table = pa.Table.from_batches(list(extsort.read_batches(Path(path), ["prompt", *answer_columns], groups)))
    if gate is None:
        return redactor.redact_found(distinct_texts(table, answer_columns).to_pylist())
    # one pass of all the gates over every text (repeats included: cheaper than finding the distinct texts
    # first, 0.7-1.2 against 1.1-1.9 CPU-s for 25 batches of the 1 M bench, as only ~7 % pass), the distinct
    # texts found (no gate finds a blank one), then each entity's gate over those
    texts = all_texts(table, answer_columns)
    del table
    texts = pc.unique(texts.filter(arrow_candidates(texts, gate)))
    gates = {entity: arrow_candidates(texts, [entity]) for entity in gate}
    if prescan and "PHONE_NUMBER" in gates:
        redactor.prescan(texts.filter(gates["PHONE_NUMBER"]))
    try:
        return redactor.redact_found(texts.to_pylist(), {e: mask.to_pylist() for e, mask in gates.items()})
    finally:
        if prescan:
            redactor.prescan(None)


def _redact_chunk_job(path: str, groups: list[int], answer_columns: tuple[str, ...],
                      gate: tuple[str, ...] | None, out: str) -> str:
    """:func:`_redact_chunk` in a worker process; what was found goes to the Arrow IPC file ``out`` (columns
    ``text``, ``redacted``, ``counts`` as JSON), whose path is returned, so that chunks done ahead of pass 2
    wait on disk, not in memory."""
    found = _redact_chunk(_WORKER_REDACTOR[0], path, groups, answer_columns, gate, prescan=True)
    pa.default_memory_pool().release_unused()  # the chunk's columns, freed: back to the system between chunks
    table = pa.table({"text": pa.array(list(found), pa.string()),
                      "redacted": pa.array([r for r, _ in found.values()], pa.string()),
                      "counts": pa.array([json.dumps(c, sort_keys=True) for _, c in found.values()], pa.string())})
    with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return out


def _read_found(path: str) -> dict[str, tuple[str, dict[str, int]]]:
    """:func:`_redact_chunk_job`'s file as :func:`_redact_chunk`'s dict; the file is deleted."""
    with pa.memory_map(path) as source:
        table = pa.ipc.open_file(source).read_all()
    os.unlink(path)
    return {text: (redacted, json.loads(counts)) for text, redacted, counts
            in zip(*(table[c].to_pylist() for c in ("text", "redacted", "counts")))}


def _text_keys(texts: pa.Array) -> np.ndarray:
    """A uint64 per text of a string array without nulls: Polars' ``Series.hash`` (vectorised, seed 0),
    the same within one Polars version, which is all the build needs (the keys never leave it); different
    texts collide with probability about 2**-64 per pair."""
    import polars as pl  # here, not at the top: worker processes import this module and never need it

    return pl.from_arrow(texts).hash(seed=0).to_numpy()


class Redactor:
    """Presidio redaction of the texts of the selection file ``selected`` (Arrow IPC, rows in stream order, in
    record batches of ``sizes`` rows), chunk by chunk of about ``chunk_rows`` rows (whole batches), started at once in ``workers`` processes
    (``spawn``; ``pool``: those processes, already started by :func:`start_workers`, which :meth:`close` shuts
    down) or, with 0, run in this process when :meth:`batch_changes` first needs a chunk.

    ``answer_columns``: the format's answer columns (besides the prompt messages). The 64-bit keys of the texts
    counted so far are kept in a :class:`finetune.keyindex.KeyIndex` (beyond ``memory_keys`` of them in runs
    under ``folder``, when given). What a worker found in a chunk waits in a file of ``.pii_found`` beside
    ``selected`` until pass 2 reaches the chunk, and is forgotten once pass 2 is past it, so memory holds
    about one chunk's findings. :meth:`close` stops the workers and deletes the runs and files."""

    def __init__(self, entities: list[str], workers: int, selected: Path, sizes: list[int],
                 answer_columns: tuple[str, ...], chunk_rows: int, folder: Path | None = None,
                 memory_keys: int = 1 << 20, pool: ProcessPoolExecutor | None = None) -> None:
        from finetune.keyindex import KeyIndex  # here: worker processes import this module and never need it

        self.workers = workers
        self.answer_columns = tuple(answer_columns)
        self.seen = KeyIndex(folder, memory_keys)
        # without PERSON (spaCy NER on every text) only texts a pattern recognizer could match need Presidio
        gate = None if "PERSON" in entities else tuple(entities)
        self.texts = self.texts_changed = 0
        self.entities: dict[str, int] = {}
        chunks: list[list[int]] = []
        rows = 0
        for i, n in enumerate(sizes):
            if not chunks or rows >= chunk_rows:
                chunks.append([])
                rows = 0
            chunks[-1].append(i)
            rows += n
        starts = np.concatenate(([0], np.cumsum(sizes))).astype(int)
        args = [(str(selected), groups, self.answer_columns, gate) for groups in chunks]
        self.results = selected.parent / ".pii_found"
        if self.workers:
            self.local = None
            self.results.mkdir(exist_ok=True)
            self.pool = pool if pool is not None else start_workers(entities, self.workers)
            jobs: list = [self.pool.submit(_redact_chunk_job, *a, str(self.results / f"{i}.arrow"))
                          for i, a in enumerate(args)]
        else:
            from finetune.pii import PiiRedactor

            self.local = PiiRedactor(entities=entities)
            jobs = args  # run by _wait, when first needed
        # (first row, row past the end, future or arguments), popped from the end in stream order
        self.pending = [(starts[g[0]], starts[g[-1] + 1], job) for g, job in zip(chunks, jobs)][::-1]
        self.ready: deque[tuple[int, int, dict]] = deque()  # (first row, row past the end, found)

    def _found(self, row_start: int, row_end: int) -> dict[str, tuple[str, dict[str, int]]]:
        """What was found in the chunks holding rows ``row_start`` to ``row_end`` (exclusive), once they are done;
        chunks wholly before ``row_start`` are forgotten (rows come in stream order)."""
        while self.pending and self.pending[-1][0] < row_end:
            first, end, job = self.pending.pop()
            found = _read_found(job.result()) if isinstance(job, Future) else _redact_chunk(self.local, *job)
            self.ready.append((first, end, found))
        while self.ready and self.ready[0][1] <= row_start:
            self.ready.popleft()
        if len(self.ready) == 1:
            return self.ready[0][2]
        return {text: result for _, _, found in self.ready for text, result in found.items()}

    def batch_changes(self, table: pa.Table, row_start: int, row_end: int) -> dict[str, str]:
        """``{text: redacted}`` for the changed texts of ``table``: kept rows of the selection's rows
        ``row_start`` to ``row_end`` (exclusive), in stream order from one call to the next. Waits for the
        chunks holding those rows; the table's distinct texts not counted before are counted in
        :meth:`summary`."""
        found = self._found(row_start, row_end)
        texts = distinct_texts(table, self.answer_columns)
        keys = _text_keys(texts)
        new = ~self.seen.contains(keys)
        self.seen.add(keys[new])
        self.texts += int(new.sum())
        if not found:
            return {}
        hits = pc.is_in(texts, value_set=pa.array(list(found), pa.string())).to_numpy(zero_copy_only=False)
        changed = {}
        for text, is_new in zip(texts.filter(pa.array(hits)).to_pylist(), new[hits]):
            redacted, counts = found[text]
            if redacted != text:
                changed[text] = redacted
            if is_new:
                self.texts_changed += redacted != text
                for entity, n in counts.items():
                    self.entities[entity] = self.entities.get(entity, 0) + n
        return changed

    def summary(self) -> dict[str, Any]:
        """``{"texts": distinct texts scanned, "texts_changed": n, "entities": {type: spans}}``."""
        return {"texts": self.texts, "texts_changed": self.texts_changed, "entities": dict(sorted(self.entities.items()))}

    def close(self) -> None:
        """Stop the workers (chunks not started are cancelled) and delete the key runs and result files."""
        self.seen.close()
        if self.workers:
            self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.results, ignore_errors=True)


def replace_texts(texts: pa.Array, changed: dict[str, str]) -> pa.Array:
    """``texts`` with each value found in ``changed`` replaced by its redacted form (``replace_with_mask``:
    only the replaced positions' redacted texts are gathered)."""
    texts = texts.cast(pa.string())
    if not changed:
        return texts
    idx = pc.index_in(texts, value_set=pa.array(list(changed), pa.string()))
    found = pc.is_valid(idx)
    redacted = pa.array(list(changed.values()), pa.string()).take(idx.filter(found))
    return pc.replace_with_mask(texts, found, redacted)
