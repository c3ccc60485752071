"""The streaming build's parts: the compact key index, streaming near-duplicate clusters across batch
boundaries (on real HH-RLHF texts), and a build in many small batches that keeps the guarantees."""

import gzip
import json
import random

import numpy as np
import pytest

from finetune import build, dedup, keyindex, kernels, output, stream
from finetune.arraylog import ArrayLog
from finetune.components import ClusterComponents
from finetune.errors import DatasetError
from finetune.keyindex import _PROBES, DiskRun, KeyIndex, mix64
from finetune.neardup import StreamingClusters, _unique_pairs
from finetune.spec import parse_spec
from finetune.splits import SPLITS


def test_key_index_keeps_the_first_value_and_finds_every_key():
    rng = np.random.default_rng(0)
    index = KeyIndex()
    keys = rng.integers(0, 2**63, size=50_000, dtype=np.int64).astype(np.uint64)
    for lo in range(0, len(keys), 1_000):  # many runs, merged as they grow
        part = keys[lo:lo + 1_000]
        new = ~index.contains(part)
        index.add(part[new], np.arange(lo, lo + len(part))[new])
    assert len(index) == len(np.unique(keys))
    _, first = np.unique(keys, return_index=True)
    assert np.array_equal(index.get(keys), first[np.searchsorted(np.unique(keys), keys)])
    assert np.array_equal(index.get(keys[:10]), np.arange(10))
    assert (index.get(np.array([1, 2, 3], dtype=np.uint64)) == -1).all()
    index.add(np.array([7], dtype=np.uint64), 5)
    assert index.get(np.array([7], dtype=np.uint64))[0] == 5
    assert index.nbytes == 12 * len(index)
    with pytest.raises(ValueError):
        index.add(np.array([9], dtype=np.uint64), -1)
    assert not np.array_equal(mix64(np.array([1, 2])), mix64(np.array([2, 1])))


def test_a_key_index_on_disk_answers_as_the_one_in_memory(tmp_path):
    """Runs written to disk once 3,000 keys are in memory (Bloom filter, fence keys, 4 KiB blocks): every
    lookup (present keys, absent ones, repeated ones) gives what the in-memory index gives."""
    rng = np.random.default_rng(1)
    keys = mix64(rng.integers(0, 40_000, size=60_000))  # a third repeat
    absent = mix64(np.arange(50_000, 60_000))
    memory, disk = KeyIndex(), KeyIndex(tmp_path / "state", memory_keys=3_000)
    for lo in range(0, len(keys), 1_500):
        part = keys[lo:lo + 1_500]
        for index in (memory, disk):
            got = index.get(part)
            index.add(part[got < 0], np.arange(lo, lo + len(part))[got < 0])
        assert np.array_equal(memory.get(part), disk.get(part))
    assert 1 <= len(disk._disk) <= 8 + 5 and disk.disk_bytes >= 12 * (len(disk) - 3_000)  # merged beyond 8
    assert len(disk) == len(memory) == len(np.unique(keys))
    assert disk.nbytes == 12 * (len(disk) - sum(run.n for run in disk._disk)) < 12 * 3_000 + 12 * 1_500
    both = np.concatenate([keys, absent, keys[::-7]])
    assert np.array_equal(disk.get(both), memory.get(both))
    assert (disk.get(absent) == -1).all()
    disk.close()
    assert not list((tmp_path / "state").iterdir())


def _mapped_kib(path) -> int:
    """Resident kB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's first line
            inside = head[-1] == str(path)
        elif inside and head[0] == "Rss:":
            total += int(head[1])
    return total


@pytest.mark.parametrize("window_blocks", [4, 4096])
def test_a_disk_runs_blocked_bloom_filter_sets_the_multiply_shift_bits_and_misses_no_key(tmp_path, monkeypatch,
                                                                                       window_blocks):
    """Each block of 512 keys has its own 1 KiB filter, in a file: the compiled filter sets exactly the bits of
    the documented formula (computed here with numpy: in block ``i // 512`` of key ``i`` -- the last block
    padded with the last key -- word ``((h >> 32) * 128) >> 32``, bit ``(h >> 26) & 63`` of ``h = key *
    probe``), every added key passes it, fewer than 0.5 % of absent keys do (16 bits a key, 7 probes: ~0.07
    %), lookups read through windows of the filter give the keys' values, and a lookup leaves none of the
    run's file pages in the process."""
    monkeypatch.setattr(keyindex, "_WINDOW_BLOCKS", window_blocks)  # windows of whole pages of every file
    rng = np.random.default_rng(2)
    keys = np.unique(mix64(rng.integers(0, 2**40, size=20_000)))
    run = DiskRun(tmp_path, [(keys[:700], np.arange(700)), (keys[700:], np.arange(700, len(keys)))], len(keys))
    blocks = -(-len(keys) // 512)
    assert run.bits.shape == (blocks, 128)
    assert run.disk_bytes == blocks * 512 * 12 + blocks * 1024 + blocks * 8
    padded = np.concatenate([keys, np.full(blocks * 512 - len(keys), keys[-1])])
    assert np.array_equal(run.fence, padded[::512])
    with np.errstate(over="ignore"):
        h = padded[:, None] * _PROBES[None, :]
    word = np.arange(len(padded))[:, None] // 512 * 128 + (((h >> np.uint64(32)) * np.uint64(128)) >> np.uint64(32))
    bits = np.zeros(blocks * 128, dtype=np.uint64)
    np.bitwise_or.at(bits, word.astype(np.int64), np.uint64(1) << ((h >> np.uint64(26)) & np.uint64(63)))
    assert np.array_equal(run.bits.ravel(), bits) and bits.any()
    block = np.arange(len(keys)) // 512
    assert kernels.bloom_maybe(run.bits, block, keys, _PROBES).all()
    absent = np.sort(mix64(np.arange(2**41, 2**41 + 20_000)))
    absent_block = np.searchsorted(run.fence, absent, side="right") - 1
    assert kernels.bloom_maybe(run.bits, absent_block, absent, _PROBES).mean() < 0.005
    assert np.array_equal(run.get(keys), np.arange(len(keys))) and (run.get(absent) == -1).all()
    both = np.sort(np.concatenate([keys[::3], absent[::2]]))
    expect = np.where(np.isin(both, keys), np.searchsorted(keys, both), -1)
    assert np.array_equal(run.get(both), expect)
    for path in run.paths:
        assert _mapped_kib(path) == 0
    with pytest.raises(ValueError, match="Bloom filter"):
        kernels.bloom_maybe(np.zeros((1, 0), dtype=np.uint64), block, keys, _PROBES)
    with pytest.raises(IndexError, match="beyond the filter"):
        kernels.bloom_maybe(run.bits[:2], block, keys, _PROBES)
    assert np.array_equal(kernels.find_in_blocks(run.keys, block, keys, 512), np.arange(len(keys)))
    assert (kernels.find_in_blocks(run.keys, absent_block.clip(0), absent, 512) == -1).all()
    with pytest.raises(IndexError, match="outside the keys"):
        kernels.find_in_blocks(run.keys, np.array([blocks]), keys[:1], 512)
    run.remove()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("on_disk", [True, False])
def test_cluster_components_are_the_conversation_cluster_graphs_components(tmp_path, on_disk):
    """The union-find over clusters, fed kept rows batch by batch (conversations crossing batch ends) and links,
    names each cluster's component by its smallest id, and joins exactly the clusters that scipy's connected
    components of the graph with a node per conversation and per cluster join; on disk, its file pages leave
    the process after each call."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(4)
    n_rows, n_clusters = 30_000, 12_000
    groups = np.sort(rng.integers(0, 20_000, size=n_rows))  # conversations' rows back to back
    clusters = rng.integers(0, n_clusters, size=n_rows)
    links = rng.integers(0, n_clusters, size=(800, 2))
    comps = ClusterComponents(n_clusters, tmp_path / "state" if on_disk else None)
    for lo in range(0, n_rows, 2_500):
        comps.join_conversations(groups[lo:lo + 2_500], clusters[lo:lo + 2_500])
        if on_disk:
            assert _mapped_kib(comps._parent.path) == 0
    for lo in range(0, len(links), 300):
        comps.join_pairs(links[lo:lo + 300])
    with pytest.raises(RuntimeError):
        comps.roots(clusters[:3])
    comps.flatten()
    root = comps.roots(np.arange(n_clusters))
    if on_disk:
        assert _mapped_kib(comps._parent.path) == 0
    n_groups = int(groups.max()) + 1
    edges = np.concatenate([np.stack([groups, clusters + n_groups], axis=1), links + n_groups])
    size = n_groups + n_clusters
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(size, size))
    label = connected_components(graph, directed=False)[1][n_groups:]
    smallest = np.full(label.max() + 1, n_clusters)
    np.minimum.at(smallest, label, np.arange(n_clusters))
    assert np.array_equal(root, smallest[label])
    assert 0.05 < len(np.unique(root)) / n_clusters < 0.5  # joined, but not into one component
    with pytest.raises(ValueError):
        comps.roots(np.array([n_clusters]))
    with pytest.raises(RuntimeError):
        comps.join_pairs(links[:1])
    comps.close()
    if on_disk:
        assert not list((tmp_path / "state").iterdir())


@pytest.mark.parametrize("on_disk", [True, False])
def test_an_array_log_gives_back_each_batchs_array(tmp_path, on_disk):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(-5, 2**31 - 1, size=n) for n in (3, 0, 70_000, 1)]
    log = ArrayLog(tmp_path / "logs" if on_disk else None, np.int32)
    for a in arrays:
        log.append(a)
    assert len(log) == 4
    for i, a in enumerate(arrays):
        assert log[i].dtype == np.int32 and np.array_equal(log[i], a)
    total = sum(len(a) for a in arrays) * 4
    assert (log.nbytes, log.disk_bytes) == ((0, total) if on_disk else (total, 0))
    if on_disk:  # one file, the items back to back
        assert [p.stat().st_size for p in (tmp_path / "logs").iterdir()] == [total]
        assert np.array_equal(np.fromfile(next((tmp_path / "logs").iterdir()), np.int32), np.concatenate(arrays))
    masks = ArrayLog(tmp_path if on_disk else None, bool)
    masks.append(np.array([True, False, True]))
    assert masks[0].dtype == bool and masks[0].tolist() == [True, False, True]


def test_unique_link_pairs_equal_numpys_row_unique():
    rng = np.random.default_rng(3)
    pairs = rng.integers(0, 2**31 - 1, size=(5_000, 2))
    pairs = np.concatenate([pairs, pairs[::3], pairs[:, ::-1][::5], rng.integers(0, 50, size=(2_000, 2))])
    assert np.array_equal(_unique_pairs(pairs), np.unique(pairs, axis=0))


@pytest.fixture(scope="module")
def hh_texts(data_dir):
    texts = []
    with gzip.open(sorted((data_dir / "hh_rlhf").glob("*.jsonl.gz"))[0], "rt", encoding="utf-8") as fh:
        for line in fh:
            texts.append(json.loads(line)["chosen"])
            if len(texts) >= 3_000:
                break
    return list(dict.fromkeys(t for t in texts if len(t.split()) > 40))


def test_copies_and_near_copies_join_their_originals_cluster_across_batches(hh_texts):
    rng = random.Random(1)
    originals = hh_texts[:500]
    variants = []
    for t in originals:
        words = t.split(" ")
        i = rng.randrange(len(words) // 4, 3 * len(words) // 4)
        words[i] = "zyzzyva"
        variants.append(" ".join(words))
    clusters = StreamingClusters(dedup.DedupConfig(threshold=0.85), keep_links=True)
    first, _ = clusters.assign(originals[:250])
    second, _ = clusters.assign(originals[250:] + variants + [originals[3].upper()])
    cl = np.concatenate([first, second])
    orig, var = cl[:500], cl[500:1000]
    assert cl[-1] == orig[3]  # exact after normalisation
    assert (orig == var).mean() > 0.9  # one word changed: a near duplicate (short texts can fall below 0.85)
    assert len(set(orig.tolist())) > 450  # distinct real texts stay apart
    # what the batch version (datasketch's decisions) joins, the streaming clusters join too (or link)
    reference = dedup.deduplicate(originals + variants, dedup.DedupConfig(threshold=0.85)).cluster
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in np.concatenate([np.empty((0, 2), np.int64), *clusters.link_batches()]).tolist():
        parent[find(a)] = find(b)
    by_ref = {}
    for mine, ref in zip(cl[:1000].tolist(), reference):
        by_ref.setdefault(ref, set()).add(find(mine))
    assert all(len(v) == 1 for v in by_ref.values())


def test_a_build_in_small_batches_keeps_the_guarantees(lake):
    stack, _ = lake
    spec = parse_spec({"name": "small-batches", "format": "sft", "cleaning": {"pii": False},
                       "selection": {"exclude_apps": ["hh_rlhf/harmless-base"]}})
    small = build.build(stack.catalog(), spec, config=stream.StreamConfig(batch_rows=500))
    rows = [(name, r) for name in SPLITS for r in small.splits[name].to_dict("records")]
    assert len(rows) == small.report.steps[-1][1] == sum(small.report.splits.values())
    split_of = {}
    for name, r in rows:
        assert split_of.setdefault(r["conversation_id"], name) == name
    prompts = ["\n".join(f"{m['role']}: {m['content']}" for m in r["messages"][:-1]) for _, r in rows]
    split_of_cluster = {}
    for (name, _), c in zip(rows, dedup.deduplicate(prompts, dedup.DedupConfig(threshold=0.85)).cluster):
        assert split_of_cluster.setdefault(c, name) == name
    assert small.report.state_bytes > 0
    big = build.build(stack.catalog(), spec)
    # cleaning does not depend on batches; de-duplication can only differ where greedy clusters meet
    assert small.report.steps[:5] == big.report.steps[:5]
    assert abs(small.report.steps[-1][1] - big.report.steps[-1][1]) <= 0.001 * big.report.steps[-1][1]


@pytest.mark.parametrize("fmt", ["sft", "preference"])
def test_exports_hold_each_parquet_row_as_its_targets_record(lake, fmt, tmp_path):
    """The JSONL exports written from a version's Parquet splits (from whole columns by Polars, Bedrock's built
    with Arrow compute, read in batches smaller than a split) hold, line for line, ``export_record`` of the
    Parquet rows, as orjson writes them; a target that takes no such format is refused."""
    import orjson
    import pyarrow.parquet as pq

    from finetune.errors import DatasetError
    from finetune.exports import EXPORT_FORMATS, export_record, write_export

    stack, _ = lake
    spec = parse_spec({"name": f"exports-{fmt}", "format": fmt, "cleaning": {"pii": False}})
    built = build.build(stack.catalog(), spec, config=stream.StreamConfig(batch_rows=2000))
    assert not (built.files / "exports").exists()
    targets = [t for t, fmts in EXPORT_FORMATS.items() if fmt in fmts]
    listed = output.lineage(built)["exports"]  # what the card and the registry say each export holds
    for target in targets:
        written = write_export(built.files / "data", fmt, target, tmp_path / target, batch_rows=300)
        assert written == built.report.splits and listed[target] == sum(written.values())
    for name in SPLITS:
        rows = pq.read_table(built.files / "data" / f"{name}.parquet").to_pylist()
        assert len(rows) > 300
        for target in targets:
            lines = (tmp_path / target / f"{name}.jsonl").read_bytes()
            assert lines == b"".join(orjson.dumps(export_record(fmt, target, r)) + b"\n" for r in rows)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted([f"{n}.jsonl" for n in SPLITS] * len(targets))
    for target in set(EXPORT_FORMATS) - set(targets):
        with pytest.raises(DatasetError, match="takes no"):
            write_export(built.files / "data", fmt, target, tmp_path / target)
        assert listed[target] == 0


def test_bedrock_lines_keep_system_messages_apart(lake):
    """Rows with system messages get Bedrock's ``system`` list, the others none, in row order."""
    import orjson
    import pyarrow as pa

    from finetune.exports import SCHEMAS, export_lines, export_record

    stack, _ = lake
    spec = parse_spec({"name": "bedrock-system", "format": "sft", "cleaning": {"pii": False}})
    built = build.build(stack.catalog(), spec)
    rows = built.splits["validation"].head(50).to_dict("records")
    for i in (0, 7, 8, 49):
        rows[i]["messages"] = [{"role": "system", "content": "Réponds brièvement."},
                               {"role": "system", "content": "Cite sources."}] + list(rows[i]["messages"])
    table = pa.Table.from_pylist(rows, schema=SCHEMAS["sft"])
    lines = export_lines("sft", "bedrock", table).splitlines()
    assert lines == [orjson.dumps(export_record("sft", "bedrock", r)) for r in table.to_pylist()]
    assert [b'"system"' in line for line in lines] == [i in (0, 7, 8, 49) for i in range(50)]


def _external_sort(batches, schema, keys, work, bucket_rows, batch_rows):
    """Rows of ``batches`` through :class:`finetune.extsort.ExternalSort`, read back: (table, batch sizes)."""
    import pyarrow as pa

    from finetune import extsort

    sorter = extsort.ExternalSort(schema, keys, work, bucket_rows=bucket_rows)
    for batch in batches:
        sorter.add(batch)
    sizes = sorter.finish(work.parent / "sorted.arrow", batch_rows)
    got = list(extsort.read_batches(work.parent / "sorted.arrow"))
    assert [b.num_rows for b in got] == sizes
    assert all(n == batch_rows for n in sizes[:-1]) and 0 < sizes[-1] <= batch_rows
    assert not work.exists()
    return pa.Table.from_batches(got, schema), sizes


@pytest.mark.parametrize("fmt, open_runs", [("sft", None), ("preference", None), ("sft", 3)])
def test_the_external_sort_gives_duckdbs_order_by(lake, tmp_path, monkeypatch, fmt, open_runs):
    """The candidates streamed unsorted from DuckDB and sorted in runs and ranges of 300 rows (about 25 of
    each for the preference pairs) equal, row for row, DuckDB's ``ORDER BY`` of the same query (descending
    strength with nulls last included), in record batches of exactly 700 rows; also when at most 3 runs'
    readers may be open at a time (each range then closes and reopens them)."""
    from finetune import extsort, select

    if open_runs is not None:
        monkeypatch.setattr(extsort, "_OPEN_RUNS", open_runs)

    stack, _ = lake
    spec = parse_spec({"name": f"sort-{fmt}", "format": fmt, "cleaning": {"pii": False}})
    con, _ = select.open_lake(stack.catalog())
    try:
        con.execute("SET preserve_insertion_order = false")
        sql, params = select.candidate_query(con, spec, ordered=False)
        reader = con.execute(sql, params).to_arrow_reader(1000)
        got, _ = _external_sort(reader, reader.schema, select.SORT_KEYS[fmt], tmp_path / "work", 300, 700)
        sql, params = select.candidate_query(con, spec, ordered=True)
        expected = con.execute(sql, params).fetch_arrow_table()
    finally:
        con.close()
    assert got.num_rows == expected.num_rows > 3_000
    assert got.to_pylist() == expected.to_pylist()


@pytest.mark.parametrize("fmt", ["sft", "kto"])
def test_the_selection_in_hash_partitions_gives_the_whole_querys_rows(lake, fmt):
    """With at most 1,000 answers a query, the candidates are selected in hash partitions of the answers:
    every partition holds rows, no row is in two, and together they are the rows of the whole query."""
    import pyarrow as pa

    from finetune import select

    stack, _ = lake
    spec = parse_spec({"name": f"parts-{fmt}", "format": fmt, "cleaning": {"pii": False}})
    con, _ = select.open_lake(stack.catalog())
    try:
        assert select.answer_partitions(con, spec, 10**9) == 1
        parts = select.answer_partitions(con, spec, 1_000)
        tables = [con.execute(*select.candidate_query(con, spec, ordered=False, partition=(k, parts)))
                  .fetch_arrow_table() for k in range(parts)]
        whole = con.execute(*select.candidate_query(con, spec, ordered=False)).fetch_arrow_table()
        with pytest.raises(ValueError):
            select.candidate_query(con, parse_spec({"name": "p", "format": "preference"}), partition=(0, 2))
    finally:
        con.close()
    assert parts >= 3 and all(t.num_rows for t in tables)
    assert sum(t.num_rows for t in tables) == whole.num_rows > 1_000
    keys = list(select.SORT_KEYS[fmt])
    assert pa.concat_tables(tables).sort_by(keys).to_pylist() == whole.sort_by(keys).to_pylist()


def test_selections_on_one_connection_each_join_their_own_feedback(lake):
    """The answers' feedback tables are made once per connection and selection: a second selection on the same
    connection that differs only in its feedback sources (none of the replayed feedback is an end user's)
    gets its own, so it selects nothing where the first selected thousands."""
    from finetune import select

    stack, _ = lake
    annotated = parse_spec({"name": "src-a", "format": "sft", "selection": {"feedback_sources": ["annotator"]}})
    end_users = parse_spec({"name": "src-e", "format": "sft", "selection": {"feedback_sources": ["end_user"]}})
    con, _ = select.open_lake(stack.catalog())
    try:
        first = con.execute(*select.candidate_query(con, annotated, ordered=False)).fetch_arrow_table()
        second = con.execute(*select.candidate_query(con, end_users, ordered=False)).fetch_arrow_table()
        again = con.execute(*select.candidate_query(con, annotated, ordered=False)).fetch_arrow_table()
    finally:
        con.close()
    assert first.num_rows > 1_000 and second.num_rows == 0 and again.num_rows == first.num_rows


def test_a_duckdb_memory_size_gives_the_answers_one_query_holds():
    """Three quarters of ``duckdb_memory`` over 80 bytes an answer (MB as DuckDB reads it, 10**6 bytes),
    unless set."""
    from finetune.config import memory_bytes

    assert memory_bytes("512MB") == 512 * 10**6 and memory_bytes("1.5GiB") == 3 * 2**29
    assert stream.StreamConfig().answers_per_query() == 2_400_000
    assert stream.StreamConfig(partition_answers=7).answers_per_query() == 7
    with pytest.raises(ValueError):
        memory_bytes("512 apples")


def test_the_external_sort_orders_unicode_and_nulls_as_duckdb(tmp_path, data_dir):
    """Real oasst1 message texts (their non-ASCII ones first) and nulls as the first key, sorted in runs and
    ranges: the order of DuckDB's ``ORDER BY text NULLS LAST`` (code-point order)."""
    import duckdb
    import pyarrow as pa

    with open(data_dir / "oasst1" / "oasst1_en_validation.jsonl", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    texts = sorted(texts, key=lambda t: t.isascii())[:4_000]  # the non-ASCII ones first
    texts = [t[i:i + 30] for t in texts for i in (0, len(t) // 2)]  # their starts and middles
    random.Random(7).shuffle(texts)
    texts[::37] = [None] * len(texts[::37])
    source = pa.table({"text": texts, "position": list(range(len(texts)))})
    got, _ = _external_sort(source.to_batches(max_chunksize=500), source.schema,
                            [("text", "ascending"), ("position", "descending")], tmp_path / "work", 250, 333)
    expected = duckdb.sql("SELECT * FROM source ORDER BY text ASC NULLS LAST, position DESC").fetch_arrow_table()
    assert got.to_pylist() == expected.to_pylist()
    assert sum(1 for r in got.to_pylist() if r["text"] and not r["text"].isascii()) > 50


def test_the_external_sort_refuses_a_descending_first_key_and_keeps_ties_in_order(tmp_path):
    """Ranges of the first key are merged in ascending order, so a descending first key is refused; rows
    equal in every key come out in the order they came in, across runs."""
    import pyarrow as pa

    from finetune import extsort

    schema = pa.schema([("key", pa.int64()), ("arrival", pa.int64())])
    with pytest.raises(ValueError, match="ascending"):
        extsort.ExternalSort(schema, [("key", "descending")], tmp_path / "w")
    keys = [i % 7 for i in range(2_000)]
    table = pa.table({"key": keys, "arrival": list(range(2_000))}, schema=schema)
    got, sizes = _external_sort(table.to_batches(max_chunksize=90), schema, [("key", "ascending")],
                                tmp_path / "work", 100, 128)
    assert got.to_pylist() == sorted(table.to_pylist(), key=lambda r: r["key"])  # Python's sort is stable
    assert sum(sizes) == 2_000


@pytest.mark.parametrize("fmt, pii", [("preference", False), ("kto", True)])
def test_key_indexes_on_disk_give_the_same_dataset(lake, fmt, pii):
    """A build whose key indexes (pass 1's, and the PII text keys') keep at most 2,000 keys each in memory (the
    rest in disk runs) and whose selection runs in partitions of 1,500 answers (kto; preference runs whole)
    writes the same bytes, and counts the same PII, as one that keeps everything in memory in one query."""
    stack, _ = lake
    cleaning = {"pii": pii, "pii_entities": ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS"]}
    spec = parse_spec({"name": f"spill-{fmt}", "format": fmt, "cleaning": cleaning})
    on_disk = build.build(stack.catalog(), spec, config=stream.StreamConfig(batch_rows=1000, memory_keys=2_000,
                                                                                 partition_answers=1_500))
    files = {p.relative_to(on_disk.files): p.read_bytes() for p in on_disk.files.rglob("*.*") if p.is_file()}
    assert on_disk.report.state_disk_bytes > 100_000
    in_memory = build.build(stack.catalog(), spec, config=stream.StreamConfig(batch_rows=1000, memory_keys=None))
    assert in_memory.report.state_disk_bytes == 0
    # 12 bytes a key in memory against 2 of Bloom filter (and a fence key per 512) on disk; the per-row arrays
    # (keep mask, conversation numbers, prompt clusters, links) in memory against files; the 2,000 keys an
    # index keeps are held by both
    assert in_memory.report.state_bytes > 2 * on_disk.report.state_bytes
    assert {p.relative_to(in_memory.files): p.read_bytes() for p in in_memory.files.rglob("*.*") if p.is_file()} \
        == files
    assert sorted(str(p) for p in files) == [f"data/{n}.parquet" for n in sorted(SPLITS)]
    assert in_memory.report.pii == on_disk.report.pii
    assert not pii or on_disk.report.pii["texts"] > 2_000
    assert not any(p.name.startswith(".state") for p in on_disk.files.rglob("*"))


def test_the_memory_knobs_come_from_the_environment(monkeypatch):
    """``FLYWHEEL_DATASET_*`` sets the streaming build's memory knobs; a malformed DuckDB cap is refused."""
    from pydantic import ValidationError

    from finetune.config import DatasetSettings

    assert DatasetSettings().stream_config() == stream.StreamConfig()
    monkeypatch.setenv("FLYWHEEL_DATASET_MEMORY_KEYS", "0")
    monkeypatch.setenv("FLYWHEEL_DATASET_SORT_ROWS", "1000")
    monkeypatch.setenv("FLYWHEEL_DATASET_DUCKDB_MEMORY", "2GB")
    monkeypatch.setenv("FLYWHEEL_DATASET_PARTITION_ANSWERS", "5000")
    config = DatasetSettings().stream_config()
    assert (config.memory_keys, config.sort_rows, config.duckdb_memory, config.partition_answers) \
        == (None, 1000, "2GB", 5000)
    monkeypatch.setenv("FLYWHEEL_DATASET_DUCKDB_MEMORY", "2GB'; DROP")
    with pytest.raises(ValidationError):
        DatasetSettings()


def _heavy_modules_loaded() -> list[str]:
    import sys

    return [name for name in ("torch", "transformers") if sys.modules.get(name) is not None]


def test_pii_in_a_worker_ahead_of_the_batches_gives_the_same_dataset(lake):
    """With PII on, a build whose worker process redacts the selection ahead in chunks of 700 rows (not
    aligned with the 1,000-row batches, so batches span chunks) writes the same bytes and counts the same PII
    as one redacting in this process; the worker loads Presidio without torch or transformers, and its result
    files are gone afterwards."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from finetune import redact

    stack, _ = lake
    cleaning = {"pii": True, "pii_entities": ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS"]}
    spec = parse_spec({"name": "pii-worker", "format": "sft", "cleaning": cleaning})
    worker = build.build(stack.catalog(), spec,
                         config=stream.StreamConfig(batch_rows=1000, pii_workers=1, pii_chunk_rows=700))
    assert worker.report.pii_workers == 1
    files = {p.relative_to(worker.files): p.read_bytes() for p in worker.files.rglob("*.*") if p.is_file()}
    local = build.build(stack.catalog(), spec, config=stream.StreamConfig(batch_rows=1000, pii_workers=0))
    assert local.report.pii_workers == 0
    assert {p.relative_to(local.files): p.read_bytes() for p in local.files.rglob("*.*") if p.is_file()} == files
    assert worker.report.pii == local.report.pii
    assert worker.report.pii["texts_changed"] >= 10 and worker.report.pii["texts"] > 10_000
    assert [p for p in worker.files.rglob("*") if p.name.startswith((".pii", ".state"))] == []
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=redact._init_worker,
                             initargs=(["EMAIL_ADDRESS"],)) as pool:
        assert pool.submit(_heavy_modules_loaded).result() == []


def test_pii_workers_start_during_the_selection_and_stop_with_the_build(lake, monkeypatch):
    """The PII workers are spawned (and load Presidio) while the selection streams, once it has
    ``pii_pool_min_rows`` rows, not after it; a build that selects nothing stops them again."""
    import multiprocessing

    from finetune import extsort, redact

    stack, _ = lake
    events: list[str] = []
    start = redact.start_workers
    finish = extsort.ExternalSort.finish
    monkeypatch.setattr(stream, "start_workers", lambda *a: events.append("workers") or start(*a))
    monkeypatch.setattr(extsort.ExternalSort, "finish", lambda self, *a: events.append("sorted") or finish(self, *a))
    cleaning = {"pii": True, "pii_entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"]}
    spec = parse_spec({"name": "pii-early", "format": "sft", "cleaning": cleaning,
                       "selection": {"apps": ["tulu1_human_eval"]}})
    built = build.build(stack.catalog(), spec, config=stream.StreamConfig(pii_pool_min_rows=100, batch_rows=100))
    assert events == ["workers", "sorted"] and built.report.pii_workers >= 1
    assert multiprocessing.active_children() == []
    events.clear()
    small = build.build(stack.catalog(), spec, config=stream.StreamConfig(pii_pool_min_rows=10**9))
    assert events == ["sorted"] and small.report.pii_workers == 0
    assert small.report.pii == built.report.pii and small.report.steps == built.report.steps
    nothing = parse_spec({"name": "pii-none", "format": "sft", "cleaning": cleaning,
                          "selection": {"apps": ["no-such-app"]}})
    with pytest.raises(DatasetError):
        build.build(stack.catalog(), nothing, config=stream.StreamConfig(pii_workers=1))
    assert multiprocessing.active_children() == []


def test_the_heap_is_trimmed_while_a_build_runs(lake, monkeypatch):
    """A build hands glibc's free heap pages back from a thread (:func:`finetune.allocator.trimming`) through the
    selection and both passes, and stops it however the build ends; ``trim_interval_s=None`` starts none."""
    import threading

    from finetune import allocator, extsort

    if allocator._glibc("malloc_trim") is None:
        pytest.skip("glibc only")
    stack, _ = lake
    seen: list[list[str]] = []
    trims: list[int] = []

    def trimmers() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name == "flywheel-trim-heap"]

    finish, passes, trim = extsort.ExternalSort.finish, stream._passes, allocator.trim_heap
    monkeypatch.setattr(extsort.ExternalSort, "finish", lambda self, *a: seen.append(trimmers()) or finish(self, *a))
    monkeypatch.setattr(stream, "_passes", lambda *a: seen.append(trimmers()) or passes(*a))
    monkeypatch.setattr(allocator, "trim_heap", lambda: trims.append(1) or trim())
    spec = parse_spec({"name": "trim", "format": "sft", "selection": {"apps": ["tulu1_human_eval"]}})
    build.build(stack.catalog(), spec, config=stream.StreamConfig(trim_interval_s=0.01))
    assert seen == [["flywheel-trim-heap"]] * 2 and trims and trimmers() == []
    seen.clear()
    build.build(stack.catalog(), spec, config=stream.StreamConfig(trim_interval_s=None))
    assert seen == [[], []]
    nothing = parse_spec({"name": "trim-none", "format": "sft", "selection": {"apps": ["no-such-app"]}})
    with pytest.raises(DatasetError):
        build.build(stack.catalog(), nothing, config=stream.StreamConfig(trim_interval_s=0.01))
    assert trimmers() == []


def test_redact_found_with_gates_finds_what_it_finds_without(data_dir):
    """Per-entity RE2 gates only skip recognizers that would find nothing: same findings on real texts."""
    import pyarrow as pa

    from finetune.pii import PiiRedactor
    from finetune.piigate import arrow_candidates
    from tests.test_pii import PLANTED, _oasst1_texts

    texts = [t for t in _oasst1_texts(data_dir) if any(c.isdigit() or c in "@:" for c in t)][:1500]
    texts += [phrase.format(value) for _, value, phrase in PLANTED]
    entities = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS"]
    gates = {e: arrow_candidates(pa.array(texts, pa.string()), [e]).to_pylist() for e in entities}
    redactor = PiiRedactor(entities=entities)
    plain = redactor.redact_found(texts)
    assert redactor.redact_found(texts, gates) == plain and len(plain) >= 10
    assert sum(not any(g[i] for g in gates.values()) for i in range(len(texts))) > 100  # gates do skip
    with pytest.raises(ValueError):
        redactor.redact_found(texts, {"EMAIL_ADDRESS": [True]})


def test_a_failed_run_surfaces_from_the_sort_thread_and_the_runs_are_removed(tmp_path):
    """A run that cannot be sorted (a batch of another schema) fails in the sort thread: the error reaches
    the caller at ``finish`` and the run files are removed all the same."""
    import pyarrow as pa

    from finetune import extsort

    schema = pa.schema([("key", pa.int64())])
    sorter = extsort.ExternalSort(schema, [("key", "ascending")], tmp_path / "work", bucket_rows=10)
    sorter.add(pa.record_batch({"key": list(range(10, 0, -1))}, schema=schema))
    sorter.add(pa.record_batch({"key": [str(i) for i in range(10)]}))
    assert (tmp_path / "work").exists()
    with pytest.raises(pa.ArrowInvalid):
        sorter.finish(tmp_path / "sorted.arrow")
    assert not (tmp_path / "work").exists()


def test_the_merge_ranges_hold_at_most_bucket_rows_whatever_the_number_of_runs(tmp_path):
    """80 runs of 1,000 rows drawn from the same keys (so each run's sample errs the same way): the ranges
    counted in the runs hold at most 1,000 rows each and are barely more than 80 (quantiles of the samples
    alone gave ranges of ~1,600 rows here); the sorted file holds every row in key order."""
    import pyarrow as pa

    from finetune import extsort

    rng = np.random.default_rng(7)
    schema = pa.schema([("key", pa.string()), ("row", pa.int64())])
    sorter = extsort.ExternalSort(schema, [("key", "ascending"), ("row", "ascending")], tmp_path / "work",
                                  bucket_rows=1_000)
    keys = [f"k{v:06d}" for v in rng.integers(0, 200_000, size=80_000)]
    for lo in range(0, len(keys), 500):
        sorter.add(pa.record_batch({"key": keys[lo:lo + 500], "row": list(range(lo, lo + 500))}, schema=schema))
    sorter._collect_run()  # the last run (80,000 rows: no rows pending)
    bounds = sorter._bounds()
    sizes = np.zeros(len(bounds) + 1, dtype=np.int64)
    for run in sorter.runs:
        run.find_ends("key", bounds)
        sizes += np.diff([0, *run.ends])
    assert len(sorter.runs) == 80 and sizes.sum() == 80_000
    assert sizes.max() <= 1_000 and len(sizes) <= 88
    sizes_out = sorter.finish(tmp_path / "sorted.arrow", 4096)
    got = pa.Table.from_batches(list(extsort.read_batches(tmp_path / "sorted.arrow")))
    assert sum(sizes_out) == 80_000
    assert got["key"].to_pylist() == sorted(keys)


@pytest.mark.parametrize("fmt", ["sft", "preference", "kto"])
def test_rows_formatted_in_an_order_are_the_rows_taken_in_that_order(lake, fmt):
    """Pass 2 formats a batch's rows grouped by split (``format_rows(..., order)``) and writes each split's
    slice: on real candidates, with some of their texts redacted, that gives the rows ``take(order)`` of the
    rows formatted in stream order gives, for a grouping by split and for an order that leaves rows out."""
    import pyarrow as pa

    from finetune import select
    from finetune.cleaning import ANSWERS
    from finetune.columns import prompt_parts, string_column
    from finetune.exports import format_rows
    from finetune.redact import replace_texts

    stack, _ = lake
    spec = parse_spec({"name": f"order-{fmt}", "format": fmt, "cleaning": {"pii": False}})
    con, _ = select.open_lake(stack.catalog())
    try:
        sql, params = select.candidate_query(con, spec)
        # a batch read back from the selection file is not a slice (prompt_parts reads struct children whole)
        table = con.execute(f"SELECT * FROM ({sql}) LIMIT 3000", params).fetch_arrow_table().combine_chunks()
    finally:
        con.close()
    _, _, contents = prompt_parts(table)
    texts = [t for t in contents.to_pylist() if t]
    changed = {t: f"<redacted {i}>" for i, t in enumerate(texts[::7])}
    answers = {name: replace_texts(string_column(table, name), changed) for name in ANSWERS[fmt]}
    prompt_contents = replace_texts(contents, changed)
    assert prompt_contents.to_pylist() == [changed.get(t, t) for t in contents.to_pylist()]
    whole = format_rows(fmt, table, prompt_contents, answers)
    rng = np.random.default_rng(5)
    split_of_row = rng.integers(0, 3, table.num_rows).astype(np.int8)
    for order in (np.argsort(split_of_row, kind="stable"), rng.permutation(table.num_rows)[: table.num_rows // 3]):
        got = format_rows(fmt, table, prompt_contents, answers, order)
        assert got.schema == whole.schema
        assert got.to_pylist() == whole.take(pa.array(order)).to_pylist()
    assert table.num_rows > 1_000 and any("<redacted" in str(r) for r in whole.to_pylist())


def test_blank_texts_are_those_whitespace_trimming_empties(data_dir):
    """``columns.blank`` (no trimmed copies) marks what trimming Unicode whitespace leaves empty: for every code
    point alone and doubled, for real HH-RLHF turns, and for nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from finetune.columns import blank

    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    with gzip.open(data_dir / "hh_rlhf" / "harmless-base_test.jsonl.gz", "rt") as fh:
        # real turns, and the blank and whitespace pieces between them
        real = [piece for line in list(fh)[:500] for piece in json.loads(line)["chosen"].split("Human:")]
    texts = pa.array(chars + [c + c for c in chars] + [" a ", "\u00a0\u3000", "", None, "\u200b", " \n\t", *real])
    trimmed = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0), True)
    assert blank(texts).to_pylist() == trimmed.to_pylist()
    assert sum(blank(pa.array(chars)).to_pylist()) == 29
