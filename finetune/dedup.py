"""Exact and near-duplicate removal, and leak-free train/validation/test splits.

Near duplicates are found with MinHash (Broder, "On the resemblance and containment of documents",
1997) over word shingles, indexed with banded locality-sensitive hashing (Leskovec, Rajaraman &
Ullman, *Mining of Massive Datasets*, ch. 3), exactly as ``datasketch`` defines them
(https://ekzhu.com/datasketch/minhash.html, https://ekzhu.com/datasketch/lsh.html):

* the permutations are ``datasketch.MinHash(num_perm, seed)``'s own (scheme ``"affine32"``: the 32-bit
  shingle hash is pre-mixed with the MurmurHash3 finalizer, then ``a_k * h + b_k mod 2**32``);
* the band layout ``(b, r)`` is ``datasketch.MinHashLSH``'s optimiser's choice for the threshold;
* a text is a near duplicate when its LSH candidates (texts sharing all ``r`` values of one band)
  include an earlier kept text whose estimated Jaccard similarity (share of equal signature values,
  ``MinHash.jaccard``) is at or above the threshold; only kept texts are indexed, as in the usual
  "query, then insert if new" use of ``MinHashLSH``.

datasketch's per-object path (``MinHash.bulk`` with ``sha1_hash32``, then ``MinHashLSH.query``/``insert``)
runs at about 4,000 conversation-sized texts per second on one core, over 4 minutes for a million texts.
This module computes the same signatures with array arithmetic instead: a batch of texts is normalised,
split into words and hashed in a few numpy passes over its UTF-8 bytes, and the permutations run over all
of the batch's shingles at once, in two threads; texts that share no band with another text are never
looked at again, and groups of a text and its copies are decided in bulk. ``tests/test_dedup.py`` checks
the result against datasketch's own ``MinHash``/``MinHashLSH`` objects (with :func:`shingle_hash32` as
their ``hashfunc``) on real texts: equal signatures, equal decisions.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import compress

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketch import MinHash, MinHashLSH
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "LSH_WEIGHTS",
    "DedupConfig",
    "DedupResult",
    "deduplicate",
    "normalise",
    "shingle_hash32",
]

#: Weights (false positive, false negative) given to ``MinHashLSH``'s band optimiser. Every LSH candidate
#: is checked against the threshold with the full signature, so a false positive only costs one
#: comparison while a false negative is a missed duplicate: weigh misses 9 to 1. At threshold 0.85 and
#: 128 permutations this gives 11 bands of 11 values: a pair at Jaccard 0.9 becomes a candidate with
#: probability 0.98, one at 0.85 with 0.87 (0.81 and 0.46 with the default (0.5, 0.5): 8 bands of 16).
LSH_WEIGHTS = (0.1, 0.9)

# Odd (so invertible) bases of the polynomial hashes: two over a word's bytes (mod 2**32), two over a
# text's word hashes (mod 2**64).
_A32, _B32 = 0x01000193, 0x9E3779B1
_R64, _S64 = 0x9E3779B97F4A7C15, 0xD6E8FEB86659FD93
# MurmurHash3 finalizer constants (64- and 32-bit); the 32-bit one is datasketch.minhash._fmix(h, 32).
_F64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_F32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35))
# Texts are processed in batches of about this many UTF-8 bytes.
_CHUNK_BYTES = 1 << 21
_BAND_MUL = np.uint64(0x100000001B3)


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


def normalise(text: str) -> str:
    """Casefold, collapse every run of whitespace (``str.split``'s, Unicode included) to one space, strip.

    The result is what exact matching compares and what shingles are cut from (its words are the
    space-separated pieces). :func:`deduplicate` computes the same thing on bytes in bulk.
    """
    return " ".join(text.casefold().split())


# ---------------------------------------------------------------------------------------------------
# hashing: scalar reference forms (for tests and datasketch's hashfunc) and the bulk form


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer on a uint64 array (a bijection; arithmetic wraps mod 2**64)."""
    s, m1, m2 = _F64
    h = h ^ (h >> s)
    h *= m1
    h ^= h >> s
    h *= m2
    h ^= h >> s
    return h


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer on a uint32 array: datasketch's affine32 pre-mix of an input hash."""
    s1, m1, s2, m2 = _F32
    h = h ^ (h >> s1)
    h *= m1
    h ^= h >> s2
    h *= m2
    h ^= h >> s1
    return h


def _word_hash(word: bytes) -> int:
    """64-bit hash of one word: MurmurHash3-finalised pair of polynomial hashes of ``byte + 1``, mod 2**32."""
    ha = hb = 0
    pa = pb = 1
    for byte in word:
        ha = (ha + (byte + 1) * pa) & 0xFFFFFFFF
        hb = (hb + (byte + 1) * pb) & 0xFFFFFFFF
        pa = (pa * _A32) & 0xFFFFFFFF
        pb = (pb * _B32) & 0xFFFFFFFF
    return int(_fmix64(np.array([(ha << 32) | hb], dtype=np.uint64))[0])


def _sequence_hash(words: Sequence[bytes], base: int) -> int:
    """``sum(word_hash(w_m) * base**m) mod 2**64`` over a word sequence."""
    h, p = 0, 1
    for w in words:
        h = (h + _word_hash(w) * p) & 0xFFFFFFFFFFFFFFFF
        p = (p * base) & 0xFFFFFFFFFFFFFFFF
    return h


def shingle_hash32(shingle: bytes) -> int:
    """32-bit hash of one shingle (the UTF-8 bytes of its words joined by single spaces).

    The top 32 bits of a polynomial hash (mod 2**64) of the shingle's word hashes; a function of the
    bytes only, so it works as ``datasketch.MinHash(hashfunc=shingle_hash32)``. Pure Python and slow:
    :func:`deduplicate` computes the same values in bulk; this form is the reference for tests.
    """
    return _sequence_hash(shingle.split(b" "), _R64) >> 32


def _text_key(normalised: str) -> tuple[int, int, int]:
    """Reference form of the exact-match key of a normalised text: two 64-bit word-sequence hashes, words."""
    words = normalised.encode("utf-8", "surrogatepass").split(b" ") if normalised else []
    return _sequence_hash(words, _R64), _sequence_hash(words, _S64), len(words)


class _Powers:
    """``base**j`` and ``base**-j`` (mod 2**bits) for ``j < n``, grown on demand; safe to share between threads."""

    def __init__(self, base: int, dtype: type) -> None:
        self.dtype = dtype
        self.base = base
        self.inverse = pow(base, -1, 1 << (8 * np.dtype(dtype).itemsize))
        self.tables = (np.ones(1, dtype=dtype), np.ones(1, dtype=dtype))
        self.lock = threading.Lock()

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        tables = self.tables  # one read: the pair is replaced whole, never mutated
        if len(tables[0]) >= n:
            return tables
        with self.lock:
            if len(self.tables[0]) < n:
                size = max(n, 2 * len(self.tables[0]))
                pos = np.full(size, self.base, dtype=self.dtype)
                neg = np.full(size, self.inverse, dtype=self.dtype)
                pos[0] = neg[0] = 1
                # wraps around; the explicit dtype stops accumulate from widening uint32 to uint64
                self.tables = (
                    np.multiply.accumulate(pos, dtype=self.dtype),
                    np.multiply.accumulate(neg, dtype=self.dtype),
                )
            return self.tables


_POW_A = _Powers(_A32, np.uint32)
_POW_B = _Powers(_B32, np.uint32)
_POW_R = _Powers(_R64, np.uint64)
_POW_S = _Powers(_S64, np.uint64)


_TABLE_LOCK = threading.Lock()


def _needs_python() -> np.ndarray:
    """Boolean table over code points: True where ``str.casefold`` changes the character or it is
    whitespace (``str.split`` splits on it) -- the characters the byte-level normalisation cannot handle.
    Built once per process (about 0.1 s)."""
    with _TABLE_LOCK:
        if _NEEDS_PYTHON:
            return _NEEDS_PYTHON[0]
        _NEEDS_PYTHON.append(_build_needs_python())
        return _NEEDS_PYTHON[0]


_NEEDS_PYTHON: list[np.ndarray] = []


def _build_needs_python() -> np.ndarray:
    table = np.zeros(0x110000, dtype=bool)
    for block in range(0x80, 0x110000, 256):
        chars = "".join(map(chr, range(block, min(block + 256, 0x110000))))
        if chars.casefold() != chars or "".join(chars.split()) != chars:
            for cp in range(block, min(block + 256, 0x110000)):
                c = chr(cp)
                table[cp] = c.casefold() != c or c.isspace()
    return table


def _utf8_batch(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The batch's UTF-8 bytes joined by ``\\n`` and each text's start offset.

    A text holding a character the byte-level pass cannot normalise (a non-ASCII character that
    casefolds to something else, e.g. ``É`` or ``ß``, or non-ASCII whitespace) goes in as its
    :func:`normalise`-d form instead; everything else goes in as is.
    """
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    non_ascii = [i for i, t in enumerate(texts) if not t.isascii()]
    if non_ascii:
        part = [encoded[i] for i in non_ascii]
        data = np.frombuffer(b"\n".join(part) + b"\0\0\0", dtype=np.uint8)
        lead = np.flatnonzero(data >= 0xC0)  # first byte of every multi-byte character
        b0 = data[lead].astype(np.int32)
        b1, b2, b3 = ((data[lead + j] & 0x3F).astype(np.int32) for j in (1, 2, 3))
        cp = np.where(
            b0 < 0xE0,
            ((b0 & 0x1F) << 6) | b1,
            np.where(
                b0 < 0xF0, ((b0 & 0x0F) << 12) | (b1 << 6) | b2, ((b0 & 0x07) << 18) | (b1 << 12) | (b2 << 6) | b3
            ),
        )
        bad = lead[_needs_python()[cp]]
        if len(bad):
            lens = np.fromiter(map(len, part), dtype=np.int64, count=len(part))
            starts = np.concatenate(([0], np.cumsum(lens + 1)[:-1]))
            for j in np.unique(np.searchsorted(starts, bad, side="right") - 1).tolist():
                i = non_ascii[j]
                encoded[i] = normalise(texts[i]).encode("utf-8", "surrogatepass")
    lens = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    starts = np.concatenate(([0], np.cumsum(lens + 1)[:-1]))
    return np.frombuffer(b"\n".join(encoded), dtype=np.uint8), starts


def _codepoints(data: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """Code points of the multi-byte UTF-8 characters whose first bytes are at ``lead`` in ``data`` (which
    has 3 bytes of padding at its end)."""
    b0 = data[lead].astype(np.int32)
    b1, b2, b3 = ((data[lead + j] & 0x3F).astype(np.int32) for j in (1, 2, 3))
    return np.where(
        b0 < 0xE0,
        ((b0 & 0x1F) << 6) | b1,
        np.where(b0 < 0xF0, ((b0 & 0x0F) << 12) | (b1 << 6) | b2, ((b0 & 0x07) << 18) | (b1 << 12) | (b2 << 6) | b3),
    )


def string_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(data, offsets)`` of an Arrow string array without nulls, zero-copy: ``data`` uint8, the texts' UTF-8
    bytes back to back; ``offsets`` int64 (n+1,), text ``i`` is ``data[offsets[i]:offsets[i+1]]``."""
    width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    offsets = np.frombuffer(texts.buffers()[1], dtype=width)[texts.offset: texts.offset + len(texts) + 1]
    offsets = offsets.astype(np.int64)
    raw = texts.buffers()[2]
    data = np.frombuffer(raw, dtype=np.uint8)[offsets[0]:offsets[-1]] if raw is not None else np.empty(0, np.uint8)
    return data, offsets - offsets[0]


def byte_pieces(texts: pa.Array, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of ``texts`` (an Arrow string array) holding about ``size`` bytes each (at least
    one text), for work whose scratch memory grows with the bytes at hand."""
    ends = np.cumsum(pc.fill_null(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False).astype(np.int64) + 1)
    bounds, start = [], 0
    while start < len(texts):
        stop = max(start + 1, int(np.searchsorted(ends, (ends[start - 1] if start else 0) + size)))
        bounds.append((start, stop))
        start = stop
    return bounds


def _utf8_arrow(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_utf8_batch` for an Arrow string array (nulls read as empty texts), without making a Python
    string of each text: the bytes come from the array's buffers, and only texts holding a character the
    byte-level pass cannot normalise are decoded and :func:`normalise`-d."""
    texts = pc.fill_null(texts, "") if texts.null_count else texts
    data, offsets = string_buffers(texts)
    n = len(texts)
    lead = np.flatnonzero(data >= 0xC0)  # first byte of every multi-byte character
    if len(lead):
        padded = np.concatenate([data, np.zeros(3, np.uint8)])
        bad = np.unique(np.searchsorted(offsets, lead[_needs_python()[_codepoints(padded, lead)]], side="right") - 1)
        if len(bad):
            mask = np.zeros(n, dtype=bool)
            mask[bad] = True
            fixed = pa.array([normalise(texts[i].as_py()) for i in bad.tolist()], pa.string())
            texts = pc.replace_with_mask(texts.cast(pa.string()), pa.array(mask), fixed)
    lens = pc.binary_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(lens + 1)[:-1]))
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), texts), "\n")[0]
    return np.frombuffer(joined.as_buffer(), dtype=np.uint8), starts


def _fingerprints(texts: Sequence[str] | pa.Array, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact-match keys and shingle hashes of a batch of raw texts, as of their :func:`normalise`-d form.

    Returns ``key1``, ``key2`` (uint64, per text: :func:`_text_key`'s two hashes), ``n_words`` (int64, per
    text), ``n_shingles`` (int64, per text: ``n_words - k + 1`` for texts of more than ``k`` words, else 0)
    and ``shingle_hash`` (uint32, :func:`shingle_hash32` of every shingle of those texts, text by text).
    """
    buf, text_start = _utf8_arrow(texts) if isinstance(texts, pa.Array) else _utf8_batch(texts)
    size = len(buf)
    # ASCII casefold is lower-casing; str.split's ASCII whitespace is \t \n \v \f \r \x1c-\x1f and space
    low = buf + ((buf - np.uint8(65)) < 26) * np.uint8(32)
    word = ~((low == 32) | ((low - np.uint8(9)) < 5) | ((low - np.uint8(28)) < 4))
    edges = np.flatnonzero(np.diff(word, prepend=False, append=False))
    w_start, w_end = edges[0::2], edges[1::2]
    # per-word hash: prefix sums of (byte + 1) * base**position, mod 2**32, for two bases
    c = low.astype(np.uint32)
    c += np.uint32(1)
    halves = []
    prefix32 = np.zeros(size + 1, dtype=np.uint32)
    for powers in (_POW_A, _POW_B):
        pos, neg = powers.get(size + 1)
        np.multiply(c, pos[:size], out=prefix32[1:])
        np.cumsum(prefix32[1:], dtype=np.uint32, out=prefix32[1:])
        halves.append((prefix32[w_end] - prefix32[w_start]) * neg[w_start])
    word_hash = _fmix64((halves[0].astype(np.uint64) << np.uint64(32)) | halves[1])
    n_all = len(w_start)
    first = np.searchsorted(w_start, text_start)  # index of each text's first word
    n_words = np.diff(first, append=n_all)
    last = first + n_words
    n_shingles = np.where(n_words > k, n_words - k + 1, 0)
    total = int(n_shingles.sum())
    # shingle j of text t starts at word first[t] + j
    starts = np.repeat(first - (np.cumsum(n_shingles) - n_shingles), n_shingles) + np.arange(total)
    keys = []
    prefix64 = np.zeros(n_all + 1, dtype=np.uint64)
    for powers in (_POW_R, _POW_S):
        pos, neg = powers.get(n_all + 1)
        np.multiply(word_hash, pos[:n_all], out=prefix64[1:])
        np.cumsum(prefix64[1:], dtype=np.uint64, out=prefix64[1:])
        keys.append((prefix64[last] - prefix64[first]) * neg[first])
        if powers is _POW_R:
            h = (prefix64[starts + k] - prefix64[starts]) * neg[starts]
            shingle_hash = (h >> np.uint64(32)).astype(np.uint32)
    return keys[0], keys[1], n_words, n_shingles, shingle_hash


def _minhash(hv: np.ndarray, n_shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signatures, transposed: uint32 of shape (num_perm, texts).

    ``hv``: shingle hashes, text after text, ``n_shingles`` (all > 0) of each. Column ``t`` equals
    ``datasketch.MinHash(num_perm, seed).update_batch`` of text ``t``'s shingles with a hash function
    returning ``hv``: ``min over shingles of (a_p * fmix32(h) + b_p) mod 2**32``.
    """
    offsets = np.cumsum(n_shingles) - n_shingles
    mixed = _fmix32(hv)
    out = np.empty((len(a), len(offsets)), dtype=np.uint32)
    tmp = np.empty_like(mixed)
    for p in range(len(a)):
        np.multiply(mixed, a[p], out=tmp)
        tmp += b[p]
        out[p] = np.minimum.reduceat(tmp, offsets)
    return out


def _band_keys(sig_t: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 (bands, texts): a 64-bit digest of each band of each signature. Equal bands give equal keys;
    unequal ones collide with probability about 2**-64, which at worst adds an LSH candidate."""
    keys = np.empty((bands, sig_t.shape[1]), dtype=np.uint64)
    for band in range(bands):
        acc = np.zeros(sig_t.shape[1], dtype=np.uint64)
        for p in range(band * rows, (band + 1) * rows):
            acc ^= sig_t[p]
            acc *= _BAND_MUL
        keys[band] = _fmix64(acc)
    return keys


@functools.lru_cache(maxsize=16)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's own affine32 permutation parameters ``(a, b)``, two uint32 arrays of ``num_perm``."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return np.asarray(a, dtype=np.uint32), np.asarray(b, dtype=np.uint32)


@functools.lru_cache(maxsize=16)
def _bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(b, r)``: the bands and values per band ``datasketch.MinHashLSH`` chooses for this threshold.

    Where its optimiser wants a single band (thresholds near 1 for the number of permutations, 1.0
    always), which ``MinHashLSH`` refuses, two bands of half the permutations: any pair that one band of
    all of them would find, and more.
    """
    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    except ValueError:
        lsh = MinHashLSH(num_perm=num_perm, params=(2, num_perm // 2))
    return lsh.b, lsh.r


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
