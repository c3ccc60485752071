"""Read the lake tables into DuckDB for queries (in process).

Each table's current Iceberg snapshot is scanned with pyiceberg into Arrow and registered as a
DuckDB view of the same name, so queries see one consistent snapshot per table.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog

from feedback.config import LakeSettings
from feedback.lake.catalog import load_table_if_exists
from feedback.lake.tables import TABLE_SCHEMAS


def read_table(catalog: Catalog, settings: LakeSettings, name: str, columns: tuple[str, ...] = ("*",)) -> pa.Table:
    """The current snapshot of lake table ``name`` as Arrow (empty with its schema if absent)."""
    table = load_table_if_exists(catalog, settings, name)
    if table is None:
        schema = TABLE_SCHEMAS[name]
        return schema.empty_table() if columns == ("*",) else pa.schema([schema.field(c) for c in columns]).empty_table()
    return table.scan(selected_fields=columns).to_arrow()


def lake_connection(catalog: Catalog, settings: LakeSettings | None = None,
                    tables: tuple[str, ...] = ("interactions", "feedback", "metrics", "quarantine")) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per lake table (``interactions``, ``feedback``, ...)."""
    settings = settings or LakeSettings()
    con = duckdb.connect()
    for name in tables:
        con.register(name, read_table(catalog, settings, name))
    return con
