"""Selection: candidate rows of each format, read with DuckDB from the lake at pinned snapshots.

The lake tables are read at pinned snapshots, so a build names the exact snapshots it read and the same
snapshots give the same rows: with ``iceberg_scan(..., snapshot_from_id := id)``, and, for the ``sft`` and
``kto`` selections, as the snapshot's Parquet data files (:data:`FILES`). A scan of one column of the
8 M-conversation bench lake's interactions (12,100 files) peaks at 337 MB of RSS with 46 MB of glibc heap in
use through the files, against 448 and 210 MB through ``iceberg_scan`` (242 against 260 MB on the 247k lake's
422 files). Every candidate carries its lineage (conversation, message ids, source, app, model, prompt
version, origin) and the flags the cleaning steps need (``unsafe``); cleaning itself is
:mod:`finetune.build`'s.

Where the rows come from (per the issue):

| format | rows |
|---|---|
| ``sft`` | answers rated ≥ ``min_rating`` (mean over ``rating_criteria``), with more thumbs up than down, or chosen in a non-tie preference; a user's latest correction replaces the answer |
| ``preference`` | explicit non-tie preferences (incl. oasst1 sibling ranks), thumbs-up vs thumbs-down answers to the same prompt, correction ≻ original; pairs judged both ways are dropped as conflicting |
| ``kto`` | answers with thumbs: ``label`` true when ups outnumber downs, false when downs do (ties dropped) |
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import duckdb
from pyiceberg.catalog import Catalog

from feedback.config import LakeSettings
from feedback.lake import duck
from feedback.lake.catalog import load_table_if_exists
from finetune.errors import DatasetError
from finetune.spec import DatasetSpec, Selection

SOURCE_TABLES = ("interactions", "feedback")


@dataclass(frozen=True)
class LakeSnapshot:
    """The snapshot id read of each source table (the build's lineage)."""

    interactions: int
    feedback: int

    def as_dict(self) -> dict[str, int]:
        return {"interactions": self.interactions, "feedback": self.feedback}


def _source_tables(catalog: Catalog, lake: LakeSettings, snapshot: LakeSnapshot | None) -> dict:
    """``{name: (table, snapshot id)}`` of the source tables at ``snapshot`` (default: current ones).
    Raises DatasetError when a table has no data or the snapshot is unknown."""
    out = {}
    for name in SOURCE_TABLES:
        table = load_table_if_exists(catalog, lake, name)
        if table is None or table.current_snapshot() is None:
            raise DatasetError(f"the lake table {name} has no data yet: replay or ingest events first")
        wanted = getattr(snapshot, name) if snapshot else table.current_snapshot().snapshot_id
        if table.snapshot_by_id(wanted) is None:
            raise DatasetError(f"{name} has no snapshot {wanted} (expired, or another lake)")
        out[name] = (table, int(wanted))
    return out


def resolve_snapshot(catalog: Catalog, lake: LakeSettings | None = None,
                     snapshot: LakeSnapshot | None = None) -> LakeSnapshot:
    """The snapshot ids a build reads (``snapshot`` checked to exist, default the current ones), without
    opening DuckDB. Raises DatasetError as :func:`open_lake`."""
    tables = _source_tables(catalog, lake or LakeSettings(), snapshot)
    return LakeSnapshot(**{name: wanted for name, (_, wanted) in tables.items()})


FILES = "_files"
"""Suffix of the second view :func:`open_lake` makes of each source table: the same snapshot's rows read as its
Parquet data files (:func:`feedback.lake.duck.snapshot_source`). DuckDB holds ~14 KB a file while an
``iceberg_scan`` runs, and little through these; but it cannot estimate their rows without reading every footer
(it assumes 1,000,000), so only queries whose join order does not hang on estimates read them: the ``sft`` and
``kto`` answers' keys (:func:`_answer_tables`) and candidates, which :func:`candidate_query` returns with the
answers as the join's build side (see :data:`FIXED_JOIN_ORDER`)."""

FIXED_JOIN_ORDER = "SET disabled_optimizers = 'join_order,build_side_probe_side'"
"""DuckDB setting under which a query's hash joins build on their right side, as written. The ``sft`` and ``kto``
candidate queries join the lake's answers (left, with their texts) to the answers' keys (right); reading the
lake through :data:`FILES` views, DuckDB estimated ~200,000 answers on the left against 1.7 M keys on the right at
8 M conversations and built its hash table on the texts (out of memory under 512 MB)."""


def open_lake(catalog: Catalog, lake: LakeSettings | None = None, snapshot: LakeSnapshot | None = None,
              memory_limit: str | None = None, threads: int | None = None, files: bool = True
              ) -> tuple[duckdb.DuckDBPyConnection, LakeSnapshot]:
    """DuckDB with views ``interactions`` and ``feedback`` at ``snapshot`` (default: the current ones), and, when
    ``files``, the same rows as ``interactions_files`` and ``feedback_files`` (:data:`FILES`, which the ``sft``
    and ``kto`` queries read; listing the data files took 0.34 s and ~60 MB for the 8 M-conversation bench
    lake's 12,100 files, so callers of the other queries pass False). ``memory_limit`` (e.g. ``"1GB"``, DuckDB
    spills beyond it) and ``threads`` cap the connection. Raises DatasetError when a table has no data or the
    snapshot is unknown."""
    tables = _source_tables(catalog, lake or LakeSettings(), snapshot)
    con = duck.connect(memory_limit, threads)
    for name, (table, wanted) in tables.items():
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM iceberg_scan('{duck.local_path(table.metadata_location)}', "
                    f"snapshot_from_id := {wanted})")
        if files:
            con.execute(f"CREATE VIEW {name}{FILES} AS SELECT * FROM {duck.snapshot_source(con, table, wanted)}")
    return con, LakeSnapshot(**{name: wanted for name, (_, wanted) in tables.items()})


def _in(column: str, values: list[str], params: list, negate: bool = False) -> str:
    if not values:
        return "TRUE"
    params.extend(values)
    return f"{column} {'NOT ' if negate else ''}IN ({', '.join('?' for _ in values)})"


def answer_filter(sel: Selection, params: list, alias: str = "i") -> str:
    """SQL condition on answers ``alias`` for the selection (time, project, app, model, prompt
    version, tags); appends the bound values to ``params``."""
    clauses = []
    if sel.since:
        clauses.append(f"{alias}.occurred_at >= CAST(? AS DATE)")
        params.append(sel.since.isoformat())
    if sel.until:
        clauses.append(f"{alias}.occurred_at < CAST(? AS DATE) + INTERVAL 1 DAY")
        params.append(sel.until.isoformat())
    clauses += [_in(f"{alias}.project", sel.projects, params), _in(f"{alias}.app", sel.apps, params),
                _in(f"{alias}.app", sel.exclude_apps, params, negate=True), _in(f"{alias}.model", sel.models, params),
                _in(f"{alias}.prompt_version", sel.prompt_versions, params)]
    for tag in sel.tags:
        clauses.append(f"list_contains({alias}.tags, ?)")
        params.append(tag)
    return " AND ".join(c for c in clauses if c != "TRUE") or "TRUE"


def _part(column: str, partition: tuple[int, int] | None) -> str:
    """SQL condition: the answer key ``column`` (:data:`ANSWER_KEY`'s value) falls in hash partition
    ``(k, of)`` (``TRUE`` for None)."""
    return "TRUE" if partition is None else f"hash({column}) % {int(partition[1])} = {int(partition[0])}"


def _fb_view(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, source: str = "feedback") -> str:
    """The temp view ``fb``: the feedback of the selection's sources, read from view ``source``. Returns its
    definition."""
    sources = [f"'{s.replace(chr(39), chr(39) * 2)}'" for s in spec.selection.feedback_sources]
    # literals, not bound values: DuckDB does not prepare a CREATE VIEW with parameters
    src = f"feedback_source IN ({', '.join(sources)})" if sources else "TRUE"
    con.execute(fb := f"CREATE OR REPLACE TEMP VIEW fb AS SELECT * FROM {source} WHERE {src}")
    return fb


def _per_answer_view(con: duckdb.DuckDBPyConnection, spec: DatasetSpec) -> None:
    """The temp views ``fb`` (:func:`_fb_view`) and ``per_answer``, which the preference query joins: one row
    per message id, with :func:`_aggregates` and the latest correction."""
    _fb_view(con, spec)
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW per_answer AS
        SELECT message_id, {_aggregates(spec)},
               arg_max(correction, occurred_at) FILTER (WHERE kind = 'correction') AS correction
        FROM fb WHERE message_id IS NOT NULL GROUP BY message_id""")


def _aggregates(spec: DatasetSpec) -> str:
    """SQL select list of the per-answer feedback aggregates over ``fb`` grouped by answer: ``rating`` (mean
    over ``rating_criteria``), ``ratings``, ``ups``, ``downs`` and ``unsafe`` (a safety label's mean at or
    above its threshold)."""
    crit = ", ".join(f"'{c.replace(chr(39), '')}'" for c in spec.selection.rating_criteria) or "NULL"
    safety = spec.cleaning.safety_labels
    label = "avg(rating_normalized) FILTER (WHERE kind = 'rating' AND rating_name = '{}')"
    unsafe = " OR ".join(f"coalesce({label.format(n.replace(chr(39), ''))} >= {float(v)}, false)"
                         for n, v in safety.items()) or "false"
    return f"""avg(rating_normalized) FILTER (WHERE kind = 'rating' AND rating_name IN ({crit})) AS rating,
               count(*) FILTER (WHERE kind = 'rating' AND rating_name IN ({crit})) AS ratings,
               count(*) FILTER (WHERE kind = 'thumb' AND thumb = 'up') AS ups,
               count(*) FILTER (WHERE kind = 'thumb' AND thumb = 'down') AS downs,
               ({unsafe}) AS unsafe"""


ANSWER_KEY = "md5_number({})"
"""SQL of an answer's join key from its message id: the 128-bit MD5 of the id as one integer (16 bytes in
DuckDB's hash tables, against 16 plus the id's length for the text; two of 10 M distinct ids share one with
probability about 10**-25). Compact keys are what lets one query hold ~4 M answers (:data:`ANSWER_BYTES`)."""

_FLAGS = ("rating", "thumbs", "preference", "correction")
"""The reasons an answer qualifies for ``sft``, as the bits (1, 2, 4, 8) of its ``flags``; ``origin`` names
the set ones in this order."""


def _answer_tables(con: duckdb.DuckDBPyConnection, spec: DatasetSpec) -> tuple[str, str | None]:
    """Create (once per connection and selection) the temp tables the ``sft`` or ``kto`` query joins the
    answers to, keyed by :data:`ANSWER_KEY` only (no text): for ``sft`` the qualifying answers' ``flags`` (see
    :data:`_FLAGS`) and ``unsafe``, and their latest corrections apart; for ``kto`` the answers with thumbs,
    their ``ups``, ``downs`` and ``unsafe``. Returns the two table names (corrections None for ``kto``).
    Aggregating before the join, instead of inside it, keeps the join's hash table at ~80 bytes an answer
    (:data:`ANSWER_BYTES`)."""
    sel = spec.selection
    missing = {f"{name}{FILES}" for name in SOURCE_TABLES} - {
        row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    if missing:
        raise ValueError(f"the {spec.format} query reads {sorted(missing)}: open the lake with files=True")
    fb = _fb_view(con, spec, "feedback" + FILES)
    key = ANSWER_KEY.format("message_id")
    per_key = f"SELECT {key} AS k, {_aggregates(spec)} FROM fb WHERE message_id IS NOT NULL GROUP BY 1"

    def table(kind: str, sql: str) -> str:
        # named by fb's definition and its own SQL: the same selection on this connection reuses it
        digest = hashlib.sha256("\n".join((fb, sql)).encode()).hexdigest()[:16]
        name = f"{kind}_{digest}"
        con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} AS {sql}")
        return name

    if spec.format == "sft":
        corrections = table("corrections", f"""
            SELECT {key} AS k, arg_max(correction, occurred_at) AS correction FROM fb
            WHERE kind = 'correction' AND message_id IS NOT NULL GROUP BY 1""")
        bits = [f"CASE WHEN a.rating >= {float(sel.min_rating)} THEN 1 ELSE 0 END"]
        if sel.use_thumbs:
            bits.append("CASE WHEN a.ups > a.downs THEN 2 ELSE 0 END")
        if sel.use_preferences:
            bits.append("CASE WHEN w.wins > 0 THEN 4 ELSE 0 END")
        if sel.use_corrections:
            bits.append("CASE WHEN c.correction IS NOT NULL THEN 8 ELSE 0 END")
        answers = table("answers", f"""
            WITH a AS ({per_key}),
                 w AS (SELECT {ANSWER_KEY.format("chosen_message_id")} AS k, count(*) AS wins FROM fb
                       WHERE kind = 'preference' AND NOT coalesce(preference_tie, false) GROUP BY 1)
            SELECT * FROM (SELECT k, CAST({' + '.join(bits)} AS UTINYINT) AS flags, coalesce(a.unsafe, false) AS unsafe
                           FROM a FULL JOIN w USING (k) FULL JOIN {corrections} c USING (k))
            WHERE flags <> 0""")
        return answers, corrections
    return table("answers", f"""
        SELECT k, CAST(ups AS UINTEGER) AS ups, CAST(downs AS UINTEGER) AS downs, unsafe FROM ({per_key})
        WHERE ups + downs > 0"""), None


ANSWER_COLS = "i.conversation_id, i.message_id, i.prompt, i.response, i.source, i.app, i.model, i.prompt_version"


def sft_query(con: duckdb.DuckDBPyConnection, spec: DatasetSpec,
              partition: tuple[int, int] | None = None) -> tuple[str, list]:
    """The SQL and bound values of the SFT candidates (creates its temp tables on ``con``:
    :func:`_answer_tables`). Columns: conversation_id, message_id, prompt (list of {role, content}), response
    (the correction where there is one), corrected, origin (why it qualified, comma-joined), source, app,
    model, prompt_version, unsafe. Unordered (see :data:`SORT_KEYS`); only the answers of hash ``partition``
    ``(k, of)`` when given."""
    sel = spec.selection
    answers, corrections = _answer_tables(con, spec)
    params: list = []
    key = ANSWER_KEY.format("i.message_id")
    where = f"{answer_filter(sel, params)} AND {_part(key, partition)}"
    origin = ", ".join(f"CASE WHEN a.flags & {1 << b} <> 0 THEN '{name}' END" for b, name in enumerate(_FLAGS))
    response = "coalesce(c.correction, i.response)" if sel.use_corrections else "i.response"
    # LEFT JOINs with the filter on a: the answers' table is the build side (the lake's texts stream through)
    return f"""
        SELECT {ANSWER_COLS.replace('i.response', f'{response} AS response')},
               {('c.correction IS NOT NULL' if sel.use_corrections else 'false')} AS corrected,
               concat_ws(',', {origin}) AS origin, a.unsafe
        FROM interactions{FILES} i LEFT JOIN {answers} a ON a.k = {key} LEFT JOIN {corrections} c ON c.k = {key}
        WHERE a.flags IS NOT NULL AND {_part('a.k', partition)} AND {where}""", params


def preference_query(con: duckdb.DuckDBPyConnection, spec: DatasetSpec) -> tuple[str, list]:
    """The SQL and bound values of the preference pairs. Columns: conversation_id, prompt, chosen_text,
    rejected_text, chosen_message_id, rejected_message_id, strength (explicit preferences only), origin
    (preference | thumbs | correction), source, app, model (chosen's), rejected_model, prompt_version,
    unsafe (the chosen answer carries a safety label), and ``conflicting`` (the same two answers judged
    both ways: rows to drop and count). The chosen answer must be in the selection. Raises DatasetError
    when no pair source is enabled."""
    sel = spec.selection
    _per_answer_view(con, spec)
    params: list = []
    where = answer_filter(sel, params, "c")
    parts = []
    if sel.use_preferences:
        parts.append("""
            SELECT c.message_id AS chosen_message_id, r.message_id AS rejected_message_id, c.response AS chosen_text,
                   r.response AS rejected_text, coalesce(f.preference_strength, 1.0) AS strength, 'preference' AS origin
            FROM fb f JOIN interactions c ON c.message_id = f.chosen_message_id
                      JOIN interactions r ON r.message_id = f.rejected_message_id
            WHERE f.kind = 'preference' AND NOT coalesce(f.preference_tie, false)""")
    if sel.use_thumbs:
        parts.append("""
            SELECT c.message_id, r.message_id, c.response, r.response, NULL, 'thumbs'
            FROM interactions c JOIN per_answer ca ON ca.message_id = c.message_id AND ca.ups > ca.downs
                 JOIN interactions r ON r.conversation_id = c.conversation_id AND r.message_id <> c.message_id
                      AND r.parent_id IS NOT DISTINCT FROM c.parent_id AND md5(CAST(to_json(r.prompt) AS VARCHAR))
                          = md5(CAST(to_json(c.prompt) AS VARCHAR))
                 JOIN per_answer ra ON ra.message_id = r.message_id AND ra.downs > ra.ups""")
    if sel.use_corrections:
        parts.append("""
            SELECT c.message_id, c.message_id, a.correction, c.response, NULL, 'correction'
            FROM interactions c JOIN per_answer a ON a.message_id = c.message_id AND a.correction IS NOT NULL""")
    if not parts:
        raise DatasetError("preference: enable at least one of use_preferences, use_thumbs, use_corrections")
    return f"""
        WITH pairs AS ({' UNION ALL '.join(parts)}),
        flipped AS (SELECT DISTINCT p.chosen_message_id, p.rejected_message_id FROM pairs p JOIN pairs q
                    ON q.chosen_message_id = p.rejected_message_id AND q.rejected_message_id = p.chosen_message_id
                    AND p.origin <> 'correction')
        SELECT c.conversation_id, c.prompt, p.chosen_text, p.rejected_text, p.chosen_message_id, p.rejected_message_id,
               p.strength, p.origin, c.source, c.app, c.model, r.model AS rejected_model, c.prompt_version,
               coalesce(a.unsafe, false) AS unsafe,
               (x.chosen_message_id IS NOT NULL) AS conflicting
        FROM pairs p JOIN interactions c ON c.message_id = p.chosen_message_id
             JOIN interactions r ON r.message_id = p.rejected_message_id
             LEFT JOIN per_answer a ON a.message_id = c.message_id
             LEFT JOIN flipped x ON x.chosen_message_id = p.chosen_message_id AND x.rejected_message_id = p.rejected_message_id
        WHERE {where}""", params


def kto_query(con: duckdb.DuckDBPyConnection, spec: DatasetSpec,
              partition: tuple[int, int] | None = None) -> tuple[str, list]:
    """The SQL and bound values of the answers with thumbs (creates its temp table on ``con``:
    :func:`_answer_tables`). Columns: conversation_id, message_id, prompt, response, label (bool), source,
    app, model, prompt_version, unsafe, and ``tied`` (as many ups as downs: rows to drop and count). Only the
    answers of hash ``partition`` ``(k, of)`` when given."""
    answers, _ = _answer_tables(con, spec)
    params: list = []
    key = ANSWER_KEY.format("i.message_id")
    where = f"{answer_filter(spec.selection, params)} AND {_part(key, partition)}"
    return f"""
        SELECT {ANSWER_COLS}, a.ups > a.downs AS label, a.ups = a.downs AS tied, a.unsafe
        FROM interactions{FILES} i LEFT JOIN {answers} a ON a.k = {key}
        WHERE a.ups IS NOT NULL AND {_part('a.k', partition)} AND {where}""", params


SORT_KEYS = {
    "sft": (("conversation_id", "ascending"), ("message_id", "ascending")),
    "preference": (("conversation_id", "ascending"), ("chosen_message_id", "ascending"),
                   ("rejected_message_id", "ascending"), ("origin", "ascending"), ("strength", "descending")),
    "kto": (("conversation_id", "ascending"), ("message_id", "ascending")),
}
"""Per format: the stream order of the candidates, ``(column, "ascending" | "descending")``, nulls last (as
DuckDB's default). Rows equal in all of them are equal in every column (the same answer, or the same pair
from the same source), so the order is total on what the build sees."""

DROPPED_FLAG = {"sft": None, "preference": ("conflicting", "conflicting pairs dropped"),
                "kto": ("tied", "as many thumbs up as down (dropped)")}
"""Per format: the query's flag column of rows dropped before ``selected``, and the card's name for them."""


PARTITIONED = ("sft", "kto")
"""Formats whose candidates are single answers, joined to their feedback by answer key only: their query can
run in hash partitions of the keys (:func:`answer_partitions`), each joining the feedback of its own answers
only. A preference pair joins two answers (and pairs judged both ways), so it runs whole."""

ANSWER_BYTES = 80
"""Memory DuckDB takes per answer for the join of the lake's answers to :func:`_answer_tables`' (measured on
the 4 M-conversation bench lake, 4,220,040 qualifying ``sft`` answers in one query: it ran out of memory under
a 320 MB cap and ran without spilling under 384 MB, 37.6 s against 38.0 s under 512 MB; under 256 MB it
spilled the join and took 119 s). 256 bytes while the join held the aggregates of the feedback itself."""


def answer_partitions(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, answers_per_partition: int) -> int:
    """How many hash partitions of the answer keys the format's query runs in so that each joins at most
    ``answers_per_partition`` answers: the answers in :func:`_answer_tables`' table (created here) over it,
    rounded up; 1 for a format not in :data:`PARTITIONED`. Each partition's query reads the lake's texts
    again. Raises ``ValueError`` for ``answers_per_partition`` < 1."""
    if answers_per_partition < 1:
        raise ValueError("answers_per_partition must be at least 1")
    if spec.format not in PARTITIONED:
        return 1
    answers, _ = _answer_tables(con, spec)
    count = int(con.execute(f"SELECT count(*) FROM {answers}").fetchone()[0])
    return max(1, -(-count // int(answers_per_partition)))


def candidate_query(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, ordered: bool = True,
                    partition: tuple[int, int] | None = None) -> tuple[str, list]:
    """SQL and bound values of the format's candidates, in :data:`SORT_KEYS` order when ``ordered`` (the
    streaming build sorts them itself: :mod:`finetune.extsort`); see :data:`DROPPED_FLAG` for the flag column
    to filter. ``partition`` ``(k, of)``: only the candidates of the ``k``-th of ``of`` hash partitions of the
    answer keys (formats in :data:`PARTITIONED`; the partitions' rows together are the whole query's).
    Sets ``con``'s join ordering for the query it returns: :data:`FIXED_JOIN_ORDER` for the formats in
    :data:`PARTITIONED`, DuckDB's default (``RESET disabled_optimizers``) for ``preference``; run the SQL before
    asking for another format's. Raises DatasetError as the format's query does, ``ValueError`` for a partition
    of another format or an ``sft``/``kto`` query on a connection opened with ``files=False``."""
    if partition is not None and spec.format not in PARTITIONED:
        raise ValueError(f"{spec.format} candidates are not partitioned (see PARTITIONED)")
    query = {"sft": sft_query, "preference": preference_query, "kto": kto_query}[spec.format]
    # the sft/kto joins must build on the answers' keys (they read FILES views, whose rows DuckDB cannot
    # estimate); the preference query's many joins are left to DuckDB's optimizer, as its estimates allow
    con.execute(FIXED_JOIN_ORDER if spec.format in PARTITIONED else "RESET disabled_optimizers")
    sql, params = query(con, spec, partition) if partition is not None else query(con, spec)
    if ordered:
        keys = ", ".join(f"{name} {'DESC' if order == 'descending' else 'ASC'} NULLS LAST"
                         for name, order in SORT_KEYS[spec.format])
        sql = f"SELECT * FROM ({sql}) ORDER BY {keys}"
    return sql, params
