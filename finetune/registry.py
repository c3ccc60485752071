"""The dataset registry: one row per built version in the lake table ``dataset_versions``.

Any engine that reads the lake sees which datasets exist, from which lake snapshots and spec they
were built, their counts and where their files are. Appending the same version twice is a no-op.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo

from feedback.config import LakeSettings
from feedback.lake.catalog import create_table, read_table
from finetune.build import Built
from finetune.errors import DatasetError

TABLE = "dataset_versions"
SCHEMA = pa.schema([
    pa.field("version", pa.string()), pa.field("name", pa.string()), pa.field("format", pa.string()),
    pa.field("created_at", pa.timestamp("us", tz="UTC")), pa.field("spec_sha256", pa.string()),
    pa.field("spec_yaml", pa.string()), pa.field("snapshot_interactions", pa.int64()),
    pa.field("snapshot_feedback", pa.int64()), pa.field("path", pa.string()),
    pa.field("train_rows", pa.int64()), pa.field("validation_rows", pa.int64()), pa.field("test_rows", pa.int64()),
    pa.field("lineage_json", pa.string()),
])


def register(catalog: Catalog, built: Built, path: Path, lineage: dict, lake: LakeSettings | None = None) -> bool:
    """Record ``built`` (written at ``path``); False when that version was already registered."""
    s = built.report.splits
    return register_row(catalog, {
        "version": built.version, "name": built.spec.name, "format": built.spec.format,
        "created_at": datetime.now(UTC), "spec_sha256": built.spec.sha256(), "spec_yaml": built.spec.canonical_yaml(),
        "snapshot_interactions": built.snapshot.interactions, "snapshot_feedback": built.snapshot.feedback,
        "path": str(path), "train_rows": s.get("train", 0), "validation_rows": s.get("validation", 0),
        "test_rows": s.get("test", 0), "lineage_json": json.dumps(lineage, sort_keys=True)}, lake)


def register_row(catalog: Catalog, row: dict, lake: LakeSettings | None = None) -> bool:
    """Append one registry ``row`` (the columns of :data:`SCHEMA`); False when its version is already
    registered (nothing appended). Used by builds and by synthetic versions (:mod:`finetune.synth`)."""
    table = create_table(catalog, lake or LakeSettings(), TABLE, SCHEMA)
    if table.current_snapshot() is not None and table.scan(row_filter=EqualTo("version", row["version"]),
                                                            selected_fields=("version",)).to_arrow().num_rows:
        return False
    table.append(pa.Table.from_pylist([row], schema=SCHEMA))
    return True


def versions(catalog: Catalog, lake: LakeSettings | None = None) -> list[dict]:
    """Every registered version, oldest first (empty before the first build)."""
    rows = read_table(catalog, lake or LakeSettings(), TABLE, SCHEMA).to_pylist()
    return sorted(rows, key=lambda r: (r["created_at"], r["version"]))


def get(catalog: Catalog, version: str, lake: LakeSettings | None = None) -> dict:
    """One version's registry row. Raises DatasetError when unknown."""
    rows = read_table(catalog, lake or LakeSettings(), TABLE, SCHEMA, EqualTo("version", version)).to_pylist()
    if rows:
        return rows[0]
    raise DatasetError(f"unknown dataset version {version!r}; `flywheel dataset list` shows them")
