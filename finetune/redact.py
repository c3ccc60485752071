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
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from finetune.cleaning import prompt_parts, string_column
from finetune.keyindex import KeyIndex
from finetune.piigate import arrow_candidates

__all__ = ["Redactor", "replace_texts"]

_WORKER_REDACTOR: list = []


def _init_worker(entities: list[str]) -> None:
    from finetune.pii import PiiRedactor

    _WORKER_REDACTOR.append(PiiRedactor(entities=entities))


def _redact_job(new: list[str], again: list[str]) -> tuple[list[str], list[str], Any]:
    """Redact ``new`` (counted) and ``again`` (seen in an earlier batch, not counted) in a worker."""
    redactor = _WORKER_REDACTOR[0]
    out_new, report = redactor.redact_many(new)
    out_again, _ = redactor.redact_many(again)
    return out_new, out_again, report


class Redactor:
    """Presidio redaction of each batch's distinct texts, in this process or in ``workers`` processes
    (``spawn``; each loads its own Presidio and spaCy). Keeps the 64-bit hashes of texts already counted
    so the report counts each distinct text once."""

    def __init__(self, entities: list[str], workers: int) -> None:
        self.workers = workers
        self.seen = KeyIndex()
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

    def submit(self, texts: list[str]) -> list[Future]:
        """Start redacting ``texts`` (distinct, non-empty); :meth:`collect` gives ``{text: redacted}``."""
        hashes = np.fromiter((hash(t) for t in texts), dtype=np.int64, count=len(texts)).view(np.uint64)
        new_mask = ~self.seen.contains(hashes)
        self.seen.add(hashes[new_mask])
        if self.patterns_only:
            candidate = arrow_candidates(pa.array(texts, pa.string())).to_numpy(zero_copy_only=False)
            self.skipped += int((new_mask & ~candidate).sum())
            texts = [t for t, c in zip(texts, candidate.tolist()) if c]
            new_mask = new_mask[candidate]
        new = [t for t, m in zip(texts, new_mask.tolist()) if m]
        again = [t for t, m in zip(texts, new_mask.tolist()) if not m]
        parts = max(1, self.workers)
        jobs = []
        for p in range(parts):
            args = (new[p::parts], again[p::parts])
            if self.workers:
                jobs.append(self.pool.submit(_redact_job, *args))
            else:
                done: Future = Future()
                out_new, report = self.local.redact_many(args[0])
                out_again, _ = self.local.redact_many(args[1])
                done.set_result((out_new, out_again, report))
                jobs.append(done)
        return [(job, new[p::parts], again[p::parts]) for p, job in enumerate(jobs)]

    def submit_table(self, table: pa.Table, answer_columns: tuple[str, ...]) -> list:
        """:meth:`submit` the distinct non-blank texts of ``table``'s prompt messages and answer columns."""
        _, _, contents = prompt_parts(table)
        texts = pa.concat_arrays([contents.cast(pa.string())]
                                 + [string_column(table, a).cast(pa.string()) for a in answer_columns])
        distinct = [t for t in pc.unique(pc.drop_null(texts)).to_pylist() if t.strip()]
        distinct.sort()
        return self.submit(distinct)

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
            out_new, out_again, report = job.result()
            if self.report is None:
                self.report = report
            else:
                self.report.merge(report)
            for src, dst in zip(new + again, out_new + out_again):
                if dst != src:
                    changed[src] = dst
        return changed

    def close(self) -> None:
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
