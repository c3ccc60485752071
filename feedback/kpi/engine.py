"""DuckDB for the KPI layer: source views, parameters, and the versioned SQL (lake access itself
is :mod:`feedback.lake.duck`)."""

from __future__ import annotations

import re
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import duckdb
import pyarrow as pa

from feedback.config import KpiSettings
from feedback.kpi.sentiment import NEGATIVE_THRESHOLD, SentimentScorer
from feedback.kpi.tables import select_as_schema
from feedback.lake import duck
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


def connect(settings: KpiSettings | None = None) -> duckdb.DuckDBPyConnection:
    """A lake connection (:func:`feedback.lake.duck.connect`) with the KPI settings' DuckDB
    ``memory_limit`` and ``threads`` (beyond the limit DuckDB spills, so a rebuild's memory is bounded)."""
    settings = settings or KpiSettings()
    return duck.connect(settings.duckdb_memory_limit, settings.duckdb_threads)


def register_files(con: duckdb.DuckDBPyConnection, view: str, files: list[str], lake_name: str) -> None:
    """Expose the given Parquet data files of a lake table as view ``view``."""
    if not files:
        duck.empty_view(con, view, TABLE_SCHEMAS[lake_name])
        return
    paths = ", ".join(f"'{duck.local_path(f)}'" for f in files)
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
