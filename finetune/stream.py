"""The streaming build: select → clean → deduplicate → split → redact → write, in batches of rows.

Two passes over the candidates, each holding one batch (``batch_rows`` rows) at a time:

1. **Pass 1** has DuckDB write the candidate query (:func:`finetune.select.candidate_query`, ordered by
   conversation id first) to a Parquet file in the work folder with ``COPY`` (its sort spills to disk
   beyond ``duckdb_memory``; DuckDB's Python result, ``execute().fetch_record_batch``, would hold the
   whole sorted result in memory), then reads it back in batches; per batch it computes the cleaning masks
   with Arrow compute (empty turns, chosen == rejected, safety labels, lengths), then exact and near
   duplicates against what earlier batches kept (:class:`finetune.neardup.StreamingClusters`), and writes
   the surviving rows to a staging Parquet file in the work folder.
2. Splits: a union-find (``connected_components``) over conversations and prompt clusters -- two small
   ints per kept row plus the clusters' LSH links -- gives each kept row a component; each component goes
   to the split :func:`finetune.splits.assign_splits` would give it (SHA-256 of the seed and the
   component's smallest conversation id, which is the first one in stream order).
3. **Pass 2** re-reads the staged rows in batches, redacts PII in the batch's distinct texts with
   Presidio (:mod:`finetune.pii`; in worker processes for large builds), and appends each split to
   ``data/<split>.parquet`` (``pyarrow.parquet.ParquetWriter``) and ``exports/<target>/<split>.jsonl``.

Memory: DuckDB is capped by ``duckdb_memory`` (it spills to the work folder beyond it); Python holds a
few batches. What grows with the data is compact state, honestly O(rows): about 150 bytes per distinct
long prompt/answer text (exact key and LSH band keys, :mod:`finetune.neardup`), 12 bytes per candidate
row (exact-duplicate keys) and per kept row (near-duplicate keys), 8 bytes per kept row for the split
union-find and 8 per distinct text for PII counting. :attr:`StreamStats.state_bytes` reports it.

The output depends only on the rows, the spec and ``batch_rows``: the same spec on the same snapshots
with the same batch size is written byte for byte the same.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from finetune import dedup, select
from finetune.errors import DatasetError
from finetune.keyindex import KeyIndex, mix64
from finetune.neardup import StreamingClusters, exact_keys
from finetune.piigate import arrow_candidates
from finetune.spec import DatasetSpec
from finetune.splits import SPLITS, split_indices

__all__ = ["StreamConfig", "StreamStats", "run", "EXPORT_FORMATS", "export_record", "export_lines"]

ANSWERS = {"sft": ("response",), "preference": ("chosen_text", "rejected_text"), "kto": ("response",)}
"""Per format: the candidate columns holding answer texts (length bounds and answer clusters)."""
EXPORT_FORMATS = {"openai": ("sft", "preference"), "bedrock": ("sft",), "sagemaker": ("sft", "preference", "kto")}
"""Which formats each export target takes (OpenAI has no KTO, Bedrock's conversation format is SFT only)."""
_LINEAGE = ("conversation_id", "source", "app", "model", "prompt_version", "origin")
_STAGED = "kept.parquet"
_SELECTED = "selected.parquet"


@dataclass(frozen=True)
class StreamConfig:
    """Knobs of the streaming build.

    ``batch_rows``: candidate rows per batch (memory scales with it). ``duckdb_memory``: DuckDB's
    ``memory_limit``; ``duckdb_threads``: its ``threads`` (None: DuckDB's default). ``pii_workers``:
    processes redacting PII (0: in this process; None: 0 below ``pii_pool_min_rows`` kept rows, else
    one per CPU core, at most 4).
    """

    batch_rows: int = 8192
    duckdb_memory: str = "1GB"
    duckdb_threads: int | None = None
    pii_workers: int | None = None
    pii_pool_min_rows: int = 50_000


@dataclass
class StreamStats:
    """Counts and sizes of one streaming build: ``steps`` (name, rows after), ``dropped`` (name → rows),
    ``pii`` (texts, texts_changed, entities), ``splits`` (name → rows), ``distribution`` (split → dim →
    value → rows), ``exports`` (target → rows), ``state_bytes`` (cross-batch state at its largest),
    ``pii_workers`` (processes used)."""

    steps: list[tuple[str, int]]
    dropped: dict[str, int]
    pii: dict[str, Any]
    splits: dict[str, int]
    distribution: dict[str, dict[str, dict[str, int]]]
    exports: dict[str, int]
    state_bytes: int
    pii_workers: int


# ---------------------------------------------------------------------------------------------------
# Arrow helpers


def _prompt(table: pa.Table) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """``(offsets (n+1,), roles, contents)`` of the prompt lists (a null prompt is an empty one)."""
    col = table["prompt"].combine_chunks() if table.num_rows else pa.array([], table.schema.field("prompt").type)
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(col)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return offsets, flat.field("role"), flat.field("content")


def _string(table: pa.Table, name: str) -> pa.Array:
    col = table[name]
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def _blank(texts: pa.Array) -> np.ndarray:
    """True where a text is null or only whitespace."""
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0)
    return pc.fill_null(empty, True).to_numpy(zero_copy_only=False)


def _rows_any(per_item: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per row: whether any of its items (rows own ``offsets[i]:offsets[i+1]``) is True."""
    n = len(offsets) - 1
    out = np.zeros(n, dtype=bool)
    out[np.repeat(np.arange(n), np.diff(offsets))[per_item]] = True
    return out


def _prompt_texts(offsets: np.ndarray, roles: pa.Array, contents: pa.Array) -> list[str]:
    """Each row's prompt as ``"role: content"`` lines joined by newlines (what prompt clusters compare)."""
    lines = pc.binary_join_element_wise(pc.fill_null(roles, "None"), pc.fill_null(contents, ""), ": ")
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), lines), "\n")
    return pc.fill_null(joined, "").to_pylist()


def _messages(roles: pa.Array, contents: pa.Array) -> pa.StructArray:
    from finetune.output import MESSAGE

    return pa.StructArray.from_arrays([roles, contents], fields=list(MESSAGE))


def _assistant(texts: pa.Array) -> pa.ListArray:
    """One ``[{"role": "assistant", "content": text}]`` list per text."""
    n = len(texts)
    roles = pa.array(["assistant"] * n, pa.string())
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1), pa.int32()), _messages(roles, texts))


def _with_answer(offsets: np.ndarray, roles: pa.Array, contents: pa.Array, answers: pa.Array) -> pa.ListArray:
    """Each row's prompt messages followed by ``{"role": "assistant", "content": answer}``."""
    n = len(offsets) - 1
    total = int(offsets[-1])
    new_offsets = offsets + np.arange(n + 1)
    take = np.empty(total + n, dtype=np.int64)
    appended = new_offsets[1:] - 1
    mask = np.ones(total + n, dtype=bool)
    mask[appended] = False
    take[mask] = np.arange(total)
    take[appended] = total + np.arange(n)
    all_roles = pa.concat_arrays([roles.cast(pa.string()), pa.array(["assistant"] * n, pa.string())])
    all_contents = pa.concat_arrays([contents.cast(pa.string()), answers.cast(pa.string())])
    idx = pa.array(take)
    values = _messages(all_roles.take(idx), all_contents.take(idx))
    return pa.ListArray.from_arrays(pa.array(new_offsets, pa.int32()), values)


def _format(fmt: str, table: pa.Table, prompt_contents: pa.Array, answers: dict[str, pa.Array]) -> pa.Table:
    """Rows in the format's output schema (:data:`finetune.output.SCHEMAS`) from staged candidates, with the
    (redacted) prompt contents and answer texts given."""
    from finetune.output import SCHEMAS

    offsets, roles, _ = _prompt(table)
    cols: dict[str, Any] = {}
    if fmt == "sft":
        cols["messages"] = _with_answer(offsets, roles, prompt_contents, answers["response"])
    else:
        cols["prompt"] = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), _messages(roles, prompt_contents))
        if fmt == "preference":
            cols["chosen"] = _assistant(answers["chosen_text"])
            cols["rejected"] = _assistant(answers["rejected_text"])
            cols["strength"] = table["strength"]
        else:
            cols["completion"] = _assistant(answers["response"])
            cols["label"] = table["label"]
    for name in _LINEAGE:
        cols[name] = pa.array(["thumbs"] * table.num_rows, pa.string()) if fmt == "kto" and name == "origin" \
            else table[name]
    extra = {"sft": ("message_id", "corrected"), "preference": ("chosen_message_id", "rejected_message_id",
                                                                 "rejected_model"), "kto": ("message_id",)}[fmt]
    for name in extra:
        cols[name] = table[name]
    schema = SCHEMAS[fmt]
    if not table.num_rows:
        return schema.empty_table()
    return pa.table([cols[f.name] for f in schema], schema=schema)


def export_record(fmt: str, target: str, row: dict) -> dict | None:
    """One output row (a dict in the format's columns) as the export ``target`` wants it, or None when the
    target takes no such format (see :data:`EXPORT_FORMATS`)."""
    if fmt not in EXPORT_FORMATS[target]:
        return None
    if target == "sagemaker":
        keep = {"sft": ("messages",), "preference": ("prompt", "chosen", "rejected"),
                "kto": ("prompt", "completion", "label")}
        return {k: row[k] for k in keep[fmt]}
    if target == "openai":
        if fmt == "sft":
            return {"messages": row["messages"]}
        return {"input": {"messages": row["prompt"]}, "preferred_output": row["chosen"],
                "non_preferred_output": row["rejected"]}
    system = [{"text": m["content"]} for m in row["messages"] if m["role"] == "system"]
    turns = [{"role": m["role"], "content": [{"text": m["content"]}]} for m in row["messages"] if m["role"] != "system"]
    return {"schemaVersion": "bedrock-conversation-2024", **({"system": system} if system else {}), "messages": turns}


_EXPORT_COLUMNS = {"sft": ("messages",), "preference": ("prompt", "chosen", "rejected"),
                   "kto": ("prompt", "completion", "label")}


def export_lines(fmt: str, targets: list[str], table: pa.Table) -> dict[str, bytes]:
    """The JSONL bytes (one :func:`export_record` a line, orjson) of ``table``'s rows for each target in
    ``targets``; targets whose records are the same (OpenAI's and SageMaker's SFT lines) are serialised once."""
    records = table.select(list(_EXPORT_COLUMNS[fmt])).to_pylist()
    by_shape: dict[str, bytes] = {}
    out = {}
    for t in targets:
        shape = "messages" if fmt == "sft" and t in ("openai", "sagemaker") else t
        if shape not in by_shape:
            by_shape[shape] = b"".join(orjson.dumps(export_record(fmt, t, r)) + b"\n" for r in records)
        out[t] = by_shape[shape]
    return out


# ---------------------------------------------------------------------------------------------------
# PII in worker processes

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


class _Redactor:
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

    def collect(self, jobs: list) -> dict[str, str]:
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


def _replace(texts: pa.Array, changed: dict[str, str]) -> pa.Array:
    """``texts`` with each value found in ``changed`` replaced by its redacted form."""
    texts = texts.cast(pa.string())
    if not changed:
        return texts
    keys = pa.array(list(changed), pa.string())
    idx = pc.index_in(texts, value_set=keys)
    found = pc.is_valid(idx)
    return pc.if_else(found, pa.array(list(changed.values()), pa.string()).take(pc.fill_null(idx, 0)), texts)


# ---------------------------------------------------------------------------------------------------
# the two passes


class _Pass1:
    """Cleaning and de-duplication state across batches (see the module doc)."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        config = dedup.DedupConfig(threshold=spec.cleaning.dedup_threshold)
        self.prompts = StreamingClusters(config, keep_links=True)
        self.answers = [StreamingClusters(config) for _ in ANSWERS[spec.format]]
        self.row_keys = KeyIndex()  # exact: normalised prompt + answers of every row reaching dedup
        self.near_keys = KeyIndex()  # near: (prompt cluster, answer clusters[, label]) of kept rows
        self.counts = Counter()
        self.flag_dropped = 0
        self.groups = 0
        self.last_conversation: str | None = None
        self.kept_groups: list[np.ndarray] = []
        self.kept_clusters: list[np.ndarray] = []

    def batch(self, table: pa.Table) -> pa.Table:
        """The rows of ``table`` that survive cleaning and de-duplication, with ``_group`` (conversation
        number in stream order) and ``_cluster`` (prompt cluster) added."""
        fmt, c = self.spec.format, self.spec.cleaning
        flag = select.DROPPED_FLAG[fmt]
        if flag:
            bad = pc.fill_null(table[flag[0]], False)
            self.flag_dropped += pc.sum(bad).as_py() or 0
            table = table.filter(pc.invert(bad)).drop_columns([flag[0]])
        n = table.num_rows
        self.counts["selected"] += n
        if not n:  # the staging file's schema has the two columns whatever batch comes first
            return table.append_column("_group", pa.array([], pa.int64())).append_column("_cluster", pa.array([], pa.int64()))
        conv = table["conversation_id"].to_numpy(zero_copy_only=False)
        starts = np.empty(n, dtype=bool)
        starts[0] = conv[0] != self.last_conversation
        starts[1:] = conv[1:] != conv[:-1]
        group = self.groups + np.cumsum(starts) - 1
        self.groups = int(group[-1]) + 1
        self.last_conversation = conv[-1]

        offsets, roles, contents = _prompt(table)
        answers = [_string(table, name) for name in ANSWERS[fmt]]
        alive = np.ones(n, dtype=bool)

        def step(name: str, drop: np.ndarray) -> None:
            drop = drop & alive
            self.counts[name] += int(drop.sum())
            alive[drop] = False

        empty = _rows_any(_blank(contents), offsets)
        for a in answers:
            empty |= _blank(a)
        step("empty turns dropped", empty)
        if fmt == "preference":
            chosen_key = exact_keys(answers[0].to_pylist())[0]
            rejected_key = exact_keys(answers[1].to_pylist())[0]
            step("chosen == rejected dropped", chosen_key == rejected_key)
        unsafe = pc.fill_null(table["unsafe"], False).to_numpy(zero_copy_only=False)
        if fmt == "kto":
            unsafe &= pc.fill_null(table["label"], False).to_numpy(zero_copy_only=False)
        step("safety-labelled dropped", unsafe)
        too = np.zeros(n, dtype=bool)
        for a in answers:
            length = pc.fill_null(pc.utf8_length(a), 0).to_numpy(zero_copy_only=False)
            too |= (length < c.min_chars) | (length > c.max_chars)
        step("out-of-bounds lengths dropped", too)

        live = np.flatnonzero(alive)
        if len(live):
            sub_offsets, sub_roles, sub_contents = _prompt(table.take(pa.array(live)))
            prompt_cluster, prompt_key = self.prompts.assign(_prompt_texts(sub_offsets, sub_roles, sub_contents))
            keys, clusters = [prompt_key], [prompt_cluster]
            for state, a in zip(self.answers, answers):
                cl, key = state.assign(a.take(pa.array(live)).to_pylist())
                keys.append(key)
                clusters.append(cl)
            if fmt == "kto":
                label = pc.fill_null(table["label"], False).to_numpy(zero_copy_only=False)
                clusters.append(label[live].astype(np.int64))
            row_key = mix64(*keys)
            near_key = mix64(*clusters)
            first = np.zeros(len(live), dtype=bool)
            first[np.unique(row_key, return_index=True)[1]] = True
            exact = self.row_keys.contains(row_key) | ~first
            self.row_keys.add(row_key[first & ~exact])
            candidate = np.flatnonzero(~exact)
            near_first = np.zeros(len(live), dtype=bool)
            near_first[candidate[np.unique(near_key[candidate], return_index=True)[1]]] = True
            near = ~exact & (self.near_keys.contains(near_key) | ~near_first)
            keep = ~exact & ~near
            self.near_keys.add(near_key[keep])
            self.counts["exact duplicates dropped"] += int(exact.sum())
            self.counts["near-duplicates dropped"] += int(near.sum())
            alive[live[~keep]] = False
            kept_cluster = prompt_cluster[keep]
        else:
            kept_cluster = np.empty(0, dtype=np.int64)
        kept = np.flatnonzero(alive)
        self.kept_groups.append(group[kept].astype(np.int32))
        self.kept_clusters.append(kept_cluster.astype(np.int32))
        out = table.take(pa.array(kept))
        out = out.append_column("_group", pa.array(group[kept], pa.int64()))
        return out.append_column("_cluster", pa.array(kept_cluster, pa.int64()))

    @property
    def state_bytes(self) -> int:
        return (self.prompts.nbytes + sum(a.nbytes for a in self.answers) + self.row_keys.nbytes
                + self.near_keys.nbytes + sum(g.nbytes for g in self.kept_groups)
                + sum(k.nbytes for k in self.kept_clusters))

    def components(self) -> np.ndarray:
        """Component label per conversation group: conversations joined through shared prompt clusters
        (and the clusters' LSH links), as :func:`finetune.splits.assign_splits` joins them."""
        g = np.concatenate(self.kept_groups).astype(np.int64) if self.kept_groups else np.empty(0, np.int64)
        cl = np.concatenate(self.kept_clusters).astype(np.int64) if self.kept_clusters else np.empty(0, np.int64)
        n_groups, n_clusters = self.groups, self.prompts.next_id
        links = self.prompts.links + n_groups
        rows = np.concatenate([np.stack([g, cl + n_groups], axis=1), links])
        size = n_groups + n_clusters
        graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows[:, 0], rows[:, 1])), shape=(size, size))
        return connected_components(graph, directed=False)[1][:n_groups]


def run(con_factory, spec: DatasetSpec, folder: Path, config: StreamConfig = StreamConfig()) -> StreamStats:
    """Build ``spec`` into ``folder`` (``data/<split>.parquet`` and ``exports/<target>/<split>.jsonl``).

    ``con_factory(memory_limit, threads)`` returns a DuckDB connection with the lake views
    (:func:`finetune.select.open_lake`'s first value). Raises DatasetError when nothing is selected, and
    what the selection raises.
    """
    from finetune.output import SCHEMAS

    fmt = spec.format
    folder.mkdir(parents=True, exist_ok=True)
    spill = folder / ".duckdb_tmp"
    staged = folder / _STAGED
    state = _Pass1(spec)
    selected = folder / _SELECTED
    con = con_factory(config.duckdb_memory, config.duckdb_threads)
    try:
        # DuckDB's Python result (execute().fetch_record_batch) materialises the whole sorted result outside
        # its memory limit; COPY sorts within the limit (spilling to `spill`) and writes the ordered rows.
        con.execute(f"SET temp_directory = '{spill}'")
        con.execute("SET preserve_insertion_order = true")
        sql, params = select.candidate_query(con, spec)
        con.execute(f"COPY ({sql}) TO '{selected}' (FORMAT parquet, COMPRESSION zstd, "
                    f"ROW_GROUP_SIZE {int(config.batch_rows)})", params)
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    try:
        writer = None
        for batch in pq.ParquetFile(selected).iter_batches(batch_size=config.batch_rows):
            out = state.batch(pa.Table.from_batches([batch]))
            if writer is None:
                writer = pq.ParquetWriter(staged, out.schema, compression="zstd")
            writer.write_table(out)
        if writer is not None:
            writer.close()
    finally:
        selected.unlink(missing_ok=True)
    counts = state.counts
    if counts["selected"] == 0:
        raise DatasetError(f"{spec.name}: the selection matched nothing in the lake")
    order = ["empty turns dropped"] + (["chosen == rejected dropped"] if fmt == "preference" else []) + [
        "safety-labelled dropped", "out-of-bounds lengths dropped", "exact duplicates dropped",
        "near-duplicates dropped"]
    rows = counts["selected"]
    steps, dropped = [("selected", rows)], {}
    flag = select.DROPPED_FLAG[fmt]
    if flag:
        dropped[flag[1]] = state.flag_dropped
    for name in order:
        rows -= counts[name]
        steps.append((name, rows))
        dropped[name] = counts[name]
    label = state.components()
    state_bytes = state.state_bytes
    del state

    kept_rows = rows
    workers = config.pii_workers
    if workers is None:
        workers = 0 if kept_rows < config.pii_pool_min_rows else min(4, os.cpu_count() or 1)
    redactor = _Redactor(list(spec.cleaning.pii_entities), workers) if spec.cleaning.pii and kept_rows else None
    fractions = spec.split.fractions()
    comp_split = np.full(int(label.max()) + 1 if len(label) else 0, -1, dtype=np.int8)
    split_rows = {name: 0 for name in SPLITS}
    dist = {name: {dim: Counter() for dim in ("source", "model", "app")} for name in SPLITS}
    schema = SCHEMAS[fmt]
    (folder / "data").mkdir(exist_ok=True)
    writers = {name: pq.ParquetWriter(folder / "data" / f"{name}.parquet", schema, compression="snappy")
               for name in SPLITS}
    targets = [t for t in EXPORT_FORMATS if fmt in EXPORT_FORMATS[t]]
    handles = {}
    for t in targets:
        (folder / "exports" / t).mkdir(parents=True, exist_ok=True)
        for name in SPLITS:
            handles[t, name] = open(folder / "exports" / t / f"{name}.jsonl", "wb")
    exported = Counter()

    def finish(table: pa.Table, split_of_row: np.ndarray, changed: dict[str, str]) -> None:
        _, _, contents = _prompt(table)
        prompt_contents = _replace(contents, changed)
        answers = {name: _replace(_string(table, name), changed) for name in ANSWERS[fmt]}
        rows_out = _format(fmt, table, prompt_contents, answers)
        for i, name in enumerate(SPLITS):
            part = rows_out.filter(pa.array(split_of_row == i))
            if not part.num_rows:
                continue
            writers[name].write_table(part)
            split_rows[name] += part.num_rows
            for dim in dist[name]:
                counts = pc.value_counts(pc.fill_null(part[dim], "(none)")).to_pylist()
                dist[name][dim].update({c["values"]: c["counts"] for c in counts})
            for t, lines in export_lines(fmt, targets, part).items():
                handles[t, name].write(lines)
                exported[t] += part.num_rows

    try:
        pending: deque = deque()
        if staged.exists():
            for batch in pq.ParquetFile(staged).iter_batches(batch_size=config.batch_rows):
                table = pa.Table.from_batches([batch])
                comp = label[table["_group"].to_numpy()]
                unknown = np.flatnonzero(comp_split[comp] < 0)
                if len(unknown):
                    # a component's first row in stream order holds its smallest conversation id
                    comps, first = np.unique(comp[unknown], return_index=True)
                    names = table["conversation_id"].take(pa.array(unknown[first])).to_pylist()
                    comp_split[comps] = split_indices(spec.split.seed, names, fractions)
                split_of_row = comp_split[comp]
                table = table.drop_columns(["_group", "_cluster"])
                jobs = None
                if redactor is not None:
                    _, _, contents = _prompt(table)
                    texts = pa.concat_arrays([contents.cast(pa.string())] + [_string(table, a).cast(pa.string())
                                                                            for a in ANSWERS[fmt]])
                    distinct = [t for t in pc.unique(pc.drop_null(texts)).to_pylist() if t.strip()]
                    distinct.sort()
                    jobs = redactor.submit(distinct)
                pending.append((table, split_of_row, jobs))
                while len(pending) > max(1, workers):
                    t, s, j = pending.popleft()
                    finish(t, s, redactor.collect(j) if j is not None else {})
            while pending:
                t, s, j = pending.popleft()
                finish(t, s, redactor.collect(j) if j is not None else {})
    finally:
        if redactor is not None:
            redactor.close()
        for w in writers.values():
            w.close()
        for fh in handles.values():
            fh.close()
        staged.unlink(missing_ok=True)
    if redactor is not None:
        report = redactor.report
        pii = {"texts": report.texts + redactor.skipped, "texts_changed": report.texts_changed,
               "entities": dict(sorted(report.entities.items()))} if report else {
            "texts": redactor.skipped, "texts_changed": 0, "entities": {}}
        steps.append(("PII redacted (rows kept)", kept_rows))
    else:
        pii = {"texts": 0, "texts_changed": 0, "entities": {}, "disabled": not spec.cleaning.pii}
    distribution = {name: {dim: dict(sorted(c.items())) for dim, c in d.items()} for name, d in dist.items()}
    exports = {t: exported[t] for t in targets} | {t: 0 for t in EXPORT_FORMATS if t not in targets}
    exports = {t: exports[t] for t in EXPORT_FORMATS}
    return StreamStats(steps, dropped, pii, split_rows, distribution, exports, state_bytes, workers if redactor else 0)
