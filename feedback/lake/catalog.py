"""Open the Iceberg catalog and the lake tables, creating them on first use."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.table import Table, TableProperties
from pyiceberg.transforms import DayTransform
from sqlalchemy.exc import OperationalError

from feedback.config import HomeSettings, LakeSettings
from feedback.lake.tables import PARTITION_COLUMN, TABLE_SCHEMAS


def open_catalog(settings: LakeSettings | None = None, home: HomeSettings | None = None) -> Catalog:
    """Load the configured catalog.

    Default: a pyiceberg SQL catalog on SQLite at ``<home>/catalog.db`` with warehouse
    ``<home>/warehouse``. ``settings.catalog_properties`` are passed to ``load_catalog`` as they are.
    """
    settings = settings or LakeSettings()
    home_dir = (home or HomeSettings()).home
    props: dict[str, Any] = dict(settings.catalog_properties)
    if "type" not in props and "uri" not in props:
        home_dir.mkdir(parents=True, exist_ok=True)
        (home_dir / "warehouse").mkdir(exist_ok=True)
        props.update(
            type="sql",
            uri=settings.catalog_uri or f"sqlite:///{home_dir / 'catalog.db'}",
            warehouse=settings.warehouse or (home_dir / "warehouse").as_uri(),
        )
    elif settings.catalog_uri:
        props.setdefault("uri", settings.catalog_uri)
    if settings.warehouse:
        props.setdefault("warehouse", settings.warehouse)
    try:
        return load_catalog(settings.catalog_name, **props)
    except OperationalError as exc:
        # A SQL catalog creates its tables on first open; two processes opening a new catalog at
        # once (the consumer and the KPI follower of the main job) race, and the loser sees
        # "already exists". The tables are there now: open again.
        if "already exists" not in str(exc):
            raise
        return load_catalog(settings.catalog_name, **props)


def table_identifier(settings: LakeSettings, name: str) -> str:
    """``<namespace>.<name>``."""
    return f"{settings.namespace}.{name}"


MANIFEST_MERGE = {TableProperties.MANIFEST_MERGE_ENABLED: "true", TableProperties.MANIFEST_MIN_MERGE_COUNT: "8"}
"""Table properties of every Flywheel table: each micro-batch is one append, and with fast appends
every append adds a manifest that every later scan must read. Merging manifests once 8 pile up keeps
scan planning (and so emit→KPI latency) flat as commits accumulate."""


def ensure_table(catalog: Catalog, settings: LakeSettings, name: str) -> Table:
    """Load lake table ``name`` (a key of ``TABLE_SCHEMAS``), creating it partitioned by day."""
    ident = table_identifier(settings, name)
    catalog.create_namespace_if_not_exists(settings.namespace)
    try:
        return with_manifest_merge(catalog.load_table(ident))
    except NoSuchTableError:
        pass
    schema: pa.Schema = TABLE_SCHEMAS[name]
    table = catalog.create_table_if_not_exists(ident, schema=schema, properties=MANIFEST_MERGE)
    if table.spec().is_unpartitioned():
        column = PARTITION_COLUMN[name]
        with table.update_spec() as update:
            update.add_field(column, DayTransform(), f"{column}_day")
        table = catalog.load_table(ident)
    return table


def with_manifest_merge(table: Table) -> Table:
    """Set :data:`MANIFEST_MERGE` on a table created before it existed; return the table."""
    if all(table.properties.get(k) == v for k, v in MANIFEST_MERGE.items()):
        return table
    with table.transaction() as tx:
        tx.set_properties(MANIFEST_MERGE)
    return table


def load_table_if_exists(catalog: Catalog, settings: LakeSettings, name: str) -> Table | None:
    """The lake table ``name``, or None when nothing has been ingested yet."""
    try:
        return catalog.load_table(table_identifier(settings, name))
    except NoSuchTableError:
        return None


def create_table(catalog: Catalog, settings: LakeSettings, name: str, schema: pa.Schema) -> Table:
    """Load or create the unpartitioned table ``name`` (namespace created when missing) with
    :data:`MANIFEST_MERGE`: the registries beside the event tables (dataset versions, jobs, evaluations,
    reward models, topics)."""
    catalog.create_namespace_if_not_exists(settings.namespace)
    return catalog.create_table_if_not_exists(table_identifier(settings, name), schema=schema, properties=MANIFEST_MERGE)


def read_table(catalog: Catalog, settings: LakeSettings, name: str, schema: pa.Schema,
               row_filter: BooleanExpression | str | None = None) -> pa.Table:
    """The rows of table ``name`` matching ``row_filter`` (pyiceberg expression or string; None: all); an empty
    table of ``schema`` when the table does not exist or has no snapshot yet."""
    table = load_table_if_exists(catalog, settings, name)
    if table is None or table.current_snapshot() is None:
        return schema.empty_table()
    return table.scan(row_filter=row_filter if row_filter is not None else AlwaysTrue()).to_arrow()
