"""The dashboard's one read path: a DuckDB connection with a view per lake and KPI table.

Views are ``iceberg_scan`` of each lake table's current metadata file (:mod:`feedback.lake.duck`),
so a query sees one snapshot per table; the KPI tables (small: one row per window and group) are
copied into memory at each new snapshot, which spares every KPI query opening their files. :meth:`DashboardLake.sync` re-reads the catalog at most every
``sync_min_interval_s`` and re-points the views whose table has a new snapshot; the returned
:class:`LakeVersion` (snapshot ids) keys every cached page query, so a cached answer lives exactly
as long as the snapshots it was computed from. Queries run on their own DuckDB cursor, so the
Streamlit sessions (threads) can share one connection. Nothing here reads the consumer's state:
only the lake, the KPI tables and (for lag) the bus's committed offsets.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pandas as pd
import pyarrow as pa
from pyiceberg.catalog import Catalog

from feedback.config import KpiSettings, LakeSettings
from feedback.kpi import engine
from feedback.kpi.maintainer import KpiMaintainer
from feedback.kpi.tables import KPI_TABLE_SCHEMAS
from feedback.lake import duck
from feedback.lake.catalog import load_table_if_exists
from feedback.lake.tables import TABLE_SCHEMAS

LAKE_TABLES = ("interactions", "feedback", "metrics", "quarantine")
KPI_TABLES = tuple(KPI_TABLE_SCHEMAS)
SCHEMAS = {**TABLE_SCHEMAS, **KPI_TABLE_SCHEMAS}


@dataclass(frozen=True)
class LakeVersion:
    """Current snapshot id per table (None: no data yet). Hashable: a cache key."""

    snapshots: tuple[tuple[str, int | None], ...]

    def get(self, table: str) -> int | None:
        return dict(self.snapshots).get(table)


@dataclass(frozen=True)
class TableState:
    """One table as of the last sync: current snapshot, its commit time (UTC) and, for a KPI table,
    the maintainer's stored state (watermark, refreshed_at, source snapshots, SQL version)."""

    name: str
    snapshot_id: int | None
    committed_at: datetime | None
    kpi_state: dict | None


class DashboardLake:
    """A shared DuckDB connection over the lake and KPI tables, kept on their current snapshots."""

    def __init__(self, catalog: Catalog, lake: LakeSettings | None = None, kpi: KpiSettings | None = None,
                 sync_min_interval_s: float = 1.0):
        self.catalog = catalog
        self.lake = lake or LakeSettings()
        self.kpi = kpi or KpiSettings()
        self.sync_min_interval_s = sync_min_interval_s
        self._con = engine.connect(self.kpi)
        self._materialize_parameters()
        self._lock = threading.Lock()
        self._locations: dict[str, str | None] = {}
        self._states: dict[str, TableState] = {}
        self._synced_at = float("-inf")
        self._version = LakeVersion(())

    def sync(self, force: bool = False) -> LakeVersion:
        """Point the views at the tables' current snapshots (at most every ``sync_min_interval_s``
        unless ``force``); return the version the views now show."""
        with self._lock:
            if not force and time.monotonic() - self._synced_at < self.sync_min_interval_s:
                return self._version
            snapshots = []
            for name in LAKE_TABLES + KPI_TABLES:
                table = load_table_if_exists(self.catalog, self.lake, name)
                snap = table.current_snapshot() if table is not None else None
                location = table.metadata_location if snap is not None else None
                if name not in self._locations or self._locations[name] != location:
                    if location is None:
                        self._materialize(f"_empty_{name}", SCHEMAS[name].empty_table())
                        self._con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _empty_{name}")
                    elif name in KPI_TABLES:  # small: a copy in memory spares every KPI query the file opens
                        self._con.execute(f"CREATE OR REPLACE TABLE _mem_{name} AS SELECT * FROM "
                                          f"iceberg_scan('{duck.local_path(location)}')")
                        self._con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _mem_{name}")
                    else:
                        duck.register_table(self._con, name, table, SCHEMAS[name])
                    self._locations[name] = location
                self._states[name] = TableState(
                    name, snap.snapshot_id if snap else None,
                    datetime.fromtimestamp(snap.timestamp_ms / 1000, UTC) if snap else None,
                    KpiMaintainer.state(table) if table is not None and name in KPI_TABLES else None)
                snapshots.append((name, snap.snapshot_id if snap else None))
            self._version = LakeVersion(tuple(snapshots))
            self._synced_at = time.monotonic()
            return self._version

    def _materialize(self, name: str, data: pa.Table) -> None:
        """Table ``name`` holding ``data`` in the in-memory database (objects registered with
        ``register`` are private to one connection; tables are seen by every cursor)."""
        self._con.register("_incoming", data)
        try:
            self._con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _incoming")
        finally:
            self._con.unregister("_incoming")

    def _materialize_parameters(self) -> None:
        """Tables ``rating_criteria(name)`` and ``params(positive_rating_threshold, negative_threshold)``
        from the KPI settings, as the KPI SQL sees them (:func:`feedback.kpi.engine.register_parameters`)."""
        scratch = engine.connect(self.kpi)
        engine.register_parameters(scratch, self.kpi)
        for name in ("rating_criteria", "params"):
            self._materialize(name, scratch.execute(f"SELECT * FROM {name}").fetch_arrow_table())
        scratch.close()

    def states(self) -> dict[str, TableState]:
        """Per table: snapshot, commit time and (KPI tables) the maintainer's state, as of the last sync."""
        with self._lock:
            return dict(self._states)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of the shared connection (one per query: cursors are safe across threads)."""
        return self._con.cursor()

    def df(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run ``sql`` with bound ``params`` on a fresh cursor; the result as a pandas DataFrame."""
        cur = self.cursor()
        try:
            return cur.execute(sql, params or []).df()
        finally:
            cur.close()
