"""finetune.dedup on real data: exact and near duplicates (checked against datasketch's own MinHash and
MinHashLSH objects) and leak-free, deterministic splits."""

import gzip
import json
import os
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

from finetune import dedup, minhash
from finetune.dedup import (
    LSH_WEIGHTS,
    DedupConfig,
    deduplicate,
    normalise,
    shingle_hash32,
)

from finetune.splits import SPLITS, assign_splits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def oasst(data_dir):
    """oasst1 messages: (message_tree_id, text), in file order."""
    path = data_dir / "oasst1" / "oasst1_en_validation.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["message_tree_id"], r["text"]) for r in rows]


@pytest.fixture(scope="module")
def hh(data_dir):
    """HH-RLHF pairs: (file stem, line number, chosen, rejected)."""
    out = []
    for path in sorted((data_dir / "hh_rlhf").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                d = json.loads(line)
                out.append((path.name.split(".")[0], i, d["chosen"], d["rejected"]))
    return out


def distinct(texts) -> list[str]:
    """The texts whose normalised form is new, in order."""
    first: dict[str, str] = {}
    for t in texts:
        first.setdefault(normalise(t), t)
    return list(first.values())


def shingles(text: str, k: int = 5) -> set[str]:
    words = normalise(text).split(" ")
    return {" ".join(words[i : i + k]) for i in range(max(1, len(words) - k + 1))}


def true_jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def change_one_word(text: str, rng: random.Random) -> str:
    """The real text with one word in its middle half replaced (whitespace kept as it was)."""
    parts = text.split(" ")
    candidates = [i for i in range(len(parts) // 4, 3 * len(parts) // 4) if parts[i].isalpha()]
    i = rng.choice(candidates)
    parts[i] = "zyzzyva" if parts[i].lower() != "zyzzyva" else "aardvark"
    return " ".join(parts)


def kept_row_of_cluster(result):
    first = {}
    for i, (keep, c) in enumerate(zip(result.keep, result.cluster)):
        if keep and c not in first:
            first[c] = i
    return first


def our_signatures(texts: list[str], config: DedupConfig) -> dict[int, np.ndarray]:
    """index -> this module's bulk MinHash signature, for texts of more than shingle_words words."""
    k = config.shingle_words
    _, _, _, n_shingles, hashes = minhash._fingerprints(texts, k)
    a, b = minhash._permutations(config.num_perm, config.seed)
    long = np.flatnonzero(n_shingles > 0)
    sig = minhash._minhash(hashes, n_shingles[long], a, b).T
    return {int(i): sig[j] for j, i in enumerate(long)}


def datasketch_reference(texts: list[str], config: DedupConfig):
    """The decisions made with datasketch's own objects: dict on normalise() for exact duplicates, then
    MinHashLSH query-then-insert of LeanMinHash signatures, joining a near duplicate to every kept match."""
    signatures = our_signatures(texts, config)
    lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm, weights=LSH_WEIGHTS)
    parent = list(range(len(texts)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    seen, minhashes, keep = {}, {}, []
    exact = near = 0
    for i, text in enumerate(texts):
        norm = normalise(text)
        if norm in seen:
            parent[find(i)] = find(seen[norm])
            keep.append(False)
            exact += 1
            continue
        seen[norm] = i
        if i not in signatures:  # at most shingle_words words: exact matching only
            keep.append(True)
            continue
        m = LeanMinHash(seed=config.seed, hashvalues=signatures[i], scheme="affine32")
        minhashes[i] = m
        matches = [c for c in lsh.query(m) if minhashes[c].jaccard(m) >= config.threshold]
        for c in matches:
            parent[find(i)] = find(c)
        if matches:
            keep.append(False)
            near += 1
        else:
            keep.append(True)
            lsh.insert(i, m)
    ids: dict[int, int] = {}
    cluster = [ids.setdefault(find(i), len(ids)) for i in range(len(texts))]
    return keep, cluster, exact, near


# ---------------------------------------------------------------------------------------------------
# normalisation and hashing


def test_normalise_casefolds_and_collapses_whitespace():
    assert normalise("  Hello\tWORLD \n\n ß\u00a0Straße\u2003x  ") == "hello world ss strasse x"
    assert normalise("a\x1cb\x1fc") == "a b c"  # str.split's ASCII separators beyond \t\n\v\f\r
    assert normalise(" \n\t ") == ""


def test_bulk_fingerprints_equal_the_reference_on_normalised_text(oasst, hh):
    rng = random.Random(3)
    texts = [t for _, t in rng.sample(oasst, 150)] + [c for _, _, c, _ in rng.sample(hh, 150)]
    texts += [
        "",
        "   ",
        "One",
        "ÉCOLE  Straße\u00a0x\u2003y z w v",
        "Kelvin \u212a sign, ǅ digraph, İstanbul, ﬁ ligature and more words",
        "a\x1cb\x1fc\x0bd\x0ce f g",
        "lone \ud800 surrogate in a long enough text",
        "tab\tsep\r\nCRLF text\u3000ideographic\u2028line\u0085next end",
        "emoji 🙂 and curly ’quotes’ — dashes stay as they are",
    ]
    key1, key2, n_words, n_shingles, hashes = minhash._fingerprints(texts, 5)
    offsets = np.concatenate(([0], np.cumsum(n_shingles)))
    for i, text in enumerate(texts):
        norm = normalise(text)
        assert (int(key1[i]), int(key2[i]), int(n_words[i])) == minhash._text_key(norm), repr(text)
        if i % 10 == 0 or i >= 300:  # the scalar hash is slow: check a sample's shingles
            words = norm.encode("utf-8", "surrogatepass").split(b" ") if norm else []
            expected = [shingle_hash32(b" ".join(words[j : j + 5])) for j in range(len(words) - 4)]
            expected = expected if len(words) > 5 else []
            assert hashes[offsets[i] : offsets[i + 1]].tolist() == expected, repr(text)


def test_signatures_equal_datasketch_minhash(hh):
    """Our bulk signatures are datasketch.MinHash's, given shingle_hash32 as its hash function."""
    texts = [c for _, _, c, _ in hh[:40]]
    ours = our_signatures(texts, DedupConfig())
    assert len(ours) == 40
    for i, text in enumerate(texts):
        words = normalise(text).encode("utf-8").split(b" ")
        m = MinHash(num_perm=128, seed=1, hashfunc=shingle_hash32)
        m.update_batch([b" ".join(words[j : j + 5]) for j in range(len(words) - 4)])
        assert m.scheme == "affine32"
        assert np.array_equal(m.hashvalues, ours[i])


# ---------------------------------------------------------------------------------------------------
# deduplicate


def test_decisions_equal_datasketch_minhashlsh(oasst, hh):
    """Same keep/cluster/counts as datasketch's MinHashLSH (query, then insert if kept) on real rows:
    HH-RLHF chosen and rejected transcripts (which share their dialogue prefix), oasst1 messages, and
    planted exact and one-word near duplicates."""
    rng = random.Random(5)
    texts = [t for p in hh[:1200] for t in p[2:]] + [t for _, t in oasst]
    long = [t for t in texts if len(t.split()) > 200]
    texts += [change_one_word(t, rng) for t in rng.sample(long, 100)]
    texts += [t.upper() + "  " for t in rng.sample(texts, 100)]
    # families: 8 copies of a real text, each with another word changed. Copies of long texts are all
    # near duplicates of the original; copies of short ones (20-60 words) share LSH buckets with it and
    # with each other without all passing the threshold, so several of one family are kept
    for original in rng.sample([t for t in texts if 20 <= len(t.split()) <= 60], 25) + rng.sample(long, 25):
        texts += [change_one_word(original, rng) for _ in range(8)]
    rng.shuffle(texts)
    result = deduplicate(texts)
    keep, cluster, exact, near = datasketch_reference(texts, DedupConfig())
    assert result.near_dropped == near > 100
    assert result.exact_dropped == exact >= 100
    assert result.keep == keep
    assert result.cluster == cluster


def test_exact_duplicates_are_dropped_and_counted(oasst):
    texts = distinct(t for _, t in oasst)  # the 1,669 distinct real messages
    rng = random.Random(1)
    picked = rng.sample(range(len(texts)), 200)
    variants = []
    for j, i in enumerate(picked):
        t = texts[i]
        variants.append([t.upper(), "  " + t.replace(" ", " \n\t ") + "\n", t.swapcase()][j % 3])
    result = deduplicate(texts + variants)
    n = len(texts)
    assert result.exact_dropped == 200
    assert result.keep[n:] == [False] * 200
    for j, i in enumerate(picked):
        assert result.cluster[n + j] == result.cluster[i]
    assert sum(result.keep) + result.exact_dropped + result.near_dropped == len(texts) + 200


def test_one_changed_word_is_a_near_duplicate_in_its_originals_cluster(hh):
    rng = random.Random(2)
    originals = [c for _, _, c, _ in hh if len(c.split()) >= 200][:300]
    picked = rng.sample(range(len(originals)), 100)
    planted = [change_one_word(originals[i], rng) for i in picked]
    assert all(true_jaccard(p, originals[i]) >= 0.9 for p, i in zip(planted, picked))
    before = deduplicate(originals)
    result = deduplicate(originals + planted)
    n = len(originals)
    assert result.exact_dropped == 0
    assert result.near_dropped == before.near_dropped + 100
    assert result.keep[:n] == before.keep  # planting after the originals changes nothing before them
    for j, i in enumerate(picked):
        assert not result.keep[n + j]
        assert result.cluster[n + j] == result.cluster[i]


def test_no_false_merges_among_distinct_real_texts(oasst, hh):
    # oasst1 holds 1,669 distinct messages (not 2,000). Three are dropped as near duplicates, all
    # genuine: an edited re-post of a long story, two answers quoting the same song lyrics, and
    # "Nice! Now give me a list..." vs "Now give me a list..." (true shingle Jaccard 0.89-0.92).
    texts = distinct(t for _, t in oasst)
    result = deduplicate(texts)
    assert result.exact_dropped == 0
    assert result.near_dropped <= 5
    # every near drop, here and among all HH-RLHF transcripts, is a real near duplicate: its word
    # shingles overlap its cluster's kept text far above chance (0.85 is an estimate, +- ~0.03 at 128)
    both = [t for p in hh for t in p[2:]]
    for rows in (texts, both):
        result = deduplicate(rows)
        kept = kept_row_of_cluster(result)
        for i, (keep, c) in enumerate(zip(result.keep, result.cluster)):
            if not keep and normalise(rows[i]) != normalise(rows[kept[c]]):
                assert true_jaccard(rows[i], rows[kept[c]]) >= 0.7
    assert result.near_dropped > 100  # HH-RLHF's shared dialogue prefixes


def test_short_texts_only_match_exactly():
    texts = [f"item {i} ok" for i in range(3000)] + [
        "ITEM 7   ok",
        "five words is one shingle",
        "Five words is one shingle",
    ]
    result = deduplicate(texts)
    assert result.near_dropped == 0
    assert result.exact_dropped == 2
    assert result.cluster[3000] == result.cluster[7]


def test_batches_and_threads_do_not_change_the_result(hh, monkeypatch):
    texts = [t for p in hh[:1500] for t in p[2:]]
    whole = deduplicate(texts)
    monkeypatch.setattr(dedup, "_CHUNK_BYTES", 20_000)  # ~150 batches through the two-thread pipeline
    assert deduplicate(texts) == whole


def test_threshold_one_and_small_signatures(hh):
    original = next(c for _, _, c, _ in hh if len(c.split()) > 200)
    texts = [original, original.upper(), change_one_word(original, random.Random(0))]
    strict = deduplicate(texts, DedupConfig(threshold=1.0))  # datasketch's optimiser wants one band here
    assert strict.keep == [True, False, True] and strict.exact_dropped == 1
    loose = deduplicate(texts, DedupConfig(threshold=0.8, num_perm=16))
    assert loose.keep == [True, False, False] and loose.near_dropped == 1


def test_edge_cases_and_config_errors():
    assert deduplicate([]) == dedup.DedupResult([], [], 0, 0)
    assert deduplicate(["only one text here with many words in it"]) == dedup.DedupResult([True], [0], 0, 0)
    with pytest.raises(TypeError):
        deduplicate(["a text", None])
    for bad in ({"threshold": 0.0}, {"threshold": 1.5}, {"num_perm": 1}, {"shingle_words": 0}):
        with pytest.raises(ValueError):
            DedupConfig(**bad)


# ---------------------------------------------------------------------------------------------------
# splits


def split_rows(oasst, hh):
    """Real rows with their conversation ids, plus one-word near duplicates of 60 long ones filed under
    new conversations; returns (groups, texts, {planted row: original row})."""
    rng = random.Random(7)
    groups = [tree for tree, _ in oasst] + [f"hh/{stem}/{i}" for stem, i, _, _ in hh[:3300]]
    texts = [t for _, t in oasst] + [c for _, _, c, _ in hh[:3300]]
    long = [i for i, t in enumerate(texts) if len(t.split()) > 200]
    planted = {}
    for i in rng.sample(long, 60):
        planted[len(texts)] = i
        groups.append(f"planted/{i}")
        texts.append(change_one_word(texts[i], rng))
    return groups, texts, planted


def test_no_group_and_no_cluster_spans_two_splits(oasst, hh):
    groups, texts, planted = split_rows(oasst, hh)
    clusters = deduplicate(texts).cluster
    # the planted near duplicates sit in other conversations than their originals: their clusters join
    # two groups, which the split must keep together
    assert all(clusters[p] == clusters[i] and groups[p] != groups[i] for p, i in planted.items())
    splits = assign_splits(groups, clusters)
    assert len(splits) == len(texts) and set(splits) == set(SPLITS)
    by_group, by_cluster = defaultdict(set), defaultdict(set)
    for g, c, s in zip(groups, clusters, splits):
        by_group[g].add(s)
        by_cluster[c].add(s)
    assert all(len(v) == 1 for v in by_group.values())
    assert all(len(v) == 1 for v in by_cluster.values())
    # oasst1 conversations (message trees) of many messages each stay whole too
    assert max(sum(1 for g in groups if g == tree) for tree, _ in oasst[:50]) > 5


def test_split_sizes_follow_the_fractions(hh):
    rows = hh[:5000]
    groups = [f"hh/{stem}/{i}" for stem, i, _, _ in rows]
    clusters = deduplicate([c for _, _, c, _ in rows]).cluster
    splits = assign_splits(groups, clusters)
    for name, fraction in {"train": 0.8, "validation": 0.1, "test": 0.1}.items():
        assert abs(splits.count(name) / len(rows) - fraction) < 0.025, name
    two = assign_splits(groups, clusters, {"train": 0.9, "test": 0.1})
    assert "validation" not in two and abs(two.count("test") / len(rows) - 0.1) < 0.025
    assert assign_splits(groups, clusters, seed=1) != splits


def test_same_input_gives_identical_splits_and_dedup_in_another_process(oasst, hh, tmp_path):
    groups, texts, _ = split_rows(oasst, hh)
    result = deduplicate(texts)
    splits = assign_splits(groups, result.cluster, seed=3)
    (tmp_path / "in.json").write_text(json.dumps({"groups": groups, "texts": texts}))
    code = (
        "import json, sys; from finetune.dedup import deduplicate; from finetune.splits import assign_splits; "
        "d = json.load(open(sys.argv[1])); r = deduplicate(d['texts']); "
        "print(json.dumps([r.keep, r.cluster, assign_splits(d['groups'], r.cluster, seed=3)]))"
    )
    for salt in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": salt}
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "in.json")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert json.loads(out.stdout) == [result.keep, result.cluster, splits]


def test_bad_fractions_and_lengths_raise():
    groups, clusters = ["a", "b"], [0, 1]
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(groups, clusters, {"train": 0.8, "validation": 0.1, "test": 0.2})
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(groups, clusters, {"train": 0.5})
    with pytest.raises(ValueError, match="non-negative"):
        assign_splits(groups, clusters, {"train": 1.2, "test": -0.2})
    with pytest.raises(ValueError, match="unknown split"):
        assign_splits(groups, clusters, {"train": 0.9, "dev": 0.1})
    with pytest.raises(ValueError, match="length"):
        assign_splits(groups, [0], {"train": 1.0})
    assert assign_splits([], []) == []
    assert assign_splits(groups, clusters, {"train": 1.0}) == ["train", "train"]
