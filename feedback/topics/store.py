"""Lake tables of the topic model and the DuckDB connection the topic queries run on.

* ``topics``: one row per topic per model version — ``topic_id`` (int32, 0..k−1), ``label``
  (string: the first c-TF-IDF terms joined by " · "), ``terms`` (list<string>, best first), ``size``
  (int64: interactions assigned at build time; current sizes come from ``topic_assignments``),
  ``centroid`` (list<float32>, unit norm, 384 values for MiniLM), ``model_version`` (string),
  ``created_at`` (timestamp UTC).
* ``topic_assignments``: one row per interaction per model version — ``message_id``,
  ``conversation_id``, ``topic_id``, ``distance`` (float64, cosine distance 1 − cos to the topic's
  centroid, in [0, 2]), ``model_version``, ``assigned_at`` (timestamp UTC).

Both are append-only (with manifest merging like every Flywheel table). The **current model** is the
version of the ``topics`` row with the latest ``created_at``; views ``current_topics`` and
``current_assignments`` show only it (an interaction assigned twice to it — two concurrent
``assign`` runs — counts once, its first assignment).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog

from feedback.config import KpiSettings, LakeSettings
from feedback.kpi import engine
from feedback.lake import duck
from feedback.lake.catalog import create_table, load_table_if_exists
from feedback.lake.tables import TABLE_SCHEMAS

TOPICS = "topics"
ASSIGNMENTS = "topic_assignments"
TS = pa.timestamp("us", tz="UTC")
SCHEMAS: dict[str, pa.Schema] = {
    TOPICS: pa.schema([
        pa.field("topic_id", pa.int32()), pa.field("label", pa.string()), pa.field("terms", pa.list_(pa.string())),
        pa.field("size", pa.int64()), pa.field("centroid", pa.list_(pa.float32())),
        pa.field("model_version", pa.string()), pa.field("created_at", TS),
    ]),
    ASSIGNMENTS: pa.schema([
        pa.field("message_id", pa.string()), pa.field("conversation_id", pa.string()), pa.field("topic_id", pa.int32()),
        pa.field("distance", pa.float64()), pa.field("model_version", pa.string()), pa.field("assigned_at", TS),
    ]),
}

CURRENT_VERSION_SQL = "(SELECT model_version FROM topics ORDER BY created_at DESC, model_version DESC LIMIT 1)"


def append(catalog: Catalog, lake: LakeSettings, name: str, rows: pa.Table) -> None:
    """Append ``rows`` (cast to the table's schema) in one commit."""
    if rows.num_rows:
        create_table(catalog, lake, name, SCHEMAS[name]).append(rows.select(SCHEMAS[name].names).cast(SCHEMAS[name]))


def locations(catalog: Catalog, lake: LakeSettings) -> tuple[tuple[str, str | None], ...]:
    """Current metadata location of each lake table the topic queries read (None: no data): a
    hashable cache key that changes exactly when one of them gets a new snapshot."""
    out = []
    for name in ("interactions", "feedback", TOPICS, ASSIGNMENTS):
        table = load_table_if_exists(catalog, lake, name)
        out.append((name, table.metadata_location if table is not None and table.current_snapshot() else None))
    return tuple(out)


def connect(catalog: Catalog, lake: LakeSettings | None = None, kpi: KpiSettings | None = None) -> duckdb.DuckDBPyConnection:
    """DuckDB (KPI memory/thread limits) with views ``interactions``, ``feedback``, ``topics``,
    ``topic_assignments`` at their current snapshots (empty views for tables with no data),
    ``current_topics``, ``current_assignments``, and the KPI parameter tables ``rating_criteria`` and
    ``params`` (:func:`feedback.kpi.engine.register_parameters`)."""
    lake = lake or LakeSettings()
    kpi = kpi or KpiSettings()
    con = engine.connect(kpi)
    for name in ("interactions", "feedback"):
        duck.register_table(con, name, load_table_if_exists(catalog, lake, name), TABLE_SCHEMAS[name])
    for name in (TOPICS, ASSIGNMENTS):
        duck.register_table(con, name, load_table_if_exists(catalog, lake, name), SCHEMAS[name])
    engine.register_parameters(con, kpi)
    con.execute(f"CREATE VIEW current_topics AS SELECT * FROM topics WHERE model_version = {CURRENT_VERSION_SQL}")
    con.execute(f"""CREATE VIEW current_assignments AS SELECT * FROM topic_assignments
                    WHERE model_version = {CURRENT_VERSION_SQL}
                    QUALIFY row_number() OVER (PARTITION BY message_id ORDER BY assigned_at, topic_id) = 1""")
    return con


def current_version(con: duckdb.DuckDBPyConnection) -> str | None:
    """The current model version, None when no model was built."""
    row = con.execute(CURRENT_VERSION_SQL.strip("()")).fetchone()
    return row[0] if row else None
