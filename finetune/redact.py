"""PII redaction of a build's texts, batch after batch, in this process or in worker processes.

:class:`Redactor` takes each batch's distinct texts, sends those a Presidio pattern recognizer could match
(:func:`finetune.piigate.arrow_candidates`, unless PERSON is wanted) to :class:`finetune.pii.PiiRedactor`
(in ``workers`` spawned processes, each with its own Presidio and spaCy), and gives back
``{text: redacted}`` for the texts that changed; :func:`replace_texts` applies that to an Arrow column.
The report counts each distinct text once, however many batches it appears in.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from finetune.cleaning import prompt_parts, string_column
from finetune import minhash
from finetune.keyindex import KeyIndex, mix64
from finetune.piigate import arrow_candidates

__all__ = ["Redactor", "replace_texts"]

_WORKER_REDACTOR: list = []


def _init_worker(entities: list[str]) -> None:
    from finetune.pii import PiiRedactor

    _WORKER_REDACTOR.append(PiiRedactor(entities=entities))


def _changed(texts: list[str], out: list[str]) -> list[tuple[int, str]]:
    return [(i, b) for i, (a, b) in enumerate(zip(texts, out)) if a != b]


def _redact(redactor, new: list[str], again: list[str]) -> tuple[list, list, Any]:
    """Redact ``new`` (counted) and ``again`` (seen in an earlier batch, not counted); returns the
    ``(index, redacted)`` of the texts that changed in each, and the report of ``new``."""
    out_new, report = redactor.redact_many(new)
    out_again, _ = redactor.redact_many(again)
    return _changed(new, out_new), _changed(again, out_again), report


def _redact_job(new: list[str], again: list[str]) -> tuple[list, list, Any]:
    """:func:`_redact` in a worker process (only the changed texts travel back)."""
    return _redact(_WORKER_REDACTOR[0], new, again)


def _text_keys(texts: pa.Array) -> np.ndarray:
    """A uint64 per text of a string array without nulls, from its UTF-8 bytes: two polynomial hashes mod
    2**64 (:mod:`finetune.minhash`'s bases) and the length, mixed; equal texts give equal keys, different ones
    collide with probability about 2**-64. Vectorised over the array's buffers (no Python string), in
    pieces of about 2 MB (the power tables grow with the piece)."""
    out = [_piece_keys(texts.slice(a, b - a)) for a, b in minhash.byte_pieces(texts, minhash._CHUNK_BYTES)]
    return np.concatenate(out) if out else np.empty(0, np.uint64)


def _piece_keys(texts: pa.Array) -> np.ndarray:
    raw, offsets = minhash.string_buffers(texts)
    c = raw.astype(np.uint64) + np.uint64(1)
    keys = []
    for powers in (minhash._POW_R, minhash._POW_S):
        prefix, neg = minhash._prefix_hashes(c, powers)
        keys.append((prefix[offsets[1:]] - prefix[offsets[:-1]]) * neg[offsets[:-1]])
    return mix64(keys[0], keys[1], np.diff(offsets))


class Redactor:
    """Presidio redaction of each batch's distinct texts, in this process or in ``workers`` processes
    (``spawn``; each loads its own Presidio and spaCy). Keeps the 64-bit hashes of texts already counted
    so the report counts each distinct text once (a :class:`finetune.keyindex.KeyIndex`: beyond
    ``memory_keys`` of them in runs under ``folder``, when given); :meth:`close` stops the workers and
    deletes the runs."""

    def __init__(self, entities: list[str], workers: int, folder: Path | None = None,
                 memory_keys: int = 1 << 20) -> None:
        self.workers = workers
        self.seen = KeyIndex(folder, memory_keys)
        self.report: Any = None
        # without PERSON (spaCy NER on every text) only texts a pattern recognizer could match need Presidio
        self.patterns_only = "PERSON" not in entities
        self.skipped = 0  # new texts no pattern recognizer can match (scanned here, not in Presidio)
        if workers:
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(entities,))
        else:
            from finetune.pii import PiiRedactor

            self.local = PiiRedactor(entities=entities)

    def submit(self, texts: pa.Array) -> list:
        """Start redacting the distinct texts ``texts`` (an Arrow string array, no nulls or blanks);
        :meth:`collect` gives ``{text: redacted}`` for those that changed."""
        keys = _text_keys(texts)
        new_mask = ~self.seen.contains(keys)
        self.seen.add(keys[new_mask])
        if self.patterns_only:
            candidate = arrow_candidates(texts).to_numpy(zero_copy_only=False)
            self.skipped += int((new_mask & ~candidate).sum())
            texts = texts.filter(pa.array(candidate))
            new_mask = new_mask[candidate]
        new = texts.filter(pa.array(new_mask)).to_pylist()
        again = texts.filter(pa.array(~new_mask)).to_pylist()
        parts = max(1, self.workers)
        jobs = []
        for p in range(parts):
            args = (new[p::parts], again[p::parts])
            if self.workers:
                jobs.append(self.pool.submit(_redact_job, *args))
            else:
                done: Future = Future()
                done.set_result(_redact(self.local, *args))
                jobs.append(done)
        return [(job, new[p::parts], again[p::parts]) for p, job in enumerate(jobs)]

    def submit_table(self, table: pa.Table, answer_columns: tuple[str, ...]) -> list:
        """:meth:`submit` the distinct non-blank texts of ``table``'s prompt messages and answer columns."""
        _, _, contents = prompt_parts(table)
        texts = pa.concat_arrays([contents.cast(pa.string())]
                                 + [string_column(table, a).cast(pa.string()) for a in answer_columns])
        distinct = pc.unique(pc.drop_null(texts))
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(distinct)), 0)
        return self.submit(distinct.filter(pc.invert(blank)))

    def summary(self) -> dict[str, Any]:
        """``{"texts": distinct texts scanned, "texts_changed": n, "entities": {type: spans}}``."""
        if self.report is None:
            return {"texts": self.skipped, "texts_changed": 0, "entities": {}}
        return {"texts": self.report.texts + self.skipped, "texts_changed": self.report.texts_changed,
                "entities": dict(sorted(self.report.entities.items()))}

    def collect(self, jobs: list) -> dict[str, str]:
        """Wait for :meth:`submit`'s jobs; ``{text: redacted}`` for the texts that changed."""
        changed: dict[str, str] = {}
        for job, new, again in jobs:
            changed_new, changed_again, report = job.result()
            if self.report is None:
                self.report = report
            else:
                self.report.merge(report)
            changed.update((new[i], text) for i, text in changed_new)
            changed.update((again[i], text) for i, text in changed_again)
        return changed

    def close(self) -> None:
        self.seen.close()
        if self.workers:
            self.pool.shutdown(wait=True, cancel_futures=True)


def replace_texts(texts: pa.Array, changed: dict[str, str]) -> pa.Array:
    """``texts`` with each value found in ``changed`` replaced by its redacted form."""
    texts = texts.cast(pa.string())
    if not changed:
        return texts
    keys = pa.array(list(changed), pa.string())
    idx = pc.index_in(texts, value_set=keys)
    found = pc.is_valid(idx)
    return pc.if_else(found, pa.array(list(changed.values()), pa.string()).take(pc.fill_null(idx, 0)), texts)
