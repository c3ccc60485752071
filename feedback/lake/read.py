"""Read the lake tables into DuckDB for queries (in process).

Each table is a DuckDB view over its current Iceberg snapshot (:mod:`feedback.lake.duck`), so a
query sees one consistent snapshot per table and DuckDB streams the Parquet files.
"""

from __future__ import annotations

import duckdb
from pyiceberg.catalog import Catalog

from feedback.config import LakeSettings
from feedback.lake import duck
from feedback.lake.catalog import load_table_if_exists
from feedback.lake.tables import TABLE_SCHEMAS


def lake_connection(catalog: Catalog, settings: LakeSettings | None = None,
                    tables: tuple[str, ...] = ("interactions", "feedback", "metrics", "quarantine")) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per lake table (``interactions``, ``feedback``, ...)."""
    settings = settings or LakeSettings()
    con = duck.connect()
    for name in tables:
        duck.register_table(con, name, load_table_if_exists(catalog, settings, name), TABLE_SCHEMAS[name])
    return con
