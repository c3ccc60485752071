"""Text fingerprints for duplicate detection: normalisation, exact keys, word-shingle hashes, MinHash
signatures and LSH band keys, exactly as ``datasketch`` defines them, computed in bulk.

Near duplicates are found with MinHash (Broder, "On the resemblance and containment of documents",
1997) over word shingles, indexed with banded locality-sensitive hashing (Leskovec, Rajaraman &
Ullman, *Mining of Massive Datasets*, ch. 3), as ``datasketch`` defines them
(https://ekzhu.com/datasketch/minhash.html, https://ekzhu.com/datasketch/lsh.html):

* the permutations are ``datasketch.MinHash(num_perm, seed)``'s own (scheme ``"affine32"``: the 32-bit
  shingle hash is pre-mixed with the MurmurHash3 finalizer, then ``a_k * h + b_k mod 2**32``);
* the band layout ``(b, r)`` is ``datasketch.MinHashLSH``'s optimiser's choice for the threshold.

datasketch's per-object path (``MinHash.bulk`` with ``sha1_hash32``) runs at about 4,000 conversation-sized
texts per second on one core. Here a batch of texts is normalised, split into words and hashed in one
compiled pass over its UTF-8 bytes (:func:`_fingerprints`, from Python strings or straight from an Arrow
array's buffers; :func:`finetune.kernels.fingerprint_batch`), and the permutations run over all of the
batch's shingles in one compiled loop (:func:`_minhash`; :func:`finetune.kernels.minhash_signatures`).
``tests/test_dedup.py`` checks the result against datasketch's own ``MinHash``/``MinHashLSH`` objects
(with :func:`shingle_hash32` as their ``hashfunc``) on real texts: equal signatures, equal decisions.
The deciding (which texts are duplicates) is :mod:`finetune.dedup`'s and :mod:`finetune.neardup`'s.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketch import MinHash, MinHashLSH

from finetune import kernels

__all__ = ["LSH_WEIGHTS", "byte_pieces", "normalise", "shingle_hash32", "string_buffers"]


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
_F64, _F32 = kernels.F64, kernels.F32
# Texts are processed in batches of about this many UTF-8 bytes.
_CHUNK_BYTES = 1 << 21
_BAND_MUL = np.uint64(0x100000001B3)


def normalise(text: str) -> str:
    """Casefold, collapse every run of whitespace (``str.split``'s, Unicode included) to one space, strip.

    The result is what exact matching compares and what shingles are cut from (its words are the
    space-separated pieces). :func:`deduplicate` computes the same thing on bytes in bulk.
    """
    return " ".join(text.casefold().split())



# ---------------------------------------------------------------------------------------------------
# hashing: scalar reference forms (for tests and datasketch's hashfunc) and the bulk form


def fmix(h: np.ndarray, constants: tuple) -> np.ndarray:
    """MurmurHash3's finalizer on an unsigned integer array (a bijection; arithmetic wraps): ``constants`` is
    ``(s1, m1, s2, m2, s3)`` of the array's dtype, :data:`_F64` or :data:`_F32`."""
    s1, m1, s2, m2, s3 = constants
    h = h ^ (h >> s1)
    h *= m1
    h ^= h >> s2
    h *= m2
    h ^= h >> s3
    return h


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer on a uint64 array."""
    return fmix(h, _F64)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer on a uint32 array: datasketch's affine32 pre-mix of an input hash."""
    return fmix(h, _F32)


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


def pieces(lengths: np.ndarray, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges over items of ``lengths`` (n,) holding about ``size`` units each (an item counts
    its length + 1; at least one item a range), for work whose scratch memory grows with the units at hand."""
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64) + 1)
    bounds, start = [], 0
    while start < len(ends):
        stop = max(start + 1, int(np.searchsorted(ends, (ends[start - 1] if start else 0) + size)))
        bounds.append((start, stop))
        start = stop
    return bounds


def byte_pieces(texts: pa.Array, size: int) -> list[tuple[int, int]]:
    """:func:`pieces` of an Arrow string array by UTF-8 bytes (nulls count 0)."""
    return pieces(pc.fill_null(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False), size)


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
    return kernels.fingerprint_batch(buf, text_start, k, (_A32, _B32, _R64, _S64))


def _minhash(hv: np.ndarray, n_shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signatures, transposed: uint32 of shape (num_perm, texts).

    ``hv``: shingle hashes, text after text, ``n_shingles`` (all > 0) of each. Column ``t`` equals
    ``datasketch.MinHash(num_perm, seed).update_batch`` of text ``t``'s shingles with a hash function
    returning ``hv``: ``min over shingles of (a_p * fmix32(h) + b_p) mod 2**32``.
    """
    return kernels.minhash_signatures(hv, n_shingles, a, b)


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

