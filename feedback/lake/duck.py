"""DuckDB over the lake: one connection factory and the views every reader uses.

Lake tables are read with DuckDB's iceberg extension (``iceberg_scan`` of a table's current
metadata file, so one query sees one snapshot per table); the extension ships offline in the
``duckdb-extension-iceberg``/``-avro`` wheels. Tables with no data yet become empty views.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
from pyiceberg.table import Table

_EXTENSIONS_IMPORTED = False


def connect(memory_limit: str | None = None, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the iceberg extension loaded and the session time zone UTC.

    ``memory_limit`` (e.g. ``"1GB"``; DuckDB spills beyond it) and ``threads`` are optional.
    """
    global _EXTENSIONS_IMPORTED
    if not _EXTENSIONS_IMPORTED:
        from duckdb_extensions import import_extension

        import_extension("avro")
        import_extension("iceberg")
        _EXTENSIONS_IMPORTED = True
    con = duckdb.connect()
    con.execute("LOAD iceberg; SET TimeZone = 'UTC'")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def local_path(uri: str) -> str:
    """A file path DuckDB can open from an Iceberg ``file://`` URI (other schemes pass through)."""
    return uri.removeprefix("file://")


def empty_view(con: duckdb.DuckDBPyConnection, view: str, schema: pa.Schema) -> None:
    """View ``view`` over an empty table of ``schema``. Always a real view (over a separately
    registered Arrow table): on a reused connection a registered object would shadow a later
    ``CREATE OR REPLACE VIEW`` of the same name."""
    con.register(f"_empty_{view}", schema.empty_table())
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM _empty_{view}")


def register_table(con: duckdb.DuckDBPyConnection, view: str, table: Table | None, schema: pa.Schema) -> None:
    """Expose a lake table's current snapshot as view ``view`` (an empty one if it has no data)."""
    if table is None or table.current_snapshot() is None:
        empty_view(con, view, schema)
        return
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM iceberg_scan('{local_path(table.metadata_location)}')")
