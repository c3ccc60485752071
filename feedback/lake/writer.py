"""Idempotent micro-batch writer into the lake tables (the sink of the ingestion consumer).

Exactly-once effect comes from two rules (the pattern of quix-streams' sinks: add, then flush,
then commit offsets):

1. every row has a key (``event_id``; ``quarantine_id`` for quarantine) and a row whose key is
   already in the table is dropped, with no time bound: the writer holds the set of all keys of
   each table, loaded from the lake at start and after every partition reassignment;
2. the caller commits Kafka offsets only after :meth:`LakeWriter.write` returned, i.e. after the
   Iceberg commits. A crash in between re-delivers records whose rows are then dropped by rule 1.

Each Iceberg snapshot carries the Kafka offsets of its batch in its summary
(``flywheel.kafka.offsets``), so a lake commit can be traced back to the records behind it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException

from feedback.config import LakeSettings
from feedback.errors import LakeError
from feedback.lake.catalog import ensure_table
from feedback.lake.tables import KEY_COLUMN, TABLE_SCHEMAS

log = logging.getLogger(__name__)


@dataclass
class WriteResult:
    """Rows appended and rows dropped as already present, per table."""

    appended: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)


class LakeWriter:
    """Appends rows to the lake tables, dropping any row whose key the table already holds.

    Memory: one Python string per key ever written (about 100 bytes per event).
    Raises LakeError when a table commit still conflicts after ``settings.commit_retries`` tries.
    """

    def __init__(self, catalog: Catalog, settings: LakeSettings | None = None):
        self.catalog = catalog
        self.settings = settings or LakeSettings()
        self.tables = {name: ensure_table(catalog, self.settings, name) for name in TABLE_SCHEMAS}
        self.known: dict[str, set[str]] = {}
        self.reload_keys()

    def reload_keys(self, names: list[str] | None = None) -> None:
        """Re-read the key column of the given tables (all by default) from their current snapshot."""
        for name in names or list(TABLE_SCHEMAS):
            table = self.catalog.load_table(self.tables[name].name())
            self.tables[name] = table
            key = KEY_COLUMN[name]
            keys = table.scan(selected_fields=(key,)).to_arrow().column(key)
            self.known[name] = set(keys.to_pylist())

    def write(self, rows_by_table: dict[str, list[dict[str, Any]]], snapshot_properties: dict[str, Any]) -> WriteResult:
        """Append the new rows of each table in one Iceberg commit per table.

        ``rows_by_table`` maps a table name to row dicts shaped by ``TABLE_SCHEMAS``;
        ``snapshot_properties`` (JSON-able values) go into each snapshot's summary.
        """
        result = WriteResult()
        props = {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in snapshot_properties.items()}
        for name, rows in rows_by_table.items():
            if not rows:
                continue
            for attempt in range(self.settings.commit_retries):
                fresh, duplicates = self._new_rows(name, rows)
                if not fresh:
                    break
                try:
                    table = self.tables[name]
                    table.append(pa.Table.from_pylist(fresh, schema=TABLE_SCHEMAS[name]), snapshot_properties=props)
                    break
                except CommitFailedException:
                    log.warning("commit conflict on %s (attempt %d); reloading keys", name, attempt + 1)
                    self.reload_keys([name])
            else:
                raise LakeError(f"table {name}: commit failed {self.settings.commit_retries} times")
            self.known[name].update(r[KEY_COLUMN[name]] for r in fresh)
            result.appended[name] = len(fresh)
            result.duplicates[name] = duplicates
        return result

    def _new_rows(self, name: str, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        key = KEY_COLUMN[name]
        known = self.known[name]
        seen: set[str] = set()
        fresh = []
        for row in rows:
            k = row[key]
            if k in known or k in seen:
                continue
            seen.add(k)
            fresh.append(row)
        return fresh, len(rows) - len(fresh)
