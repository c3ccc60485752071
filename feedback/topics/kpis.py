"""Topics joined to the KPIs: size, satisfaction with a 95 % interval, trend, topics of confusion.

**Satisfaction of an answer** is the KPI layer's "positively rated" (``feedback/kpi/sql/
kpi_interactions.sql``, KPI ``positive_rate``): a thumbs-up, or a satisfaction rating (normalised
0–1, rating name in ``FLYWHEEL_KPI_RATING_CRITERIA``) ≥ ``FLYWHEEL_KPI_POSITIVE_RATING_THRESHOLD``,
and no thumbs-down. Unlike ``positive_rate`` (whose denominator is every answer), a topic's
satisfaction is taken over the answers that **have a satisfaction signal** (a thumb, or a rating
on a criterion), so answers nobody judged (e.g. HH-RLHF's, which only have preferences) do not count
as unsatisfied: ``satisfaction = positive / n`` with ``n`` = answers with a signal, and its Wilson
95 % interval from :func:`feedback.kpi.stats.proportion`. ``low_n`` marks ``n < min_observations``.

All functions take a connection from :func:`feedback.topics.store.connect` (or any connection with
views ``interactions``, ``feedback``, ``current_topics``, ``current_assignments`` and tables
``rating_criteria``, ``params``) and an optional SQL condition ``where`` on interactions ``i``
with its parameters (e.g. the dashboard's filters).
"""

from __future__ import annotations

import duckdb
import pandas as pd

from feedback.kpi.stats import proportion
from feedback.topics.embed import prompt_text_sql

SIGNAL_SQL = """
    SELECT f.message_id,
           count(*) FILTER (WHERE f.thumb = 'up') AS ups,
           count(*) FILTER (WHERE f.thumb = 'down') AS downs,
           max(f.rating_normalized) FILTER (WHERE f.kind = 'rating' AND f.rating_name IN (SELECT name FROM rating_criteria)) AS best_rating,
           bool_or(f.kind = 'thumb' OR f.thumb IS NOT NULL
                   OR (f.kind = 'rating' AND f.rating_name IN (SELECT name FROM rating_criteria))) AS rated
    FROM feedback f WHERE f.message_id IS NOT NULL GROUP BY f.message_id"""

ANSWERS_SQL = f"""
    WITH fb AS ({SIGNAL_SQL}),
    i AS (SELECT * FROM interactions QUALIFY row_number() OVER (PARTITION BY message_id ORDER BY occurred_at) = 1)
    SELECT a.topic_id, a.distance, i.message_id, i.conversation_id, i.occurred_at, i.model, i.app, i.source,
           {prompt_text_sql('i')} AS prompt_text, i.response,
           coalesce(fb.rated, false) AS rated,
           coalesce(fb.rated, false) AND coalesce(fb.downs, 0) = 0
               AND (coalesce(fb.ups, 0) > 0 OR coalesce(fb.best_rating >= (SELECT positive_rating_threshold FROM params), false))
               AS positive
    FROM current_assignments a
    JOIN i ON i.message_id = a.message_id
    LEFT JOIN fb ON fb.message_id = a.message_id"""
"""One row per assigned answer of the current model: its topic, prompt text, and satisfaction signal."""


def _with_interval(frame: pd.DataFrame, min_n: int) -> pd.DataFrame:
    est = [proportion(int(p), int(n)) for p, n in zip(frame["positive"], frame["n"])]
    frame["satisfaction"] = [e.value for e in est]
    frame["ci_low"] = [e.ci_low for e in est]
    frame["ci_high"] = [e.ci_high for e in est]
    frame["low_n"] = frame["n"] < min_n
    return frame


def topic_table(con: duckdb.DuckDBPyConnection, where: str = "TRUE", params: list | None = None,
                min_n: int = 30) -> pd.DataFrame:
    """One row per topic of the current model, largest first: ``topic_id``, ``label``, ``terms``,
    ``size`` (answers assigned, within ``where``), ``n`` (answers with a satisfaction signal),
    ``positive``, ``satisfaction`` (fraction) with ``ci_low``/``ci_high`` (Wilson 95 %; None when
    n = 0), ``low_n``. Empty when no model exists."""
    frame = con.execute(f"""
        WITH a AS ({ANSWERS_SQL} WHERE {where})
        SELECT t.topic_id, t.label, t.terms,
               count(a.message_id) AS size,
               count(*) FILTER (WHERE a.rated) AS n,
               count(*) FILTER (WHERE a.positive) AS positive
        FROM current_topics t LEFT JOIN a ON a.topic_id = t.topic_id
        GROUP BY ALL ORDER BY size DESC, t.topic_id""", params or []).df()
    frame["terms"] = frame["terms"].map(list)
    return _with_interval(frame, min_n)


def confusion(table: pd.DataFrame, min_n: int = 30, limit: int = 10) -> pd.DataFrame:
    """"Topics of confusion": topics with ``n >= min_n`` rated answers, ranked by the **upper bound**
    of the satisfaction interval, lowest first (ties: lower satisfaction, then larger n). Ranking by
    the upper bound orders topics by how good satisfaction can plausibly be (95 %), so a topic ranks
    as confusing only when the data rule out it being fine — a small topic with one bad week does
    not outrank a large, consistently poor one. ``table``: from :func:`topic_table`."""
    keep = table[(table["n"] >= min_n) & table["ci_high"].notna()]
    return keep.sort_values(["ci_high", "satisfaction", "n"], ascending=[True, True, False]).head(limit).reset_index(drop=True)


def trend(con: duckdb.DuckDBPyConnection, topic_id: int, grain: str = "week", where: str = "TRUE",
          params: list | None = None, min_n: int = 30) -> pd.DataFrame:
    """Satisfaction of one topic per UTC ``grain`` (``day`` or ``week``, weeks start on Monday):
    ``window_start``, ``size``, ``n``, ``positive``, ``value`` (= satisfaction), ``ci_low``,
    ``ci_high``, ``low_n`` — the shape of :func:`dashboards.charts.trend`. Raises ValueError on
    another grain."""
    if grain not in ("day", "week"):
        raise ValueError(f"grain must be day or week, got {grain!r}")
    frame = con.execute(f"""
        WITH a AS ({ANSWERS_SQL} WHERE {where})
        SELECT date_trunc('{grain}', occurred_at) AS window_start, count(*) AS size,
               count(*) FILTER (WHERE rated) AS n, count(*) FILTER (WHERE positive) AS positive
        FROM a WHERE topic_id = ? GROUP BY 1 ORDER BY 1""", (params or []) + [int(topic_id)]).df()
    frame = _with_interval(frame, min_n)
    return frame.rename(columns={"satisfaction": "value"})


def answers(con: duckdb.DuckDBPyConnection, topic_id: int, where: str = "TRUE", params: list | None = None,
            limit: int = 200, only: str = "all") -> tuple[pd.DataFrame, int]:
    """The answers of one topic (newest first, at most ``limit``) and how many there are: columns
    ``conversation_id``, ``message_id``, ``occurred_at``, ``model``, ``app``, ``prompt_text``,
    ``response``, ``rated``, ``positive``, ``distance``. ``only``: ``all``, ``unsatisfied`` (rated
    and not positive) or ``rated``. Raises ValueError on another ``only``."""
    cond = {"all": "TRUE", "rated": "rated", "unsatisfied": "rated AND NOT positive"}.get(only)
    if cond is None:
        raise ValueError(f"only must be all, rated or unsatisfied, got {only!r}")
    base = f"WITH a AS ({ANSWERS_SQL} WHERE {where}) SELECT * FROM a WHERE topic_id = ? AND {cond}"
    args = (params or []) + [int(topic_id)]
    total = con.execute(f"SELECT count(*) FROM ({base})", args).fetchone()[0]
    frame = con.execute(f"""SELECT conversation_id, message_id, occurred_at, model, app, prompt_text, response,
                                   rated, positive, distance FROM ({base})
                            ORDER BY occurred_at DESC, message_id LIMIT {int(limit)}""", args).df()
    return frame, int(total)
