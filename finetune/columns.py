"""Column access shared by the build's passes and its PII worker processes (Arrow and numpy only, so that a
worker process imports nothing else for it)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["blank", "prompt_parts", "string_column"]


def prompt_parts(table: pa.Table) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """``(offsets (n+1,), roles, contents)`` of the prompt lists (a null prompt is an empty one)."""
    col = string_column(table, "prompt") if table.num_rows else pa.array([], table.schema.field("prompt").type)
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(col)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return offsets, flat.field("role"), flat.field("content")


def string_column(table: pa.Table, name: str) -> pa.Array:
    """Column ``name`` as one Arrow array (its only chunk as is: ``combine_chunks`` copies even one chunk)."""
    col = table[name]
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def blank(texts: pa.Array) -> pa.BooleanArray:
    """True where a text (string array) is null, empty or only whitespace. ``utf8_is_space`` tests the
    whitespace that ``utf8_trim_whitespace`` trims (the same 29 code points, checked over all of Unicode)
    without writing trimmed copies of the texts."""
    return pc.fill_null(pc.or_(pc.equal(pc.utf8_length(texts), 0), pc.utf8_is_space(texts)), True)
