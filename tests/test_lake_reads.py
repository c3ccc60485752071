"""Reading a lake snapshot as plain Parquet files (feedback.lake.duck.data_files): the same rows as DuckDB's
iceberg_scan of that snapshot, on the replayed real data and through appends, a copy-on-write delete and a
schema change."""

import pyarrow.compute as pc
import pytest
from pyiceberg.types import StringType

from feedback.config import HomeSettings, LakeSettings
from feedback.lake import duck
from feedback.lake.catalog import ensure_table, load_table_if_exists, open_catalog


def _iceberg_scan(table, snapshot_id: int) -> str:
    return f"iceberg_scan('{duck.local_path(table.metadata_location)}', snapshot_from_id := {snapshot_id})"


def _same_rows(con, left: str, right: str) -> int:
    """The rows of ``left``, after checking they are ``right``'s as a multiset (every column, nested ones too)."""
    n_left = con.execute(f"SELECT count(*) FROM {left}").fetchone()[0]
    assert n_left == con.execute(f"SELECT count(*) FROM {right}").fetchone()[0]
    for a, b in ((left, right), (right, left)):
        assert con.execute(f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})").fetchone()[0] == 0
    return n_left


@pytest.mark.parametrize("name", ["interactions", "feedback"])
def test_the_data_files_of_the_replayed_lake_hold_its_rows(lake, name):
    stack, _ = lake
    table = load_table_if_exists(stack.catalog(), stack.lake, name)
    snapshot = table.current_snapshot().snapshot_id
    con = duck.connect()
    try:
        files = duck.data_files(con, table, snapshot)
        source = duck.snapshot_source(con, table, snapshot)
        assert files and source.startswith("read_parquet(")
        assert len(files) == len(set(files)) == sum(1 for _ in table.scan(snapshot_id=snapshot).plan_files())
        assert con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall() == \
            con.execute(f"DESCRIBE SELECT * FROM {_iceberg_scan(table, snapshot)}").fetchall()
        assert _same_rows(con, source, _iceberg_scan(table, snapshot)) > 10_000
    finally:
        con.close()


def test_data_files_follow_snapshots_deletes_and_schema_changes(lake, tmp_path):
    """A table of real replayed rows, appended in three commits: each snapshot's files give that snapshot's
    rows; after a copy-on-write delete the rewritten files are left out; after a column is added the files
    no longer say the table's columns, and the source falls back to iceberg_scan."""
    stack, _ = lake
    rows = load_table_if_exists(stack.catalog(), stack.lake, "interactions").scan().to_arrow()
    rows = rows.sort_by([("conversation_id", "ascending"), ("message_id", "ascending")]).slice(0, 9_000)
    table = ensure_table(open_catalog(LakeSettings(), HomeSettings(home=tmp_path)), LakeSettings(), "interactions")
    snapshots = []
    for start in range(0, rows.num_rows, 3_000):
        table.append(rows.slice(start, 3_000))
        snapshots.append(table.current_snapshot().snapshot_id)
    source = rows["source"][0].as_py()
    table.delete(f"source == '{source}'")
    deleted = table.current_snapshot().snapshot_id
    con = duck.connect()
    try:
        for i, snapshot in enumerate(snapshots):
            files = duck.data_files(con, table, snapshot)
            assert _same_rows(con, duck.parquet_source(files), _iceberg_scan(table, snapshot)) == 3_000 * (i + 1)
        left = duck.data_files(con, table, deleted)
        assert not set(left) & set(duck.data_files(con, table, snapshots[0]))  # the first append's files rewritten
        assert _same_rows(con, duck.parquet_source(left), _iceberg_scan(table, deleted)) \
            == rows.num_rows - pc.sum(pc.equal(rows["source"], source)).as_py() < rows.num_rows
        with table.update_schema() as update:
            update.add_column("note", StringType())
        assert duck.data_files(con, table, deleted) is None
        assert duck.snapshot_source(con, table, deleted) == _iceberg_scan(table, deleted)
        with pytest.raises(ValueError, match="no snapshot 12345"):
            duck.data_files(con, table, 12345)
    finally:
        con.close()
    with pytest.raises(ValueError):
        duck.parquet_source([])


def _hash_joins(node: dict) -> list[tuple[str, str]]:
    """(join type, what its build side scans) of every hash join in an ``EXPLAIN (FORMAT JSON)`` plan node."""
    def scans(n: dict) -> str:
        if not n.get("children"):
            extra = n.get("extra_info", {})
            return extra.get("Table") or extra.get("Function") or n["name"].strip()
        return ",".join(scans(c) for c in n["children"])
    joins = [(node["extra_info"].get("Join Type"), scans(node["children"][1]))] if "HASH_JOIN" in node["name"] else []
    return joins + [j for c in node.get("children", []) for j in _hash_joins(c)]


@pytest.mark.parametrize("fmt", ["sft", "kto"])
def test_the_selection_reads_the_files_and_builds_its_join_on_the_answers(lake, fmt):
    """The dataset selection's views of the data files hold the iceberg_scan views' rows; the candidate query
    sets FIXED_JOIN_ORDER, under which its hash joins build on the answers' key tables, never on the lake's
    texts (whose row count DuckDB cannot estimate through the files), and a preference query on the same
    connection resets it; a lake opened without the files views has none and its sft/kto query says why."""
    import json

    from finetune import select
    from finetune.spec import parse_spec

    stack, _ = lake
    con, _ = select.open_lake(stack.catalog())
    try:
        for name in select.SOURCE_TABLES:
            assert "read_parquet" in con.execute(f"SELECT sql FROM duckdb_views() WHERE view_name = "
                                                 f"'{name}{select.FILES}'").fetchone()[0]
            assert _same_rows(con, name, name + select.FILES) > 10_000
        spec = parse_spec({"name": f"plan-{fmt}", "format": fmt, "cleaning": {"pii": False}})
        sql, params = select.candidate_query(con, spec, ordered=False, partition=(0, 2))
        plan = json.loads(con.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchall()[0][1])
        setting = "SELECT current_setting('disabled_optimizers')"
        assert con.execute(setting).fetchone()[0] == "join_order,build_side_probe_side"
        # the preference query is left to DuckDB's optimizer on the same connection
        select.candidate_query(con, parse_spec({"name": "plan-p", "format": "preference"}), ordered=False)
        assert con.execute(setting).fetchone()[0] == ""
    finally:
        con.close()
    con, _ = select.open_lake(stack.catalog(), files=False)
    try:
        assert not con.execute(f"SELECT count(*) FROM duckdb_views() WHERE view_name LIKE '%{select.FILES}'"
                               ).fetchone()[0]
        with pytest.raises(ValueError, match="files=True"):
            select.candidate_query(con, spec, ordered=False)
        assert con.execute("SELECT count(*) FROM interactions").fetchone()[0] > 10_000
    finally:
        con.close()
    joins = [j for node in plan for j in _hash_joins(node)]
    assert joins and all("answers_" in build or "corrections_" in build for _, build in joins), joins
    assert any("answers_" in build for _, build in joins)
