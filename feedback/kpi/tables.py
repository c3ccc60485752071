"""Arrow schemas of the materialised KPI tables (one row per window × dimensions × grain).

Both are partitioned by ``window_day`` (identity), so a refresh replaces whole days.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
_WINDOW = [pa.field("grain", pa.string()), pa.field("window_start", TS), pa.field("window_day", pa.date32())]
_DIMS = [pa.field(n, pa.string()) for n in ("project", "app", "model", "prompt_version")]


def _ints(*names: str) -> list[pa.Field]:
    return [pa.field(n, pa.int64()) for n in names]


KPI_TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "kpi_interactions": pa.schema(
        _WINDOW + _DIMS
        + _ints("interactions", "conversations", "users", "errors", "with_feedback", "with_thumb", "with_rating",
                "with_comment", "with_correction", "with_category", "with_preference", "positive_answers",
                "latency_n")
        + [pa.field("latency_ms_sum", pa.float64())]
        + _ints("ttft_n", "tokens_in", "tokens_out")
        + [pa.field("cost_usd", pa.float64())]
        + _ints("cost_n", "cost_derived_n")
        + [pa.field("cost_usd_positive", pa.float64())]
    ),
    "kpi_feedback": pa.schema(
        _WINDOW + _DIMS + [pa.field("feedback_source", pa.string())]
        + _ints("feedback_events", "thumbs_up", "thumbs_down", "rating_n")
        + [pa.field("rating_sum", pa.float64()), pa.field("rating_sumsq", pa.float64())]
        + _ints("comments", "negative_comments", "corrections", "categories", "pref_wins", "pref_losses", "pref_ties")
    ),
}
DUCKDB_TYPE = {pa.string(): "VARCHAR", TS: "TIMESTAMPTZ", pa.date32(): "DATE", pa.int64(): "BIGINT",
               pa.float64(): "DOUBLE"}


def select_as_schema(name: str, inner_sql: str) -> str:
    """Wrap ``inner_sql`` so its columns come out in the table's order and types (DuckDB's
    ``sum`` of integers is HUGEINT, which Arrow would see as decimal)."""
    cols = ", ".join(f"CAST({f.name} AS {DUCKDB_TYPE[f.type]}) AS {f.name}" for f in KPI_TABLE_SCHEMAS[name])
    return f"SELECT {cols} FROM (\n{inner_sql}\n)"
