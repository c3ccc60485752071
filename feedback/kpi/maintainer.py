"""Keep the KPI tables current: recompute only the days that new lake snapshots touched.

State per KPI table lives in its Iceberg table properties (``flywheel.kpi.state``, JSON): the
source snapshot ids already reflected, the SQL version, the watermark and the refresh time. A
refresh reads the data files added to ``interactions`` and ``feedback`` since those snapshots,
finds the touched UTC days (``sql/touched_days.sql``), recomputes every hour and day window of
those days from the full lake, and replaces them in one Iceberg transaction that also stores the
new state. So a crash leaves either the old or the new state, and a rating that arrives days late
updates its old window. A changed SQL version, or a source snapshot no longer in the history,
triggers a full rebuild (day chunks of ``rebuild_days_per_chunk``, so memory follows the chunk,
not the lake).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue, In
from pyiceberg.table import Table

from feedback.config import KpiSettings, LakeSettings
from feedback.kpi import engine
from feedback.kpi.sentiment import SentimentScorer, load_scorer
from feedback.kpi.tables import KPI_TABLE_SCHEMAS
from feedback.lake.catalog import MANIFEST_MERGE, ensure_table, load_table_if_exists, table_identifier, with_manifest_merge
from feedback.lake import duck
from feedback.lake.tables import TABLE_SCHEMAS

log = logging.getLogger(__name__)
STATE_KEY = "flywheel.kpi.state"
SOURCES = ("interactions", "feedback")


@dataclass
class RefreshResult:
    """What one refresh did, per KPI table: days recomputed, rows written, full or incremental."""

    days: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    rebuilt: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0


def added_data_files(table: Table, since_snapshot_id: int | None) -> list[str] | None:
    """Data files appended to ``table`` after snapshot ``since_snapshot_id`` (None: all of them
    are needed, i.e. the snapshot is unknown or expired)."""
    snapshot = table.current_snapshot()
    chain = []
    while snapshot is not None and snapshot.snapshot_id != since_snapshot_id:
        chain.append(snapshot)
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    if since_snapshot_id is not None and snapshot is None:
        return None
    files = []
    for snap in chain:
        for manifest in snap.manifests(table.io):
            if manifest.added_snapshot_id != snap.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                if entry.snapshot_id == snap.snapshot_id:
                    files.append(entry.data_file.file_path)
    return files


class KpiMaintainer:
    """Refreshes ``kpi_interactions`` and ``kpi_feedback`` from the lake (see module doc)."""

    def __init__(self, catalog: Catalog, lake: LakeSettings | None = None, settings: KpiSettings | None = None,
                 scorer: SentimentScorer | None = None):
        self.catalog = catalog
        self.lake = lake or LakeSettings()
        self.settings = settings or KpiSettings()
        self.scorer = scorer or load_scorer(self.settings.sentiment_scorer)
        self._stop = threading.Event()
        self._con = engine.connect(self.settings)

    def _kpi_table(self, name: str) -> Table:
        table = load_table_if_exists(self.catalog, self.lake, name)
        if table is not None:
            return with_manifest_merge(table)
        table = self.catalog.create_table_if_not_exists(table_identifier(self.lake, name), schema=KPI_TABLE_SCHEMAS[name],
                                                        properties=MANIFEST_MERGE)
        if table.spec().is_unpartitioned():
            with table.update_spec() as update:
                update.add_identity("window_day")
        return self.catalog.load_table(table_identifier(self.lake, name))

    @staticmethod
    def state(table: Table) -> dict[str, Any]:
        """The stored state of a KPI table ({} before its first refresh)."""
        raw = table.properties.get(STATE_KEY)
        return orjson.loads(raw) if raw else {}

    def refresh(self, force_rebuild: bool = False) -> RefreshResult:
        """Bring both KPI tables up to the lake's current snapshots."""
        started = time.perf_counter()
        result = RefreshResult()
        sources = {name: ensure_table(self.catalog, self.lake, name) for name in SOURCES}
        con = self._con
        for s in SOURCES:
            duck.register_table(con, s, sources[s], TABLE_SCHEMAS[s])
        engine.register_parameters(con, self.settings)
        days_cache: dict[str, list[date]] = {}
        for name in KPI_TABLE_SCHEMAS:
            self._refresh_table(con, name, sources, force_rebuild, result, days_cache)
        result.seconds = time.perf_counter() - started
        return result

    def rebuild(self) -> RefreshResult:
        """Recompute every window of every KPI table from the whole lake."""
        return self.refresh(force_rebuild=True)

    def _refresh_table(self, con, name: str, sources: dict[str, Table], force: bool, result: RefreshResult,
                       days_cache: dict[str, list[date]]) -> None:
        kpi = self._kpi_table(name)
        state = self.state(kpi)
        snapshot_ids = {s: (t.current_snapshot().snapshot_id if t.current_snapshot() else None) for s, t in sources.items()}
        version = engine.sql_version(name)
        rebuild = force or "sources" not in state or state.get("sql_version") != version
        new_files = {}
        if not rebuild:
            if all(state["sources"].get(s) == snapshot_ids[s] for s in SOURCES):
                return  # nothing new
            for s in SOURCES:
                files = added_data_files(sources[s], state["sources"].get(s))
                if files is None:
                    rebuild = True
                    break
                new_files[s] = files
        # both KPI tables usually start from the same source snapshots: find the days once
        key = "rebuild" if rebuild else orjson.dumps(state["sources"]).decode()
        engine.register_files(con, "new_interactions", new_files.get("interactions", []), "interactions")
        engine.register_files(con, "new_feedback", new_files.get("feedback", []), "feedback")
        if key not in days_cache:
            days_cache[key] = [r[0] for r in con.execute("""
                SELECT DISTINCT CAST(date_trunc('day', occurred_at) AS DATE) FROM interactions
                UNION SELECT DISTINCT CAST(date_trunc('day', occurred_at) AS DATE) FROM feedback ORDER BY 1""").fetchall()] \
                if rebuild else engine.touched_days(con)
        days = days_cache[key]
        watermark = self._watermark(con, state, rebuild, new_files)
        new_state = {"sources": snapshot_ids, "sql_version": version, "watermark": watermark,
                     "refreshed_at": datetime.now(UTC).isoformat()}
        rows = self._replace_days(con, kpi, name, days, rebuild, new_state)
        result.days[name], result.rows[name], result.rebuilt[name] = len(days), rows, rebuild
        self._expire(name)

    def _expire(self, name: str) -> None:
        """KPI tables are derived: keep ``snapshot_retention_s`` of history so metadata stays small."""
        table = self.catalog.load_table(table_identifier(self.lake, name))
        horizon = datetime.now(UTC) - timedelta(seconds=self.settings.snapshot_retention_s)
        old = [s for s in table.snapshots() if s.timestamp_ms < horizon.timestamp() * 1000]
        if len(old) > 20:
            table.maintenance.expire_snapshots().older_than(horizon).commit()

    def _watermark(self, con, state: dict[str, Any], rebuild: bool, new_files: dict[str, list[str]]) -> str | None:
        """Latest event time reflected, minus the allowed lateness (ISO text; None if no data)."""
        src = "interactions UNION ALL SELECT occurred_at FROM feedback" if rebuild else \
              "new_interactions UNION ALL SELECT occurred_at FROM new_feedback"
        latest = con.execute(f"SELECT max(occurred_at) FROM (SELECT occurred_at FROM {src})").fetchone()[0]
        previous = datetime.fromisoformat(state["watermark"]) if state.get("watermark") and not rebuild else None
        if latest is None:
            return previous.isoformat() if previous else None
        mark = latest.astimezone(UTC) - timedelta(seconds=self.settings.allowed_lateness_s)
        return max(mark, previous).isoformat() if previous else mark.isoformat()

    def _replace_days(self, con, kpi: Table, name: str, days: list[date], rebuild: bool, new_state: dict) -> int:
        chunk = max(1, self.settings.rebuild_days_per_chunk)
        groups = [days[i:i + chunk] for i in range(0, len(days), chunk)] or [[]]
        written = 0
        for n, group in enumerate(groups):
            engine.register_days(con, group)
            if name == "kpi_feedback":
                engine.score_comments(con, self.scorer)
            rows = engine.compute(con, name, group) if group else KPI_TABLE_SCHEMAS[name].empty_table()
            written += rows.num_rows
            last = n == len(groups) - 1
            with kpi.transaction() as tx:
                if rebuild and n == 0:
                    if kpi.current_snapshot() is not None:
                        tx.delete(AlwaysTrue())
                elif group and not rebuild:
                    with warnings.catch_warnings():  # a day seen for the first time has nothing to delete
                        warnings.filterwarnings("ignore", "Delete operation did not match any records")
                        tx.delete(In("window_day", group))
                if rows.num_rows:
                    tx.append(rows)
                if last:
                    tx.set_properties({STATE_KEY: orjson.dumps(new_state).decode()})
                elif n == 0:  # a crash before the last chunk must not look like a finished rebuild
                    tx.set_properties({STATE_KEY: orjson.dumps({"rebuild_in_progress": True}).decode()})
            kpi = self.catalog.load_table(kpi.name())
        return written

    def follow(self, interval_s: float | None = None, stop: threading.Event | None = None) -> None:
        """Refresh every ``interval_s`` (default ``settings.refresh_interval_s``) until stopped."""
        stop = stop or self._stop
        interval = interval_s if interval_s is not None else self.settings.refresh_interval_s
        while not stop.is_set():
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - keep following; the next refresh retries
                log.exception("KPI refresh failed; retrying")
            stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
