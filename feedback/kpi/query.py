"""Read KPIs: values per window and group with 95 % intervals, and A-vs-B comparisons.

Queries run in DuckDB over the KPI tables (and, for percentiles, the ``interactions`` lake table),
all read with ``iceberg_scan`` of their current snapshots. Dimension names are checked against
the KPI's allowed dimensions and filter values are bound as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
from pyiceberg.catalog import Catalog

from feedback.config import KpiSettings, LakeSettings
from feedback.errors import FlywheelError
from feedback.kpi import engine, stats
from feedback.kpi.definitions import KPIS, KpiDefinition
from feedback.lake import duck
from feedback.lake.catalog import load_table_if_exists

GRAINS = ("hour", "day", "total")


class KpiError(FlywheelError):
    """Unknown KPI, dimension or grain, or a comparison the KPI does not support."""


@dataclass
class KpiFilter:
    """Time range [start, end) on the window start (UTC), and equality filters on dimensions."""

    start: datetime | None = None
    end: datetime | None = None
    dims: dict[str, str] = field(default_factory=dict)


@dataclass
class KpiRow:
    """One value: its window (None for grain total), its group, the value with its 95 % interval,
    the number of observations behind it, and ``low_n`` when n < the configured minimum."""

    window_start: datetime | None
    group: dict[str, Any]
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int | None
    low_n: bool


@dataclass
class KpiComparison:
    """A vs B on one KPI over the filter's range: each side's row, ``difference`` = B − A with its
    95 % interval and p-value, and the ``method`` that produced them."""

    kpi: str
    dimension: str
    a: KpiRow
    b: KpiRow
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    method: str


def kpi_connection(catalog: Catalog, lake: LakeSettings | None = None) -> duckdb.DuckDBPyConnection:
    """DuckDB with views ``kpi_interactions``, ``kpi_feedback`` and ``interactions`` on the lake."""
    lake = lake or LakeSettings()
    con = engine.connect()
    from feedback.kpi.tables import KPI_TABLE_SCHEMAS
    from feedback.lake.tables import TABLE_SCHEMAS

    for name in ("kpi_interactions", "kpi_feedback", "interactions"):
        schema = KPI_TABLE_SCHEMAS.get(name) or TABLE_SCHEMAS[name]
        duck.register_table(con, name, load_table_if_exists(catalog, lake, name), schema)
    return con


def definition(name: str) -> KpiDefinition:
    try:
        return KPIS[name]
    except KeyError:
        raise KpiError(f"unknown KPI {name!r}; `flywheel kpi list` shows them") from None


def _where(kpi: KpiDefinition, grain: str, flt: KpiFilter) -> tuple[str, list[Any]]:
    time_col = "occurred_at" if kpi.kind == "percentile" else "window_start"
    clauses, params = [], []
    if kpi.kind != "percentile":
        clauses.append("grain = ?")
        params.append("hour" if grain == "hour" else "day")
    if flt.start:
        clauses.append(f"{time_col} >= ?")
        params.append(flt.start)
    if flt.end:
        clauses.append(f"{time_col} < ?")
        params.append(flt.end)
    for dim, value in flt.dims.items():
        _check_dims(kpi, [dim])
        clauses.append(f"{dim} = ?")
        params.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _check_dims(kpi: KpiDefinition, dims: list[str]) -> None:
    bad = [d for d in dims if d not in kpi.dimensions]
    if bad:
        raise KpiError(f"{kpi.name} cannot be split or filtered by {bad}; dimensions: {list(kpi.dimensions)}")


def query(con: duckdb.DuckDBPyConnection, name: str, grain: str = "day", by: list[str] | None = None,
          flt: KpiFilter | None = None, settings: KpiSettings | None = None) -> list[KpiRow]:
    """Values of KPI ``name`` per window (``grain`` hour | day | total) and per ``by`` group."""
    kpi, by, flt, settings = definition(name), list(by or []), flt or KpiFilter(), settings or KpiSettings()
    if grain not in GRAINS:
        raise KpiError(f"grain must be one of {GRAINS}")
    _check_dims(kpi, by)
    where, params = _where(kpi, grain, flt)
    window = [] if grain == "total" else (
        [f"date_trunc('{grain}', occurred_at) AS window_start"] if kpi.kind == "percentile" else ["window_start"])
    if kpi.kind == "percentile":
        column, q = kpi.exprs
        aggs = [f"quantile_cont({column}, {float(q)})", f"count({column})"]
    else:
        aggs = list(kpi.exprs)
    select = ", ".join(window + by + [f"{a} AS v{i}" for i, a in enumerate(aggs)])
    group = " GROUP BY ALL" if window or by else ""
    order = " ORDER BY ALL" if window or by else ""
    sql = f"SELECT {select} FROM {kpi.table}{where}{group}{order}"
    rows = []
    for rec in con.execute(sql, params).fetchall():
        ws = rec[0] if window else None
        group_vals = dict(zip(by, rec[len(window):len(window) + len(by)]))
        rows.append(_row(kpi, ws, group_vals, rec[len(window) + len(by):], settings.min_observations))
    return rows


def _row(kpi: KpiDefinition, window_start, group, values, min_n: int) -> KpiRow:
    vals = [float(v) if v is not None else None for v in values]
    if kpi.kind == "proportion":
        est = stats.proportion(int(vals[0] or 0), int(vals[1] or 0))
        return KpiRow(window_start, group, est.value, est.ci_low, est.ci_high, est.n, est.n < min_n)
    if kpi.kind == "mean":
        n = int(vals[0] or 0)
        est = stats.mean(n, vals[1] or 0.0, vals[2] or 0.0)
        return KpiRow(window_start, group, est.value, est.ci_low, est.ci_high, n, n < min_n)
    if kpi.kind == "ratio":
        value = vals[0] / vals[1] if vals[0] is not None and vals[1] else None
        n = int(vals[1] or 0)
        return KpiRow(window_start, group, value, None, None, n, n < min_n)
    if kpi.kind == "percentile":
        n = int(vals[1] or 0)
        return KpiRow(window_start, group, vals[0], None, None, n, n < min_n)
    total = vals[0] if vals[0] is not None else 0.0
    return KpiRow(window_start, group, int(total) if kpi.kind == "count" else total, None, None, None, False)


def compare(con: duckdb.DuckDBPyConnection, name: str, dimension: str, a: str, b: str,
            flt: KpiFilter | None = None, settings: KpiSettings | None = None) -> KpiComparison:
    """KPI ``name`` for ``dimension = a`` vs ``dimension = b`` over the filter's range.

    ``difference`` = b − a. Proportions: Newcombe hybrid score interval and pooled two-proportion
    z-test; means: Welch's t-test (see :mod:`feedback.kpi.stats`). Other kinds: the difference only.
    """
    kpi, flt, settings = definition(name), flt or KpiFilter(), settings or KpiSettings()
    _check_dims(kpi, [dimension])
    sides, raw = [], []
    for value in (a, b):
        side_filter = KpiFilter(flt.start, flt.end, {**flt.dims, dimension: value})
        if kpi.kind in ("proportion", "mean"):  # one query gives both the side's row and its sums
            where, params = _where(kpi, "total", side_filter)
            sums = con.execute(f"SELECT {', '.join(kpi.exprs)} FROM {kpi.table}{where}", params).fetchone()
            raw.append(sums)
            sides.append(_row(kpi, None, {dimension: value}, sums, settings.min_observations))
        else:
            rows = query(con, name, "total", [], side_filter, settings)
            side = rows[0] if rows else KpiRow(None, {}, None, None, None, 0, True)
            side.group = {dimension: value}
            sides.append(side)
    if kpi.kind == "proportion":
        (s1, n1), (s2, n2) = [(int(r[0] or 0), int(r[1] or 0)) for r in raw]
        c = stats.compare_proportions(s2, n2, s1, n1)
        return KpiComparison(name, dimension, sides[0], sides[1], c.difference, c.ci_low, c.ci_high, c.p_value, c.method)
    if kpi.kind == "mean":
        (n1, t1, q1), (n2, t2, q2) = [(int(r[0] or 0), float(r[1] or 0), float(r[2] or 0)) for r in raw]
        c = stats.compare_means(n2, t2, q2, n1, t1, q1)
        return KpiComparison(name, dimension, sides[0], sides[1], c.difference, c.ci_low, c.ci_high, c.p_value, c.method)
    diff = sides[1].value - sides[0].value if sides[0].value is not None and sides[1].value is not None else None
    return KpiComparison(name, dimension, sides[0], sides[1], diff, None, None, None,
                         f"difference only: no test for {kpi.kind} KPIs")
