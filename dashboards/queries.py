"""Every query a dashboard page runs, as plain functions of (lake, filters) → data.

KPI numbers (tiles, trends, comparisons, cost and latency) come from the KPI layer itself
(:func:`feedback.kpi.query.query` / :func:`~feedback.kpi.query.compare` over the KPI tables), so a
page shows exactly what ``flywheel kpi show`` says. What the KPI tables do not hold (rating
distributions, comments, the answers behind a slice, transcripts, ingestion health) is read from
the lake tables with the KPI layer's attribution: feedback counts with the answer it is about
(its dimensions, its event time).

Filters are bound as parameters; dimension names come from :data:`dashboards.filters.DIMENSIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pandas as pd

from dashboards.errors import DashboardError
from dashboards.filters import DIMENSIONS, GlobalFilters
from dashboards.lake import DashboardLake
from feedback.config import KpiSettings
from feedback.kpi import query as kpi_query
from feedback.kpi.query import KpiComparison, KpiRow

# --- KPIs (through the KPI layer) -------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One KPI over the range (``current``) and over the previous period of equal length
    (``previous``, None when the range is unbounded); ``delta`` = current − previous."""

    kpi: str
    current: KpiRow
    previous: KpiRow | None

    @property
    def delta(self) -> float | None:
        if self.previous is None or self.previous.value is None or self.current.value is None:
            return None
        return self.current.value - self.previous.value


def _total(lake: DashboardLake, name: str, flt, settings: KpiSettings) -> KpiRow:
    rows = kpi_query.query(lake.cursor(), name, "total", [], flt, settings)
    return rows[0] if rows else KpiRow(None, {}, None, None, None, 0, True)


def tiles(lake: DashboardLake, names: list[str], f: GlobalFilters, settings: KpiSettings) -> list[Tile]:
    """Each KPI in ``names`` over ``f`` and over ``f.previous()``."""
    prev = f.previous()
    return [Tile(n, _total(lake, n, f.kpi_filter(), settings),
                 _total(lake, n, prev.kpi_filter(), settings) if prev else None) for n in names]


def series(lake: DashboardLake, name: str, f: GlobalFilters, settings: KpiSettings, by: str | None = None,
           grain: str | None = None) -> pd.DataFrame:
    """KPI ``name`` per window (``grain``, default the filters' grain) and per ``by`` group.

    Columns: ``window_start`` (UTC), ``by`` (if given), ``value``, ``ci_low``, ``ci_high``, ``n``,
    ``low_n``; windows with no observations (n = 0) are left out."""
    rows = kpi_query.query(lake.cursor(), name, grain or f.grain, [by] if by else [], f.kpi_filter(), settings)
    return _frame(rows, [by] if by else [], window=True)


def by_group(lake: DashboardLake, name: str, f: GlobalFilters, settings: KpiSettings, by: str) -> pd.DataFrame:
    """KPI ``name`` over the whole range per value of dimension ``by`` (no window column)."""
    rows = kpi_query.query(lake.cursor(), name, "total", [by], f.kpi_filter(), settings)
    return _frame(rows, [by], window=False)


def _frame(rows: list[KpiRow], by: list[str], window: bool) -> pd.DataFrame:
    records = [({"window_start": r.window_start} if window else {}) | {b: r.group.get(b) for b in by}
               | {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n, "low_n": r.low_n}
               for r in rows if r.value is not None and (r.n is None or r.n > 0)]
    columns = (["window_start"] if window else []) + by + ["value", "ci_low", "ci_high", "n", "low_n"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    for b in by:  # feedback about no known answer has no dimensions
        frame[b] = frame[b].fillna("(none)")
    return frame


def compare(lake: DashboardLake, name: str, dimension: str, a: str, b: str, f: GlobalFilters,
            settings: KpiSettings) -> KpiComparison:
    """A vs B on KPI ``name`` (B − A, 95 % interval, p-value; see :func:`feedback.kpi.query.compare`).
    The global filter on ``dimension`` itself is dropped (A and B are the filter)."""
    flt = f.kpi_filter()
    flt.dims.pop(dimension, None)
    return kpi_query.compare(lake.cursor(), name, dimension, a, b, flt, settings)


def dimension_values(lake: DashboardLake) -> dict[str, list[str]]:
    """Distinct values of each dimension in the KPI tables (for the filter menus)."""
    cols = ", ".join(f"coalesce(list(DISTINCT {d}) FILTER (WHERE {d} IS NOT NULL), []) AS {d}" for d in DIMENSIONS)
    row = lake.df(f"SELECT {cols} FROM kpi_interactions WHERE grain = 'day'").iloc[0]
    return {d: sorted(row[d]) for d in DIMENSIONS}


# --- lake queries: shared WHERE clause ------------------------------------------------------------


def answer_where(f: GlobalFilters, alias: str = "i", time_expr: str | None = None) -> tuple[str, list]:
    """SQL conditions (joined by AND, at least ``TRUE``) and parameters restricting answers
    ``alias`` to the filters: event time in [start, end) and each dimension equal."""
    clauses, params = ["TRUE"], []
    time_col = time_expr or f"{alias}.occurred_at"
    if f.start is not None:
        clauses.append(f"{time_col} >= ?")
        params.append(f.start)
    if f.end is not None:
        clauses.append(f"{time_col} < ?")
        params.append(f.end)
    for dim, value in f.dims.items():
        if dim not in DIMENSIONS:
            raise DashboardError(f"cannot filter on {dim!r}")
        clauses.append(f"{alias}.{dim} = ?")
        params.append(value)
    return " AND ".join(clauses), params


# --- Feedback page ---------------------------------------------------------------------------------


def thumbs(lake: DashboardLake, f: GlobalFilters, settings: KpiSettings, by: str = "model") -> pd.DataFrame:
    """Thumbs up and down per ``by`` group, from the KPI tables (via ``thumbs_up_rate``'s n and value).
    Columns: ``by``, ``thumb`` (up|down), ``count``."""
    frame = by_group(lake, "thumbs_up_rate", f, settings, by)
    up = (frame["value"] * frame["n"]).round().astype(int)
    return pd.concat([pd.DataFrame({by: frame[by], "thumb": "up", "count": up}),
                      pd.DataFrame({by: frame[by], "thumb": "down", "count": frame["n"].astype(int) - up})],
                     ignore_index=True)


def rating_distribution(lake: DashboardLake, f: GlobalFilters) -> pd.DataFrame:
    """Ratings of the satisfaction criteria (KPI settings) per scale and value, attributed to their
    answers. Columns: ``scale`` (e.g. ``1–4``), ``value``, ``label``, ``ratings``."""
    where, params = answer_where(f, time_expr="coalesce(i.occurred_at, fb.occurred_at)")
    # unfiltered, the answer is not needed: skip the join
    join = "LEFT JOIN interactions i ON i.message_id = fb.message_id" if params else ""
    return lake.df(f"""
        SELECT printf('%g–%g', fb.rating_scale_min, fb.rating_scale_max) AS scale, fb.rating_value AS value,
               coalesce(any_value(fb.rating_label), printf('%g', any_value(fb.rating_value))) AS label, count(*) AS ratings
        FROM feedback fb {join}
        WHERE fb.kind = 'rating' AND fb.rating_name IN (SELECT name FROM rating_criteria) AND {where}
        GROUP BY ALL ORDER BY scale, value""", params)


def comments(lake: DashboardLake, f: GlobalFilters, search: str = "", rating_min: float = 0.0,
             rating_max: float = 1.0, include_unrated: bool = True, limit: int = 200) -> tuple[pd.DataFrame, int]:
    """The newest comments matching the filters, and how many match in all.

    ``search``: case-insensitive substring of the comment. Rating bounds apply to the rating the
    comment's author gave the same answer (normalised 0–1; authors are matched on ``author_id``);
    ``include_unrated`` keeps comments with no such rating. Columns: ``occurred_at``, ``app``,
    ``model``, ``prompt_version``, ``author_rating``, ``rating_label``, ``comment``,
    ``conversation_id``, ``message_id``."""
    where, params = answer_where(f, time_expr="coalesce(i.occurred_at, c.occurred_at)")
    rated = "(r.rating BETWEEN ? AND ?)" + (" OR r.rating IS NULL" if include_unrated else "")
    sql = f"""
        WITH r AS (
            SELECT message_id, author_id, avg(rating_normalized) AS rating, any_value(rating_label) AS rating_label
            FROM feedback WHERE kind = 'rating' AND author_id IS NOT NULL GROUP BY ALL
        ), m AS (
            SELECT c.occurred_at, i.app, i.model, i.prompt_version, r.rating AS author_rating, r.rating_label,
                   c.comment, c.conversation_id, c.message_id
            FROM feedback c LEFT JOIN interactions i ON i.message_id = c.message_id
                            LEFT JOIN r ON r.message_id = c.message_id AND r.author_id = c.author_id
            WHERE c.kind = 'comment' AND {where} AND ({rated}) AND (? = '' OR c.comment ILIKE '%' || ? || '%')
        )
        SELECT *, count(*) OVER () AS matching FROM m ORDER BY occurred_at DESC, message_id LIMIT ?"""
    frame = lake.df(sql, params + [rating_min, rating_max, search, search, limit])
    total = int(frame["matching"].iloc[0]) if len(frame) else 0
    return frame.drop(columns="matching"), total


@lru_cache(maxsize=1)
def _stop_words() -> tuple[str, ...]:
    from stop_words import get_stop_words

    return tuple(sorted(set(get_stop_words("en"))))


def complaint_terms(lake: DashboardLake, f: GlobalFilters, settings: KpiSettings, top: int = 20,
                    min_complaints: int = 3, min_lift: float = 1.2) -> pd.DataFrame:
    """Terms most frequent in complaints, with how much more often they occur there than in all comments.

    A complaint is a comment whose author rated the same answer below the positive threshold
    (``FLYWHEEL_KPI_POSITIVE_RATING_THRESHOLD``), or a comment on an answer with a thumbs-down.
    Terms: lower-cased words of 3+ letters, English stop words (``stop-words`` package) removed;
    counted once per comment. ``lift`` = (share of complaints with the term) / (share of all
    comments with it); only terms with lift ≥ ``min_lift`` and at least ``min_complaints`` complaints are kept.
    Columns: ``term``, ``complaints``, ``share``, ``lift``; ordered by ``complaints``."""
    where, params = answer_where(f, time_expr="coalesce(i.occurred_at, c.occurred_at)")
    cur = lake.cursor()
    cur.register("stop_words", pd.DataFrame({"word": list(_stop_words())}))
    sql = f"""
        WITH r AS (
            SELECT message_id, author_id, avg(rating_normalized) AS rating FROM feedback
            WHERE kind = 'rating' AND author_id IS NOT NULL GROUP BY ALL
        ), down AS (SELECT DISTINCT message_id FROM feedback WHERE kind = 'thumb' AND thumb = 'down'),
        c AS (
            SELECT c.event_id, c.comment,
                   (r.rating < ? OR d.message_id IS NOT NULL) AS complaint
            FROM feedback c LEFT JOIN interactions i ON i.message_id = c.message_id
                            LEFT JOIN r ON r.message_id = c.message_id AND r.author_id = c.author_id
                            LEFT JOIN down d ON d.message_id = c.message_id
            WHERE c.kind = 'comment' AND {where}
        ), words AS (
            SELECT DISTINCT event_id, coalesce(complaint, false) AS complaint, word
            FROM (SELECT event_id, complaint, unnest(regexp_extract_all(lower(comment), '[a-z]{{3,}}')) AS word FROM c)
            WHERE word NOT IN (SELECT word FROM stop_words)
        ), totals AS (
            SELECT count(*) AS all_comments, count(*) FILTER (WHERE complaint) AS all_complaints FROM c
        )
        SELECT word AS term, count(*) FILTER (WHERE complaint) AS complaints,
               count(*) FILTER (WHERE complaint) / any_value(t.all_complaints) AS share,
               (count(*) FILTER (WHERE complaint) / any_value(t.all_complaints))
                 / (count(*) / any_value(t.all_comments)) AS lift
        FROM words, totals t GROUP BY word
        HAVING count(*) FILTER (WHERE complaint) >= ? AND lift >= ?
        ORDER BY complaints DESC, lift DESC, term LIMIT ?"""
    try:
        return cur.execute(sql, [settings.positive_rating_threshold] + params + [min_complaints, min_lift, top]).df()
    finally:
        cur.close()


# --- Conversations page ----------------------------------------------------------------------------

SIGNALS: dict[str, tuple[str, str]] = {
    "all": ("All answers", "TRUE"),
    "feedback": ("With any feedback", "fb.events > 0 OR p.pairs > 0"),
    "thumb": ("With a thumb", "fb.thumbs_up + fb.thumbs_down > 0"),
    "thumb_down": ("With a thumbs-down", "fb.thumbs_down > 0"),
    "thumb_up": ("With a thumbs-up", "fb.thumbs_up > 0"),
    "rating": ("With a rating", "fb.ratings > 0"),
    "low_rating": ("Rated below the positive threshold", "fb.rating_mean < ?"),
    "comment": ("With a comment", "fb.comments > 0"),
    "correction": ("Corrected by a user", "fb.corrections > 0"),
    "preference": ("Compared in a preference", "p.pairs > 0"),
    "preference_loss": ("Rejected in a preference", "p.losses > 0"),
    "no_feedback": ("Without feedback", "coalesce(fb.events, 0) = 0 AND coalesce(p.pairs, 0) = 0"),
}
"""Drill-down conditions on an answer's feedback: key → (label, SQL over the per-answer summary)."""

KPI_SIGNALS: dict[str, tuple[str, str]] = {
    "thumbs_up_rate": ("thumb", "thumb_down"), "thumb_coverage": ("all", "thumb"),
    "mean_rating": ("rating", "low_rating"), "rating_coverage": ("all", "rating"),
    "negative_comment_share": ("comment", "comment"), "comment_coverage": ("all", "comment"),
    "win_rate": ("preference", "preference_loss"), "preference_coverage": ("all", "preference"),
    "correction_coverage": ("all", "correction"), "feedback_coverage": ("all", "no_feedback"),
    "positive_rate": ("all", "thumb_down"),
}
"""For a KPI: (the answers its n counts, the answers behind a bad value)."""


def answers(lake: DashboardLake, f: GlobalFilters, settings: KpiSettings, signal: str = "all",
            day: str | None = None, limit: int = 200) -> tuple[pd.DataFrame, int]:
    """The newest answers in the filters (optionally one UTC ``day``, ``YYYY-MM-DD``) whose feedback
    meets ``signal`` (:data:`SIGNALS`), and how many match in all.

    Columns: ``occurred_at``, ``conversation_id``, ``message_id``, ``app``, ``model``,
    ``prompt_version``, ``question`` (last user turn), ``response``, ``thumbs_up``, ``thumbs_down``,
    ``rating_mean`` (0–1, satisfaction criteria), ``comments``, ``corrections``, ``wins``, ``losses``.
    Raises DashboardError for an unknown signal."""
    if signal not in SIGNALS:
        raise DashboardError(f"unknown signal {signal!r}; one of {', '.join(SIGNALS)}")
    where, params = answer_where(f)
    condition = SIGNALS[signal][1]
    cond_params = [settings.positive_rating_threshold] if "?" in condition else []
    day_clause = ""
    if day:  # a range on occurred_at, so the scan can prune day partitions
        day_clause = " AND i.occurred_at >= CAST(? AS DATE) AND i.occurred_at < CAST(? AS DATE) + INTERVAL 1 DAY"
        params = params + [day, day]
    # Narrow rows first (prompt and response only for the page). With no condition on feedback,
    # the page is cut before the feedback summaries, which are then computed for its rows alone.
    top_first = signal == "all"
    scope = "page" if top_first else "sel"
    sql = f"""
        WITH sel AS (
            SELECT i.occurred_at, i.conversation_id, i.message_id, i.app, i.model, i.prompt_version
            FROM interactions i WHERE {where}{day_clause}
        ),{" page AS (SELECT * FROM sel ORDER BY occurred_at DESC, message_id LIMIT ?)," if top_first else ""}
        fb AS (
            SELECT f.message_id, count(*) AS events,
                   count(*) FILTER (WHERE thumb = 'up') AS thumbs_up, count(*) FILTER (WHERE thumb = 'down') AS thumbs_down,
                   count(*) FILTER (WHERE kind = 'rating' AND rating_name IN (SELECT name FROM rating_criteria)) AS ratings,
                   avg(rating_normalized) FILTER (WHERE kind = 'rating' AND rating_name IN (SELECT name FROM rating_criteria)) AS rating_mean,
                   count(*) FILTER (WHERE kind = 'comment') AS comments, count(*) FILTER (WHERE kind = 'correction') AS corrections
            FROM feedback f SEMI JOIN {scope} s ON s.message_id = f.message_id
            WHERE f.kind <> 'preference' GROUP BY f.message_id
        ), p AS (
            SELECT message_id, count(*) AS pairs, count(*) FILTER (WHERE NOT tie AND side = 'chosen') AS wins,
                   count(*) FILTER (WHERE NOT tie AND side = 'rejected') AS losses
            FROM (SELECT chosen_message_id AS message_id, coalesce(preference_tie, false) AS tie, 'chosen' AS side
                  FROM feedback WHERE kind = 'preference'
                  UNION ALL
                  SELECT rejected_message_id, coalesce(preference_tie, false), 'rejected' FROM feedback WHERE kind = 'preference') x
            SEMI JOIN {scope} s ON s.message_id = x.message_id GROUP BY message_id
        ), m AS (
            SELECT i.*, coalesce(fb.thumbs_up, 0) AS thumbs_up, coalesce(fb.thumbs_down, 0) AS thumbs_down,
                   fb.rating_mean, coalesce(fb.comments, 0) AS comments, coalesce(fb.corrections, 0) AS corrections,
                   coalesce(p.wins, 0) AS wins, coalesce(p.losses, 0) AS losses
            FROM {scope} i LEFT JOIN fb ON fb.message_id = i.message_id LEFT JOIN p ON p.message_id = i.message_id
            WHERE {condition}
        ), top AS (SELECT * FROM m ORDER BY occurred_at DESC, message_id LIMIT ?)
        SELECT top.occurred_at, top.conversation_id, top.message_id, top.app, top.model, top.prompt_version,
               (list_filter(t.prompt, x -> x.role = 'user')[-1]).content AS question, t.response,
               top.thumbs_up, top.thumbs_down, top.rating_mean, top.comments, top.corrections, top.wins, top.losses,
               (SELECT count(*) FROM {"sel" if top_first else "m"}) AS matching
        FROM top JOIN interactions t ON t.message_id = top.message_id AND t.occurred_at = top.occurred_at
        ORDER BY top.occurred_at DESC, top.message_id"""
    frame = lake.df(sql, params + ([limit] if top_first else []) + cond_params + [limit])
    total = int(frame["matching"].iloc[0]) if len(frame) else 0
    return frame.drop(columns="matching"), total


@dataclass
class Transcript:
    """One conversation: its answers in event-time order (with their prompts) and every feedback
    event on it (on one of its messages, as a side of a preference, or on the whole conversation)."""

    conversation_id: str
    interactions: pd.DataFrame
    feedback: pd.DataFrame


def transcript(lake: DashboardLake, conversation_id: str) -> Transcript:
    """The conversation ``conversation_id`` (empty frames when unknown)."""
    interactions = lake.df("""
        SELECT occurred_at, message_id, parent_id, model, prompt_version, app, user_id, prompt, response,
               tokens_in, tokens_out, latency_ms, cost_usd, status, source
        FROM interactions WHERE conversation_id = ? ORDER BY occurred_at, message_id""", [conversation_id])
    ids = interactions["message_id"].tolist()
    # Step 1 finds the feedback events with narrow columns in one scan (list_contains, not IN-subquery
    # joins); step 2 reads their full rows, bounded by their event times so partitions are pruned.
    keys = lake.df("""
        SELECT event_id, occurred_at FROM feedback
        WHERE conversation_id = ? OR list_contains(?, message_id) OR list_contains(?, chosen_message_id)
              OR list_contains(?, rejected_message_id)""", [conversation_id, ids, ids, ids])
    bounds = [keys["occurred_at"].min(), keys["occurred_at"].max()] if len(keys) else [None, None]
    feedback = lake.df("""
        SELECT occurred_at, kind, feedback_source, author_id, message_id, thumb, rating_value, rating_scale_min,
               rating_scale_max, rating_name, rating_label, category, comment, correction, chosen_message_id,
               rejected_message_id, preference_strength, preference_tie
        FROM feedback WHERE occurred_at >= ? AND occurred_at <= ? AND list_contains(?, event_id)
        ORDER BY occurred_at, kind, event_id""", bounds + [keys["event_id"].tolist()])
    return Transcript(conversation_id, interactions, feedback)


# --- Cost & latency page ---------------------------------------------------------------------------


def token_provenance(lake: DashboardLake, f: GlobalFilters) -> dict[str, int]:
    """How many answers in the filters report tokens, latency and cost, and how many token counts
    were derived by a tokenizer rather than reported (``tokens_derived``)."""
    where, params = answer_where(f)
    row = lake.df(f"""
        SELECT count(*) AS answers, count(tokens_out) AS with_tokens,
               count(*) FILTER (WHERE tokens_derived) AS tokens_derived,
               count(latency_ms) AS with_latency, count(cost_usd) AS with_cost
        FROM interactions i WHERE {where}""", params).iloc[0]
    return {k: int(v) for k, v in row.items()}


# --- Data health page ------------------------------------------------------------------------------


def events_per_topic(lake: DashboardLake) -> pd.DataFrame:
    """Events in the lake per Kafka topic. Columns: ``topic``, ``events``, ``first_ingested``,
    ``last_ingested``, ``last_offset_sum`` (sum over partitions of the highest offset stored)."""
    return lake.df("""
        WITH e AS (
            SELECT kafka_topic, kafka_partition, kafka_offset, ingested_at FROM interactions
            UNION ALL SELECT kafka_topic, kafka_partition, kafka_offset, ingested_at FROM feedback
            UNION ALL SELECT kafka_topic, kafka_partition, kafka_offset, ingested_at FROM metrics
        )
        SELECT kafka_topic AS topic, count(*) AS events, min(ingested_at) AS first_ingested,
               max(ingested_at) AS last_ingested
        FROM e GROUP BY ALL ORDER BY topic""")


def quarantine_by_reason(lake: DashboardLake, example_bytes: int = 300) -> pd.DataFrame:
    """Quarantined records per reason code with the newest example. Columns: ``reason_code``,
    ``records``, ``last_quarantined``, ``example_reason``, ``example_topic``, ``example`` (the first
    ``example_bytes`` bytes of the record, decoded as UTF-8 with replacement characters)."""
    frame = lake.df("""
        SELECT reason_code, count(*) AS records, max(quarantined_at) AS last_quarantined,
               arg_max(reason, quarantined_at) AS example_reason, arg_max(kafka_topic, quarantined_at) AS example_topic,
               arg_max(raw, quarantined_at) AS example_raw
        FROM quarantine GROUP BY ALL ORDER BY records DESC, reason_code""")
    frame["example"] = [bytes(b[:example_bytes]).decode("utf-8", "replace") if b is not None else None
                        for b in frame.pop("example_raw")]
    return frame


def ingestion_rate(lake: DashboardLake, minutes: int = 60) -> pd.DataFrame:
    """Events landed per minute (by ``ingested_at``) over the last ``minutes`` of ingestion (ending
    at the latest ``ingested_at``). Columns: ``minute``, ``table``, ``events``."""
    latest = lake.df("""SELECT greatest((SELECT max(ingested_at) FROM interactions), (SELECT max(ingested_at) FROM feedback),
                                        (SELECT max(ingested_at) FROM metrics)) AS t""")["t"].iloc[0]
    if pd.isna(latest):
        return pd.DataFrame(columns=["minute", "table", "events"])
    since = latest - pd.Timedelta(minutes=minutes)
    return lake.df("""
        WITH e AS (
            SELECT 'interactions' AS "table", ingested_at FROM interactions WHERE ingested_at > ?
            UNION ALL SELECT 'feedback', ingested_at FROM feedback WHERE ingested_at > ?
            UNION ALL SELECT 'metrics', ingested_at FROM metrics WHERE ingested_at > ?
        )
        SELECT date_trunc('minute', ingested_at) AS minute, "table", count(*) AS events
        FROM e GROUP BY ALL ORDER BY minute, "table" """, [since] * 3)
