"""Output rows of a dataset build: the format's schema (TRL's columns + lineage) and the JSONL exports.

:func:`format_rows` turns cleaned candidates (with their redacted texts) into rows of
:data:`SCHEMAS`; :func:`export_record` / :func:`export_lines` give each export target's
record: OpenAI chat fine-tuning JSONL (``{"messages": ...}``; preference: ``input`` /
``preferred_output`` / ``non_preferred_output``, OpenAI's DPO format), Bedrock's conversation schema
(``bedrock-conversation-2024``, SFT only) and SageMaker (TRL's own columns). :func:`write_export` writes a
target's files from a dataset version's Parquet splits, when asked (``flywheel dataset export``): a build
stores only the Parquet splits, which hold everything the exports hold.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from finetune.columns import prompt_parts, string_column

__all__ = ["EXPORT_FORMATS", "LINEAGE", "MESSAGE", "MESSAGES", "SCHEMAS", "format_rows", "export_record",
           "export_lines", "export_rows", "write_export"]

EXPORT_FORMATS = {"openai": ("sft", "preference"), "bedrock": ("sft",), "sagemaker": ("sft", "preference", "kto")}
"""Which formats each export target takes (OpenAI has no KTO, Bedrock's conversation format is SFT only)."""
LINEAGE = ("conversation_id", "source", "app", "model", "prompt_version", "origin")
"""Lineage columns every output row carries."""
MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
_LINEAGE_FIELDS = [pa.field(n, pa.string()) for n in LINEAGE]
SCHEMAS = {
    "sft": pa.schema([pa.field("messages", MESSAGES)] + _LINEAGE_FIELDS
                     + [pa.field("message_id", pa.string()), pa.field("corrected", pa.bool_())]),
    "preference": pa.schema([pa.field("prompt", MESSAGES), pa.field("chosen", MESSAGES), pa.field("rejected", MESSAGES),
                             pa.field("strength", pa.float64())] + _LINEAGE_FIELDS
                            + [pa.field(n, pa.string()) for n in ("chosen_message_id", "rejected_message_id", "rejected_model")]),
    "kto": pa.schema([pa.field("prompt", MESSAGES), pa.field("completion", MESSAGES), pa.field("label", pa.bool_())]
                     + _LINEAGE_FIELDS + [pa.field("message_id", pa.string())]),
}
"""Output schema of each format: TRL's columns, then lineage."""


def _constant(text: str, n: int) -> pa.Array:
    """A string array of ``n`` times ``text``."""
    return pa.repeat(pa.scalar(text, pa.string()), n)


def _messages(roles: pa.Array, contents: pa.Array) -> pa.StructArray:
    return pa.StructArray.from_arrays([roles, contents], fields=list(MESSAGE))


def _assistant(texts: pa.Array) -> pa.ListArray:
    """One ``[{"role": "assistant", "content": text}]`` list per text."""
    n = len(texts)
    roles = _constant("assistant", n)
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1), pa.int32()), _messages(roles, texts))


def _with_answer(offsets: np.ndarray, roles: pa.Array, contents: pa.Array, answers: pa.Array,
                 order: np.ndarray) -> pa.ListArray:
    """Row ``order[j]``'s prompt messages followed by ``{"role": "assistant", "content": answer}``, for each
    position ``j`` of ``order`` (int64 row numbers), gathered by one ``take`` of the roles and of the contents."""
    total = int(offsets[-1])
    lengths = np.diff(offsets)[order]
    new_offsets = np.concatenate(([0], np.cumsum(lengths + 1)))
    take = np.empty(int(new_offsets[-1]), dtype=np.int64)
    appended = new_offsets[1:] - 1
    mask = np.ones(len(take), dtype=bool)
    mask[appended] = False
    # message k of position j is item offsets[order[j]] + k, at new_offsets[j] + k
    take[mask] = np.repeat(offsets[:-1][order] - new_offsets[:-1], lengths) + np.flatnonzero(mask)
    take[appended] = total + order
    all_roles = pa.concat_arrays([roles.cast(pa.string()), _constant("assistant", len(answers))])
    all_contents = pa.concat_arrays([contents.cast(pa.string()), answers.cast(pa.string())])
    idx = pa.array(take)
    values = _messages(all_roles.take(idx), all_contents.take(idx))
    return pa.ListArray.from_arrays(pa.array(new_offsets, pa.int32()), values)


def format_rows(fmt: str, table: pa.Table, prompt_contents: pa.Array, answers: dict[str, pa.Array],
                order: np.ndarray | None = None) -> pa.Table:
    """Rows in the format's output schema (:data:`SCHEMAS`) from staged candidates, with the
    (redacted) prompt contents and answer texts given; with ``order`` (int64 row numbers), the rows
    ``order`` names in that order (``sft`` gathers its messages in that order at once; the others take
    their rows in it), as ``take(order)`` of the result would give them."""
    offsets, roles, _ = prompt_parts(table)
    cols: dict[str, Any] = {}
    if fmt == "sft":
        every = np.arange(table.num_rows) if order is None else np.asarray(order, dtype=np.int64)
        cols["messages"] = _with_answer(offsets, roles, prompt_contents, answers["response"], every)
    else:
        cols["prompt"] = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), _messages(roles, prompt_contents))
        if fmt == "preference":
            cols["chosen"] = _assistant(answers["chosen_text"])
            cols["rejected"] = _assistant(answers["rejected_text"])
            cols["strength"] = table["strength"]
        else:
            cols["completion"] = _assistant(answers["response"])
            cols["label"] = table["label"]
    for name in LINEAGE:
        cols[name] = _constant("thumbs", table.num_rows) if fmt == "kto" and name == "origin" \
            else table[name]
    extra = {"sft": ("message_id", "corrected"), "preference": ("chosen_message_id", "rejected_message_id",
                                                                 "rejected_model"), "kto": ("message_id",)}[fmt]
    for name in extra:
        cols[name] = table[name]
    schema = SCHEMAS[fmt]
    if not table.num_rows:
        return schema.empty_table()
    if order is not None:
        idx = pa.array(order, pa.int64())
        cols = {name: col if fmt == "sft" and name == "messages" else col.take(idx) for name, col in cols.items()}
    return pa.table([cols[f.name] for f in schema], schema=schema)


_EXPORT_COLUMNS = {"sft": ("messages",), "preference": ("prompt", "chosen", "rejected"),
                   "kto": ("prompt", "completion", "label")}


def export_record(fmt: str, target: str, row: dict) -> dict | None:
    """One output row (a dict in the format's columns) as the export ``target`` wants it, or None when the
    target takes no such format (see :data:`EXPORT_FORMATS`)."""
    if fmt not in EXPORT_FORMATS[target]:
        return None
    if target == "sagemaker":
        return {k: row[k] for k in _EXPORT_COLUMNS[fmt]}
    if target == "openai":
        if fmt == "sft":
            return {"messages": row["messages"]}
        return {"input": {"messages": row["prompt"]}, "preferred_output": row["chosen"],
                "non_preferred_output": row["rejected"]}
    system = [{"text": m["content"]} for m in row["messages"] if m["role"] == "system"]
    turns = [{"role": m["role"], "content": [{"text": m["content"]}]} for m in row["messages"] if m["role"] != "system"]
    return {"schemaVersion": "bedrock-conversation-2024", **({"system": system} if system else {}), "messages": turns}


def _ndjson(table: pa.Table) -> bytes:
    """``table``'s rows as JSON lines, written by Polars (Rust, outside the GIL); byte for byte what
    ``orjson.dumps`` of each row dict gives for these all-string/bool nested columns (checked in
    ``tests/test_dataset_build.py``)."""
    import polars as pl

    buf = io.BytesIO()
    pl.from_arrow(table).write_ndjson(buf)
    return buf.getvalue()


def _bedrock_lines(messages: pa.ListArray) -> bytes:
    """Bedrock conversation records (:func:`export_record`) of SFT ``messages``, built with Arrow compute and
    written by Polars: ``system`` holds the system messages' texts and is left out where a row has none,
    ``messages`` the other turns with ``content: [{"text": ...}]``."""
    n = len(messages)
    lengths = pc.list_value_length(messages).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    row = np.repeat(np.arange(n), lengths)
    flat = pc.list_flatten(messages)
    is_system = pc.fill_null(pc.equal(flat.field("role"), "system"), False).to_numpy(zero_copy_only=False)

    def lists(mask: np.ndarray, values: pa.Array) -> pa.ListArray:
        counts = np.bincount(row[mask], minlength=n)
        offsets = pa.array(np.concatenate(([0], np.cumsum(counts))), pa.int32())
        return pa.ListArray.from_arrays(offsets, values.filter(pa.array(mask)))

    def texts(values: pa.Array) -> pa.ListArray:  # each text as [{"text": text}]
        structs = pa.StructArray.from_arrays([values], names=["text"])
        return pa.ListArray.from_arrays(pa.array(np.arange(len(values) + 1), pa.int32()), structs)

    turns = pa.StructArray.from_arrays([flat.field("role"), texts(flat.field("content"))], names=["role", "content"])
    version = _constant("bedrock-conversation-2024", n)
    body = lists(~is_system, turns)
    has_system = np.bincount(row[is_system], minlength=n) > 0
    if not has_system.any():
        return _ndjson(pa.table({"schemaVersion": version, "messages": body}))
    system = lists(is_system, texts(flat.field("content")).values)
    with_system = _ndjson(pa.table({"schemaVersion": version, "system": system, "messages": body})
                          .filter(pa.array(has_system))).splitlines(keepends=True)
    without = _ndjson(pa.table({"schemaVersion": version, "messages": body})
                      .filter(pa.array(~has_system))).splitlines(keepends=True)
    picks = iter(with_system), iter(without)
    return b"".join(next(picks[0] if s else picks[1]) for s in has_system.tolist())


def export_lines(fmt: str, target: str, table: pa.Table) -> bytes:
    """The JSONL bytes (one :func:`export_record` of ``target`` a line) of ``table``'s rows (a :data:`SCHEMAS`
    table, more columns allowed), built from whole columns and written by Polars."""
    if not table.num_rows:
        return b""
    if target == "sagemaker" or (target == "openai" and fmt == "sft"):
        return _ndjson(table.select(list(_EXPORT_COLUMNS[fmt])))
    if target == "openai":
        return _ndjson(pa.table({
            "input": pa.StructArray.from_arrays([string_column(table, "prompt")], names=["messages"]),
            "preferred_output": string_column(table, "chosen"), "non_preferred_output": string_column(table, "rejected")}))
    return _bedrock_lines(string_column(table, "messages"))


def export_rows(fmt: str, rows: int) -> dict[str, int]:
    """Rows each export target's files hold for a version of format ``fmt`` with ``rows`` rows in all: every
    row, or 0 where the target takes no such format (:data:`EXPORT_FORMATS`); the card and lineage list them."""
    return {target: rows if fmt in fmts else 0 for target, fmts in EXPORT_FORMATS.items()}


def write_export(data: Path, fmt: str, target: str, out: Path, batch_rows: int = 8192) -> dict[str, int]:
    """Write ``out/<split>.jsonl`` for each split of a dataset version of format ``fmt`` whose Parquet splits
    are ``data/<split>.parquet`` (:data:`SCHEMAS` columns, more allowed): one :func:`export_record` of
    ``target`` a line, row order kept, read ``batch_rows`` rows at a time (memory scales with it, not with
    the split: the reader does not pre-buffer, since pyarrow keeps pre-buffered row groups until the reader is
    closed, apache/arrow#39808). Each file is written beside its place and renamed into it, so a reader never sees half a
    file. The same Parquet files give the same bytes. Returns rows written per split. Raises
    ``finetune.errors.DatasetError`` for an unknown target, a target that takes no such format
    (:data:`EXPORT_FORMATS`) or a missing split file."""
    import pyarrow.parquet as pq

    from finetune.errors import DatasetError
    from finetune.splits import SPLITS

    if target not in EXPORT_FORMATS:
        raise DatasetError(f"unknown export target {target!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if fmt not in EXPORT_FORMATS[target]:
        raise DatasetError(f"{target} takes no {fmt!r} datasets (it takes {', '.join(EXPORT_FORMATS[target])})")
    missing = [s for s in SPLITS if not (data / f"{s}.parquet").is_file()]
    if missing:
        raise DatasetError(f"no {', '.join(missing)} split under {data}")
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for split in SPLITS:
        path, tmp = out / f"{split}.jsonl", out / f".{split}.jsonl.tmp"
        rows[split] = 0
        try:
            with open(tmp, "wb") as fh:
                source = pq.ParquetFile(data / f"{split}.parquet", pre_buffer=False)
                for batch in source.iter_batches(batch_rows, columns=list(_EXPORT_COLUMNS[fmt])):
                    fh.write(export_lines(fmt, target, pa.Table.from_batches([batch])))
                    rows[split] += batch.num_rows
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return rows
