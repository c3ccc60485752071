"""``flywheel topics build | assign | list [--confusion] | show <topic> | drift``.

Heavy imports (torch, sentence-transformers, scikit-learn) happen inside the commands, so
registering this app costs the main CLI nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Optional

import typer

from feedback.errors import FlywheelError
from feedback.cli_errors import fail as _fail

topics_app = typer.Typer(help="Topics of prompts (MiniLM + k-means + c-TF-IDF) joined to satisfaction; prompt drift (MMD).",
                         no_args_is_help=True)


def _catalog():
    from feedback.lake.catalog import open_catalog

    return open_catalog()


def _emit(columns: list[str], rows: list[list], fmt: str) -> None:
    if fmt == "json":
        typer.echo(json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=2))
    else:
        from feedback.report import format_table

        typer.echo(format_table(columns, [tuple(r) for r in rows]))


def _scope(app: list[str], source: list[str]):
    from feedback.topics.model import Scope

    return Scope(tuple(app), tuple(source))


def _pct(v) -> str:
    return "—" if v is None or v != v else f"{v:.1%}"


@topics_app.command("build")
def build_cmd(app: list[str] = typer.Option([], "--app", help="Only interactions of this app (repeatable)."),
              source: list[str] = typer.Option([], "--source", help="Only interactions of this source (repeatable)."),
              k: Optional[int] = typer.Option(None, help="Fixed number of topics (default: chosen by silhouette).")) -> None:
    """Fit a new topic model on all interactions (in scope) and assign every one of them."""
    from feedback.config import LakeSettings
    from feedback.topics.config import TopicsSettings
    from feedback.topics.model import build

    settings = TopicsSettings(**({"k": k} if k else {}))
    try:
        r = build(_catalog(), LakeSettings(), settings, _scope(app, source))
    except (FlywheelError, ValueError) as exc:
        _fail(exc)
    rate = f"{r.texts_per_s:,.0f} texts/s" if r.texts_per_s else "all cached"
    typer.echo(f"model {r.model_version}: {r.k} topics, {r.interactions:,} interactions assigned, "
               f"{r.distinct_texts:,} distinct prompts ({r.encoded:,} embedded in {r.encode_s:.1f} s, {rate}); "
               f"clustering {r.cluster_s:.1f} s; total {r.total_s:.1f} s")
    if r.silhouettes:
        typer.echo("silhouette by k: " + ", ".join(f"{kk}: {v:.3f}" for kk, v in r.silhouettes.items()))


@topics_app.command("assign")
def assign_cmd(app: list[str] = typer.Option([], "--app"), source: list[str] = typer.Option([], "--source")) -> None:
    """Assign only the interactions not yet assigned to the current model (nearest centroid)."""
    from feedback.config import LakeSettings
    from feedback.topics.model import assign

    try:
        r = assign(_catalog(), LakeSettings(), scope=_scope(app, source))
    except (FlywheelError, ValueError) as exc:
        _fail(exc)
    typer.echo(f"model {r.model_version}: {r.assigned:,} interactions assigned ({r.encoded:,} prompts embedded) in {r.seconds:.1f} s")


@topics_app.command("list")
def list_cmd(confusion: bool = typer.Option(False, "--confusion", help="Only the topics of confusion."),
             min_n: Optional[int] = typer.Option(None, help="Rated answers a topic of confusion needs (default FLYWHEEL_TOPICS_MIN_OBSERVATIONS)."),
             limit: int = typer.Option(50, help="Rows shown."),
             fmt: str = typer.Option("table", "--format", help="table | json")) -> None:
    """Topics of the current model: size, satisfaction (95 % Wilson interval) and n, largest first."""
    from feedback.topics import kpis, store
    from feedback.topics.config import TopicsSettings

    settings = TopicsSettings()
    min_n = min_n or settings.min_observations
    try:
        con = store.connect(_catalog())
        table = kpis.topic_table(con, min_n=min_n)
    except (FlywheelError, ValueError) as exc:
        _fail(exc)
    if table.empty:
        _fail(FlywheelError("no topic model yet: run `flywheel topics build`"))
    if confusion:
        table = kpis.confusion(table, min_n, limit)
    cols = ["topic_id", "label", "size", "n", "satisfaction", "ci_low", "ci_high"]
    rows = [[r.topic_id, r.label, r.size, r.n] + ([r.satisfaction, r.ci_low, r.ci_high] if fmt == "json" else
                                                  [_pct(r.satisfaction), _pct(r.ci_low), _pct(r.ci_high)])
            for r in table.head(limit).itertuples()]
    _emit(cols, rows, fmt)


@topics_app.command("show")
def show_cmd(topic: int, grain: str = typer.Option("week", help="day | week"),
             limit: int = typer.Option(10, help="Answers listed.")) -> None:
    """One topic: its terms, satisfaction trend and its latest answers."""
    from feedback.topics import kpis, store

    try:
        con = store.connect(_catalog())
        table = kpis.topic_table(con)
        row = table[table["topic_id"] == topic]
        if row.empty:
            raise FlywheelError(f"no topic {topic} in the current model")
        trend = kpis.trend(con, topic, grain)
        answers, total = kpis.answers(con, topic, limit=limit)
    except (FlywheelError, ValueError) as exc:
        _fail(exc)
    r = row.iloc[0]
    typer.echo(f"topic {topic}: {r.label}\nterms: {', '.join(r.terms)}\nsize {r['size']:,}; satisfaction "
               f"{_pct(r.satisfaction)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}] n={r.n:,}")
    _emit(["window_start", "size", "n", "satisfaction", "ci_low", "ci_high"],
          [[t.window_start, t.size, t.n, _pct(t.value), _pct(t.ci_low), _pct(t.ci_high)] for t in trend.itertuples()], "table")
    typer.echo(f"{total:,} answers; the newest {len(answers)}:")
    _emit(["conversation_id", "positive", "prompt"],
          [[a.conversation_id, a.positive if a.rated else "—", a.prompt_text[:80].replace("\n", " ")]
           for a in answers.itertuples()], "table")


@topics_app.command("drift")
def drift_cmd(a_from: Optional[datetime] = typer.Option(None, "--a-from", help="Window A start (UTC, inclusive)."),
              a_to: Optional[datetime] = typer.Option(None, "--a-to", help="Window A end (UTC, exclusive)."),
              b_from: Optional[datetime] = typer.Option(None, "--b-from"),
              b_to: Optional[datetime] = typer.Option(None, "--b-to"),
              fmt: str = typer.Option("table", "--format", help="table | json")) -> None:
    """MMD² (RBF kernel, median bandwidth) between the prompts of two time windows, permutation p-value."""
    from dataclasses import asdict
    from datetime import UTC

    from feedback.topics import store
    from feedback.topics.drift import drift_between

    def utc(d):
        return d.replace(tzinfo=UTC) if d is not None and d.tzinfo is None else d

    try:
        r = drift_between(store.connect(_catalog()), (utc(a_from), utc(a_to)), (utc(b_from), utc(b_to)))
    except (FlywheelError, ValueError) as exc:
        _fail(exc)
    if fmt == "json":
        typer.echo(json.dumps(asdict(r), indent=2))
    else:
        typer.echo(f"MMD² = {r.mmd2:.5f}, p = {r.p_value:.4f} ({r.permutations} permutations; σ = {r.sigma:.3f}; "
                   f"A: {r.m:,} of {r.m_total:,} prompts, B: {r.n:,} of {r.n_total:,})")
