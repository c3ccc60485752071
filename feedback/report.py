"""What landed in the lake, per source, and the first KPIs (DuckDB SQL over the lake tables).

KPI formulas:
- thumbs-up rate = up / (up + down), per model (joined on the interaction the thumb is about);
- mean rating = mean of ``rating_normalized`` = (value − scale_min)/(scale_max − scale_min) ∈ [0, 1],
  over ratings of the criteria ``overall`` and ``quality`` (oasst1's other labels, e.g. spam or
  toxicity, are not satisfaction scores);
- preference win rate of a model = wins / (wins + losses) over its non-tie pairwise preferences
  against another model; ties are counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

LANDED_SQL = """
SELECT source, 'interaction' AS event_type, count(*) AS events FROM interactions GROUP BY ALL
UNION ALL SELECT source, 'feedback:' || kind, count(*) FROM feedback GROUP BY ALL
UNION ALL SELECT source, 'metric', count(*) FROM metrics GROUP BY ALL
ORDER BY source, event_type
"""

QUARANTINE_SQL = "SELECT reason_code, count(*) AS records, any_value(reason) AS example_reason FROM quarantine GROUP BY ALL ORDER BY records DESC"

MODEL_KPI_SQL = """
WITH thumbs AS (
    SELECT i.model,
           count(*) FILTER (WHERE f.thumb = 'up') AS up,
           count(*) FILTER (WHERE f.thumb = 'down') AS down
    FROM feedback f JOIN interactions i ON f.message_id = i.message_id
    WHERE f.kind = 'thumb' GROUP BY ALL
), ratings AS (
    SELECT i.model, avg(f.rating_normalized) AS mean_rating, count(*) AS ratings
    FROM feedback f JOIN interactions i ON f.message_id = i.message_id
    WHERE f.kind = 'rating' AND f.rating_name IN ('overall', 'quality') GROUP BY ALL
), pairs AS (
    SELECT c.model AS chosen_model, r.model AS rejected_model, f.preference_tie AS tie
    FROM feedback f JOIN interactions c ON f.chosen_message_id = c.message_id
                    JOIN interactions r ON f.rejected_message_id = r.message_id
    WHERE f.kind = 'preference' AND c.model <> r.model
), sides AS (
    SELECT chosen_model AS model, CASE WHEN tie THEN 'tie' ELSE 'win' END AS outcome FROM pairs
    UNION ALL
    SELECT rejected_model AS model, CASE WHEN tie THEN 'tie' ELSE 'loss' END AS outcome FROM pairs
), prefs AS (
    SELECT model, count(*) FILTER (WHERE outcome = 'win') AS wins,
           count(*) FILTER (WHERE outcome = 'loss') AS losses, count(*) FILTER (WHERE outcome = 'tie') AS ties
    FROM sides GROUP BY ALL
), models AS (SELECT model, count(*) AS interactions FROM interactions GROUP BY ALL)
SELECT m.model, m.interactions,
       t.up + t.down AS thumbs, t.up / nullif(t.up + t.down, 0) AS thumbs_up_rate,
       r.ratings, r.mean_rating,
       p.wins, p.losses, p.ties, p.wins / nullif(p.wins + p.losses, 0) AS win_rate
FROM models m LEFT JOIN thumbs t USING (model) LEFT JOIN ratings r USING (model) LEFT JOIN prefs p USING (model)
ORDER BY m.interactions DESC, m.model
"""


@dataclass
class LakeReport:
    """Query results as lists of tuples with their column names."""

    landed: tuple[list[str], list[tuple]]
    quarantine: tuple[list[str], list[tuple]]
    model_kpis: tuple[list[str], list[tuple]]


def _run(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple]]:
    cur = con.execute(sql)
    return [d[0] for d in cur.description], cur.fetchall()


def build_report(con: duckdb.DuckDBPyConnection) -> LakeReport:
    """Run the report queries on a connection from :func:`feedback.lake.read.lake_connection`."""
    return LakeReport(_run(con, LANDED_SQL), _run(con, QUARANTINE_SQL), _run(con, MODEL_KPI_SQL))


def format_table(columns: list[str], rows: list[tuple]) -> str:
    """Plain-text table (numbers to 3 decimals, empty cells for NULL)."""
    def cell(v: object) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def format_report(report: LakeReport) -> str:
    """The report as text: landed events, quarantine, KPIs per model."""
    parts = ["Events in the lake, by source and type", format_table(*report.landed), "",
             "Quarantined records, by reason", format_table(*report.quarantine) if report.quarantine[1] else "(none)", "",
             "First KPIs per model", format_table(*report.model_kpis)]
    return "\n".join(parts)
