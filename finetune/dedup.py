"""Exact and near-duplicate removal over a list of texts (:func:`deduplicate`), with MinHash LSH.

A text is a near duplicate when its LSH candidates (texts sharing all ``r`` values of one band) include an
earlier kept text whose estimated Jaccard similarity (share of equal signature values,
``MinHash.jaccard``) is at or above the threshold; only kept texts are indexed, as in the usual "query,
then insert if new" use of ``datasketch.MinHashLSH``. The signatures and band keys are
:mod:`finetune.minhash`'s (datasketch's own, computed in bulk); texts that share no band with another text
are never looked at again, and groups of a text and its copies are decided in bulk. ``tests/test_dedup.py``
checks the decisions against datasketch's ``MinHashLSH`` on real texts. The streaming build's batch-by-batch
form is :mod:`finetune.neardup`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import compress

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from finetune.minhash import (
    _BAND_MUL,
    _CHUNK_BYTES,
    LSH_WEIGHTS,
    _band_keys,
    _bands,
    _fingerprints,
    _fmix64,
    _minhash,
    _permutations,
    normalise,
    shingle_hash32,
)

__all__ = [
    "LSH_WEIGHTS",
    "DedupConfig",
    "DedupResult",
    "deduplicate",
    "normalise",
    "shingle_hash32",
]


@dataclass(frozen=True)
class DedupConfig:
    """Settings of :func:`deduplicate`.

    ``threshold``: estimated Jaccard similarity of the word-shingle sets at or above which two texts
    are near duplicates, in (0, 1]. ``num_perm``: MinHash permutations (signature length, >= 2).
    ``shingle_words``: words per shingle (>= 1). ``seed``: seed of datasketch's permutations.
    Invalid values raise ``ValueError``.
    """

    threshold: float = 0.85
    num_perm: int = 128
    shingle_words: int = 5
    seed: int = 1

    def __post_init__(self) -> None:
        if not (0.0 < self.threshold <= 1.0):
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold!r}")
        if self.num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, got {self.num_perm!r}")
        if self.shingle_words < 1:
            raise ValueError(f"shingle_words must be at least 1, got {self.shingle_words!r}")


@dataclass
class DedupResult:
    """What :func:`deduplicate` decided, one entry per input row in ``keep`` and ``cluster``.

    ``keep[i]``: row ``i`` is the first of its duplicate group (in input order) and stays.
    ``cluster[i]``: near-duplicate cluster of row ``i``; rows of one cluster are exact or near
    duplicates of each other, transitively; ids are dense ``0..k-1`` in order of first appearance.
    ``exact_dropped``: rows dropped because their normalised text equals an earlier row's.
    ``near_dropped``: rows dropped as near (not exact) duplicates of an earlier kept row.
    ``sum(keep) + exact_dropped + near_dropped == len(keep)``.
    """

    keep: list[bool]
    cluster: list[int]
    exact_dropped: int
    near_dropped: int


def _equal_counts(sig: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Number of equal signature values of each pair ``(left[i], right[i])`` (int64), in blocks."""
    out = np.empty(len(left), dtype=np.int64)
    for lo in range(0, len(left), 8192):
        hi = lo + 8192
        out[lo:hi] = np.count_nonzero(sig[left[lo:hi]] == sig[right[lo:hi]], axis=1)
    return out


def _near_duplicates(sig: np.ndarray, keys: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Query-then-insert MinHash LSH over signatures ``sig`` (n, num_perm), in row order.

    Returns the dropped mask (n,) and the (dropped row, matching kept row) pairs, int64 (m, 2). Same
    decisions as ``MinHashLSH``: a row's candidates are the indexed (kept) earlier rows with all values of
    some band equal to its own, compared by the band's 64-bit digest in ``keys`` (bands, n) -- a digest
    collision, probability about 2**-64 a pair, can only add a candidate, which must still pass the
    threshold. Work is saved where it cannot change a decision:

    * rows sharing no band key with another row are kept without a look (nothing can match them);
    * rows linked by shared buckets form components that cannot affect each other. A component's first
      row is kept; if every other row shares a bucket with it and passes the threshold against it, they
      are all dropped with that one match (their only kept candidate), decided in bulk (the usual case:
      a text and its copies);
    * the rest are walked in order, querying only the buckets that hold an earlier row and indexing only
      the buckets shared with another row; comparisons with each bucket's first row are done in bulk.
    """
    n, num_perm = sig.shape
    bands = keys.shape[0]
    dropped = np.zeros(n, dtype=bool)
    no_edges = np.empty((0, 2), dtype=np.int64)
    if n < 2:
        return dropped, no_edges
    head = np.full((bands, n), -1, dtype=np.int64)  # first row of the row's bucket, where shared
    for band in range(bands):
        order = np.argsort(keys[band], kind="stable")
        sorted_keys = keys[band][order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
        sizes = np.diff(starts, append=n)
        run_head = np.repeat(order[starts], sizes)
        head[band, order] = np.where(np.repeat(sizes, sizes) > 1, run_head, -1)
    shared = head >= 0
    if not shared.any():
        return dropped, no_edges
    # components of the shared-bucket graph (each row linked to the first row of each of its buckets)
    band_of, row_of = np.nonzero(shared & (head != np.arange(n)))
    graph = coo_matrix((np.ones(len(row_of), dtype=np.int8), (row_of, head[band_of, row_of])), shape=(n, n))
    label = connected_components(graph, directed=False)[1]
    comp_first = np.unique(label, return_index=True)[1][label]  # rows ascend, so the first is the smallest
    follower = np.flatnonzero(comp_first != np.arange(n))
    first = comp_first[follower]
    star = (head[:, follower] == first).any(axis=0)
    star &= _equal_counts(sig, follower, first) / num_perm >= threshold  # MinHash.jaccard
    broken = np.zeros(n, dtype=bool)  # by component label
    broken[label[follower[~star]]] = True
    done = ~broken[label[follower]]
    dropped[follower[done]] = True
    edge_parts = [np.stack([follower[done], first[done]], axis=1)]

    # the other components, row by row
    walk = np.flatnonzero(broken[label] & shared.any(axis=0))
    if len(walk):
        later = shared[:, walk] & (head[:, walk] != walk)  # the bucket holds an earlier row
        band_of, col = np.nonzero(later)
        pair = np.sort(walk[col] * n + head[band_of, walk[col]])
        pair = pair[np.concatenate(([True], pair[1:] != pair[:-1]))]
        known = dict(zip(pair.tolist(), _equal_counts(sig, pair // n, pair % n).tolist()))
        # one index for all bands: keys salted with their band (a digest collision across bands, like
        # one within a band, can only add a candidate)
        salt = np.arange(1, bands + 1, dtype=np.uint64)[:, None] * _BAND_MUL
        salted_rows = _fmix64(keys[:, walk] ^ salt).T.tolist()
        shared_mask = np.ascontiguousarray(shared[:, walk].T).tobytes()  # `bands` bytes of 0/1 a row
        later_mask = np.ascontiguousarray(later.T).tobytes()
        index: dict[int, list[int]] = {}
        edges: list[tuple[int, int]] = []
        for idx, j in enumerate(walk.tolist()):
            my_keys = salted_rows[idx]
            lo = idx * bands
            query = list(compress(my_keys, later_mask[lo : lo + bands]))
            if query:
                candidates: set[int] = set()
                for key in query:
                    found = index.get(key)
                    if found is not None:
                        candidates.update(found)
                cand = sorted(candidates)
                equal = known.get(j * n + cand[0]) if len(cand) == 1 else None
                if equal is None:
                    equal = np.count_nonzero(sig[cand] == sig[j], axis=1).tolist()
                else:
                    equal = [equal]
                matches = [c for c, e in zip(cand, equal) if e / num_perm >= threshold]  # MinHash.jaccard
                if matches:
                    dropped[j] = True
                    edges += [(j, m) for m in matches]
                    continue
            for key in compress(my_keys, shared_mask[lo : lo + bands]):
                index.setdefault(key, []).append(j)
        if edges:
            edge_parts.append(np.array(edges, dtype=np.int64))
    return dropped, np.concatenate(edge_parts)


def deduplicate(texts: Sequence[str], config: DedupConfig = DedupConfig()) -> DedupResult:
    """Mark exact and near duplicates among ``texts`` (n strings) in input order; the first of a group stays.

    1. Exact: a row whose :func:`normalise`-d text equals an earlier row's is dropped (``exact_dropped``).
       Texts are matched by a fingerprint of the normalised word sequence (two 64-bit polynomial hashes
       of the words' 64-bit hashes, and the word count): two different texts share it with probability
       about n**2 / 2**129.
    2. Near: each distinct normalised text becomes the set of its word ``shingle_words``-shingles (runs of
       that many consecutive words, hashed with :func:`shingle_hash32`) and a MinHash signature of
       ``num_perm`` 32-bit values (Broder 1997; datasketch's ``MinHash`` with ``seed``, scheme affine32).
       In input order, each text queries a banded LSH index of the earlier *kept* texts (``MinHashLSH``
       bands for ``threshold``, see :data:`LSH_WEIGHTS`); if a candidate's estimated Jaccard similarity
       (equal signature values / ``num_perm``) is ``>= threshold`` the text is dropped (``near_dropped``)
       and joins that candidate's cluster (all such candidates' clusters merge); otherwise it is kept and
       indexed.

    Texts of at most ``shingle_words`` words have a single shingle (the whole text when shorter) and skip
    step 2: a distinct text shares nothing with a shorter one, and shares more than half of its shingle set
    with a ``shingle_words``-word one only by repeating that one phrase, so above a threshold of 0.5 this
    changes nothing else. It also keeps 32-bit hash collisions from merging them: between single-shingle
    texts one collision makes the whole signature equal, about n**2 / 2**33 false pairs among n texts
    (some 100 at a million).

    Deterministic: no randomness beyond the fixed ``seed``; the same input gives the same result in any
    process. Two worker threads hash and MinHash batches of about 2 MB while the calling thread matches
    exact duplicates. Time is about linear in the text (some 50,000 conversation-sized texts a second on
    2 cores), plus a Python walk through families of texts that share LSH buckets without all being near
    duplicates of their first member (tens of microseconds a text). Memory: ``4 * num_perm`` bytes per
    distinct text of more than ``shingle_words`` words (512 MB for a million at 128 permutations), plus
    the batches in flight.
    Raises ``ValueError`` for an invalid config (see :class:`DedupConfig`), ``TypeError`` if a text is not
    a ``str``.
    """
    n = len(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("deduplicate() takes a sequence of str")
    k = config.shingle_words
    bands, rows = _bands(config.threshold, config.num_perm)
    a, b = _permutations(config.num_perm, config.seed)
    first: dict[tuple[int, int, int], int] = {}
    unique_of = np.empty(n, dtype=np.int64)
    spans = []
    start = 0
    while start < n:
        stop, size = start, 0
        while stop < n and (stop == start or size + len(texts[stop]) < _CHUNK_BYTES):
            size += len(texts[stop]) + 1
            stop += 1
        spans.append((start, stop))
        start = stop

    def signatures(hv: np.ndarray, n_shingles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sig_t = _minhash(hv, n_shingles, a, b)
        return np.ascontiguousarray(sig_t.T), _band_keys(sig_t, bands, rows)

    # Two threads (numpy releases the GIL in its loops): batches are fingerprinted ahead of this thread,
    # which matches exact duplicates in order and hands each batch's new texts on to be MinHashed.
    pending: list[tuple[np.ndarray, Future]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        ahead: deque[Future] = deque(pool.submit(_fingerprints, texts[lo:hi], k) for lo, hi in spans[:3])
        for i, (lo, hi) in enumerate(spans):
            key1, key2, n_words, n_shingles, shingle_hash = ahead.popleft().result()
            if i + 3 < len(spans):
                nlo, nhi = spans[i + 3]
                ahead.append(pool.submit(_fingerprints, texts[nlo:nhi], k))
            seen = len(first)
            ids = np.fromiter(
                (first.setdefault(key, len(first)) for key in zip(key1.tolist(), key2.tolist(), n_words.tolist())),
                dtype=np.int64,
                count=hi - lo,
            )
            unique_of[lo:hi] = ids
            new = np.zeros(hi - lo, dtype=bool)
            new[np.unique(ids, return_index=True)[1]] = True
            new &= (ids >= seen) & (n_shingles > 0)
            if new.any():
                hv = shingle_hash[np.repeat(new, n_shingles)]
                pending.append((ids[new], pool.submit(signatures, hv, n_shingles[new])))
        done = [(ids, future.result()) for ids, future in pending]
    n_distinct = len(first)
    del first, pending
    near = np.zeros(n_distinct, dtype=bool)
    parent = np.arange(n_distinct)
    if done:
        long_ids = np.concatenate([ids for ids, _ in done])
        sig = np.concatenate([sig for _, (sig, _) in done])
        keys = np.concatenate([keys for _, (_, keys) in done], axis=1)
        del done
        dropped, edges = _near_duplicates(sig, keys, config.threshold)
        near[long_ids[dropped]] = True
        if len(edges):
            pairs = long_ids[edges]
            graph = coo_matrix(
                (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n_distinct, n_distinct)
            )
            parent = connected_components(graph, directed=False)[1]
    is_first = np.zeros(n, dtype=bool)
    is_first[np.unique(unique_of, return_index=True)[1]] = True
    keep = is_first & ~near[unique_of]
    # dense cluster ids in order of first appearance
    _, first_pos, inverse = np.unique(parent[unique_of], return_index=True, return_inverse=True)
    rank = np.empty(len(first_pos), dtype=np.int64)
    rank[np.argsort(first_pos)] = np.arange(len(first_pos))
    return DedupResult(
        keep=keep.tolist(),
        cluster=rank[inverse].tolist(),
        exact_dropped=int(n - n_distinct),
        near_dropped=int(near.sum()),
    )
