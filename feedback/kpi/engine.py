"""DuckDB over the lake for the KPI layer: source views, parameters, and the versioned SQL.

The lake tables are read with DuckDB's iceberg extension (``iceberg_scan`` of the table's current
metadata file, so one query sees one snapshot). The extension ships offline in the
``duckdb-extension-iceberg``/``-avro`` wheels.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import duckdb
import pyarrow as pa
from pyiceberg.table import Table

from feedback.config import KpiSettings
from feedback.kpi.sentiment import NEGATIVE_THRESHOLD, SentimentScorer
from feedback.kpi.tables import select_as_schema
from feedback.lake.tables import TABLE_SCHEMAS

SQL_DIR = Path(__file__).parent / "sql"


@lru_cache(maxsize=None)
def load_sql(name: str) -> str:
    """Text of ``sql/<name>.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text()


def sql_version(name: str) -> int:
    """The version in the first line of ``sql/<name>.sql`` (``-- <name>, version N``)."""
    match = re.search(r"version (\d+)", load_sql(name).splitlines()[0])
    return int(match.group(1)) if match else 0


_EXTENSIONS_IMPORTED = False


def connect(settings: KpiSettings | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the iceberg extension loaded, the session time zone UTC, and
    ``memory_limit``/``threads`` from the KPI settings (beyond the limit DuckDB spills to disk, so
    a rebuild's memory does not grow with the lake)."""
    global _EXTENSIONS_IMPORTED
    if not _EXTENSIONS_IMPORTED:
        from duckdb_extensions import import_extension

        import_extension("avro")
        import_extension("iceberg")
        _EXTENSIONS_IMPORTED = True
    settings = settings or KpiSettings()
    con = duckdb.connect()
    con.execute("LOAD iceberg; SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{settings.duckdb_memory_limit}'; SET threads = {int(settings.duckdb_threads)}")
    return con


def local_path(uri: str) -> str:
    """A file path DuckDB can open from an Iceberg ``file://`` URI (other schemes pass through)."""
    return uri.removeprefix("file://")


def _empty_view(con: duckdb.DuckDBPyConnection, view: str, schema: pa.Schema) -> None:
    # Always a real view (over a registered empty Arrow table): a connection that is reused must
    # not end up with a registered object shadowing a later CREATE OR REPLACE VIEW of that name.
    con.register(f"_empty_{view}", schema.empty_table())
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM _empty_{view}")


def register_source(con: duckdb.DuckDBPyConnection, view: str, table: Table | None, schema: pa.Schema) -> None:
    """Expose a lake table's current snapshot as view ``view`` (an empty one if it has no data)."""
    if table is None or table.current_snapshot() is None:
        _empty_view(con, view, schema)
        return
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM iceberg_scan('{local_path(table.metadata_location)}')")


def register_files(con: duckdb.DuckDBPyConnection, view: str, files: list[str], lake_name: str) -> None:
    """Expose the given Parquet data files of a lake table as view ``view``."""
    if not files:
        _empty_view(con, view, TABLE_SCHEMAS[lake_name])
        return
    paths = ", ".join(f"'{local_path(f)}'" for f in files)
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet([{paths}])")


def register_parameters(con: duckdb.DuckDBPyConnection, settings: KpiSettings) -> None:
    """Tables ``prices``, ``rating_criteria`` and ``params`` used by the KPI SQL."""
    prices = settings.prices_usd_per_1k_tokens
    con.register("prices", pa.table({
        "model": pa.array(list(prices), pa.string()),
        "input_usd_per_1k": pa.array([p.get("input") for p in prices.values()], pa.float64()),
        "output_usd_per_1k": pa.array([p.get("output") for p in prices.values()], pa.float64()),
    }))
    con.register("rating_criteria", pa.table({"name": pa.array(settings.rating_criteria, pa.string())}))
    con.register("params", pa.table({"positive_rating_threshold": [settings.positive_rating_threshold],
                                     "negative_threshold": [NEGATIVE_THRESHOLD]}))


def register_days(con: duckdb.DuckDBPyConnection, days: list[date]) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE days (day TIMESTAMPTZ)")
    if days:
        con.executemany("INSERT INTO days VALUES (CAST(? AS DATE)::TIMESTAMPTZ)", [(d,) for d in days])


def score_comments(con: duckdb.DuckDBPyConnection, scorer: SentimentScorer) -> None:
    """Score the comments attributed to ``days`` and register ``comment_sentiment(event_id, score)``."""
    rows = con.execute("""
        SELECT f.event_id, f.comment FROM feedback f LEFT JOIN interactions i ON i.message_id = f.message_id
        WHERE f.kind = 'comment' AND date_trunc('day', coalesce(i.occurred_at, f.occurred_at)) IN (SELECT day FROM days)
    """).fetchall()
    scores = scorer.score([text or "" for _, text in rows]) if rows else []
    con.register("comment_sentiment", pa.table({"event_id": pa.array([r[0] for r in rows], pa.string()),
                                                "score": pa.array(scores, pa.float64())}))


def touched_days(con: duckdb.DuckDBPyConnection) -> list[date]:
    """Days affected by views ``new_interactions`` / ``new_feedback`` (see sql/touched_days.sql)."""
    rows = con.execute(f"SELECT DISTINCT CAST(day AS DATE) FROM ({load_sql('touched_days')}) WHERE day IS NOT NULL ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def compute(con: duckdb.DuckDBPyConnection, name: str, days: list[date]) -> pa.Table:
    """Rows of KPI table ``name`` for ``days`` (already registered with :func:`register_days`)."""
    day_min = f"TIMESTAMPTZ '{min(days).isoformat()} 00:00:00+00'"
    day_end = f"TIMESTAMPTZ '{(max(days) + timedelta(days=1)).isoformat()} 00:00:00+00'"
    sql = load_sql(name).replace("{day_min}", day_min).replace("{day_end}", day_end)
    return con.execute(select_as_schema(name, sql)).fetch_arrow_table()
