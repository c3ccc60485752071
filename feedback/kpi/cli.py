"""``flywheel kpi list | show | compare | rebuild | refresh | follow | status``."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Optional

import typer

from feedback.config import KpiSettings, LakeSettings
from feedback.errors import FlywheelError
from feedback.cli_errors import fail as _fail

kpi_app = typer.Typer(help="KPIs: versioned DuckDB SQL over the lake, materialised incrementally.", no_args_is_help=True)
FORMATS = ("table", "csv", "json")


def _catalog():
    from feedback.lake.catalog import open_catalog

    return open_catalog()


def _emit(columns: list[str], rows: list[list], fmt: str) -> None:
    if fmt == "json":
        typer.echo(json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        writer.writerows(rows)
        typer.echo(buf.getvalue().rstrip("\n"))
    else:
        from feedback.report import format_table

        typer.echo(format_table(columns, [tuple(r) for r in rows]))


def _filter(since: Optional[datetime], until: Optional[datetime], project, app, model, prompt_version, feedback_source):
    from feedback.kpi.query import KpiFilter

    dims = {k: v for k, v in {"project": project, "app": app, "model": model, "prompt_version": prompt_version,
                              "feedback_source": feedback_source}.items() if v is not None}
    return KpiFilter(since, until, dims)


@kpi_app.command("list")
def kpi_list(fmt: str = typer.Option("table", "--format", help="table | csv | json")) -> None:
    """Every KPI with its version, kind, unit, dimensions and description."""
    from feedback.kpi.definitions import KPIS

    rows = [[k.name, k.version, k.kind, k.unit, ",".join(k.dimensions), k.description] for k in KPIS.values()]
    _emit(["kpi", "version", "kind", "unit", "dimensions", "description"], rows, fmt)


@kpi_app.command("show")
def kpi_show(
    name: str,
    grain: str = typer.Option("day", help="hour | day | total"),
    by: list[str] = typer.Option([], "--by", help="Split by a dimension (repeatable)."),
    since: Optional[datetime] = typer.Option(None, help="Window start at or after (UTC)."),
    until: Optional[datetime] = typer.Option(None, help="Window start before (UTC)."),
    project: Optional[str] = None, app: Optional[str] = None, model: Optional[str] = None,
    prompt_version: Optional[str] = None, feedback_source: Optional[str] = None,
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
) -> None:
    """Values of one KPI per window and group, with 95 % intervals; low_n flags small samples."""
    from feedback.kpi.query import kpi_connection, query

    try:
        rows = query(kpi_connection(_catalog()), name, grain, by,
                     _filter(since, until, project, app, model, prompt_version, feedback_source), KpiSettings())
    except (FlywheelError, ValueError) as exc:
        _fail(exc)
    cols = (["window_start"] if grain != "total" else []) + by + ["value", "ci_low", "ci_high", "n", "low_n"]
    out = [([r.window_start] if grain != "total" else []) + [r.group[b] for b in by] + [r.value, r.ci_low, r.ci_high, r.n, r.low_n]
           for r in rows]
    _emit(cols, out, fmt)


@kpi_app.command("compare")
def kpi_compare(
    name: str, a: str, b: str,
    by: str = typer.Option("model", "--by", help="Dimension that separates A from B."),
    since: Optional[datetime] = None, until: Optional[datetime] = None,
    project: Optional[str] = None, app: Optional[str] = None, model: Optional[str] = None,
    prompt_version: Optional[str] = None, feedback_source: Optional[str] = None,
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
) -> None:
    """A vs B on one KPI: each value with its interval, B − A with its 95 % interval and p-value."""
    from feedback.kpi.query import compare, kpi_connection

    try:
        c = compare(kpi_connection(_catalog()), name, by, a, b,
                    _filter(since, until, project, app, model, prompt_version, feedback_source), KpiSettings())
    except (FlywheelError, ValueError) as exc:
        _fail(exc)
    rows = [[s.group[by], s.value, s.ci_low, s.ci_high, s.n, s.low_n] for s in (c.a, c.b)]
    rows.append(["B - A", c.difference, c.ci_low, c.ci_high, None, c.a.low_n or c.b.low_n])
    _emit([by, "value", "ci_low", "ci_high", "n", "low_n"], rows, fmt)
    if fmt == "table":
        typer.echo(f"p-value: {c.p_value if c.p_value is not None else 'n/a'}  ({c.method})")


def _maintainer():
    from feedback.kpi.maintainer import KpiMaintainer

    return KpiMaintainer(_catalog(), LakeSettings(), KpiSettings())


@kpi_app.command("rebuild")
def kpi_rebuild() -> None:
    """Recompute every window of the KPI tables from the whole lake (after a definition change)."""
    r = _maintainer().rebuild()
    typer.echo(f"rebuilt {r.days} days, {r.rows} rows in {r.seconds:.1f}s")


@kpi_app.command("refresh")
def kpi_refresh() -> None:
    """Recompute only the days touched since the last refresh."""
    r = _maintainer().refresh()
    typer.echo(f"refreshed {r.days} days, {r.rows} rows in {r.seconds:.2f}s" if r.days else "KPI tables are current")


@kpi_app.command("follow")
def kpi_follow(interval_s: Optional[float] = typer.Option(None, help="Seconds between refreshes.")) -> None:
    """Keep the KPI tables current until SIGTERM/SIGINT."""
    import signal

    m = _maintainer()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: m.stop())
    m.follow(interval_s)


@kpi_app.command("status")
def kpi_status() -> None:
    """Watermark, last refresh and source snapshots of each KPI table."""
    from feedback.kpi.maintainer import KpiMaintainer
    from feedback.kpi.tables import KPI_TABLE_SCHEMAS
    from feedback.lake.catalog import load_table_if_exists

    cat = _catalog()
    for name in KPI_TABLE_SCHEMAS:
        table = load_table_if_exists(cat, LakeSettings(), name)
        state = KpiMaintainer.state(table) if table is not None else {}
        typer.echo(f"{name}: watermark {state.get('watermark')}, refreshed {state.get('refreshed_at')}, "
                   f"sql v{state.get('sql_version')}, sources {state.get('sources')}")
