"""Compiled loops (numba) for the hot paths of duplicate detection: hashing a batch's bytes into words,
text keys and shingle hashes, MinHash over the shingles, and the Bloom filters of the key indexes' disk runs.

Each kernel computes exactly what :mod:`finetune.minhash` defines (the scalar reference forms
``minhash._word_hash``, ``_sequence_hash``, ``shingle_hash32``, ``_text_key``, and datasketch's
``MinHash`` with scheme ``affine32``), in one pass over the data instead of a dozen numpy passes, with
integer arithmetic that wraps like numpy's (uint32 and uint64). ``tests/test_dedup.py`` checks them against
those forms and against datasketch's objects on real texts.

The kernels are compiled on first use (about 1.5 s) and cached on disk by numba (``cache=True``: beside this
module, or numba's per-user cache folder where that is read-only); they release the GIL (``nogil``), so the
build's prepare threads run them in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["F32", "F64", "bloom_add", "bloom_maybe", "find_in_blocks", "fingerprint_batch", "minhash_signatures"]

_M32 = np.uint64(0xFFFFFFFF)

F64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(33), np.uint64(0xC4CEB9FE1A85EC53), np.uint64(33))
F32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
"""MurmurHash3's finalizer constants ``(s1, m1, s2, m2, s3)`` (Appleby, MurmurHash3.cpp ``fmix64``/``fmix32``),
for 64- and 32-bit words; :func:`finetune.minhash.fmix` applies them to arrays."""


@njit(cache=True, nogil=True, inline="always")
def _fmix64(h):
    s1, m1, s2, m2, s3 = F64
    h ^= h >> s1
    h *= m1
    h ^= h >> s2
    h *= m2
    h ^= h >> s3
    return h


@njit(cache=True, nogil=True, inline="always")
def _fmix32(h):
    s1, m1, s2, m2, s3 = F32  # numba widens uint32 products: each is cut back to 32 bits
    h ^= h >> s1
    h = np.uint32(h * m1)
    h ^= h >> s2
    h = np.uint32(h * m2)
    h ^= h >> s3
    return np.uint32(h)


@njit(cache=True, nogil=True)
def _fingerprint_kernel(buf, text_start, k, base_a, base_b, base_r, base_s):  # pragma: no cover - compiled
    n = len(text_start)
    nb = len(buf)
    words = np.empty(nb // 2 + 2, np.uint64)  # one text's word hashes (a word holds 1+ bytes, then a space)
    shingles = np.empty(nb // 2 + 2, np.uint32)
    n_words = np.zeros(n, np.int64)
    n_shingles = np.zeros(n, np.int64)
    key1 = np.zeros(n, np.uint64)
    key2 = np.zeros(n, np.uint64)
    r_pow = np.empty(k, np.uint64)
    p = np.uint64(1)
    for m in range(k):
        r_pow[m] = p
        p = p * base_r
    s = 0
    for t in range(n):
        lo = text_start[t]
        hi = text_start[t + 1] if t + 1 < n else nb
        w = 0
        in_word = False
        ha = np.uint64(0)
        hb = np.uint64(0)
        pa = np.uint64(1)
        pb = np.uint64(1)
        for i in range(lo, hi + 1):
            space = True
            c = np.uint8(0)
            if i < hi:
                c = buf[i]
                if c >= 65 and c <= 90:  # ASCII casefold is lower-casing
                    c += 32
                # str.split's ASCII whitespace: \t \n \v \f \r \x1c-\x1f and space
                space = c == 32 or (c >= 9 and c <= 13) or (c >= 28 and c <= 31)
            if space:
                if in_word:
                    words[w] = _fmix64((ha << np.uint64(32)) | hb)
                    w += 1
                    in_word = False
            else:
                if not in_word:
                    in_word = True
                    ha = np.uint64(0)
                    hb = np.uint64(0)
                    pa = np.uint64(1)
                    pb = np.uint64(1)
                cv = np.uint64(c) + np.uint64(1)
                ha = (ha + cv * pa) & _M32
                hb = (hb + cv * pb) & _M32
                pa = (pa * base_a) & _M32
                pb = (pb * base_b) & _M32
        n_words[t] = w
        h1 = np.uint64(0)
        h2 = np.uint64(0)
        p1 = np.uint64(1)
        p2 = np.uint64(1)
        for j in range(w):
            h1 += words[j] * p1
            h2 += words[j] * p2
            p1 *= base_r
            p2 *= base_s
        key1[t] = h1
        key2[t] = h2
        if w > k:
            n_shingles[t] = w - k + 1
            for j in range(w - k + 1):
                h = np.uint64(0)
                for m in range(k):
                    h += words[j + m] * r_pow[m]
                shingles[s] = np.uint32(h >> np.uint64(32))
                s += 1
    return key1, key2, n_words, n_shingles, shingles[:s].copy()


def fingerprint_batch(buf: np.ndarray, text_start: np.ndarray, k: int, bases: tuple[int, int, int, int],
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Word, text and shingle hashes of a batch of texts already normalised at the byte level but for ASCII
    case and whitespace.

    ``buf``: uint8, the texts' UTF-8 bytes, each text followed by a newline (the last one may lack it);
    ``text_start``: int64 (n,), each text's first byte. ``bases``: ``(a, b, r, s)``, the odd bases of the
    polynomial hashes (two over a word's ``byte + 1`` values mod 2**32, two over a text's word hashes mod
    2**64). A word is a maximal run of bytes that are not ASCII whitespace (``str.split``'s), lower-cased
    in ASCII; its hash is ``fmix64(ha << 32 | hb)`` (MurmurHash3's 64-bit finalizer).

    Returns ``key1``, ``key2`` (uint64 (n,): ``sum(word_hash[m] * r**m)`` and the same with ``s``, mod
    2**64), ``n_words`` (int64 (n,)), ``n_shingles`` (int64 (n,): ``n_words - k + 1`` for texts of more
    than ``k`` words, else 0) and ``shingle_hash`` (uint32, for each shingle of those texts, text by text:
    the top 32 bits of ``sum(word_hash[j + m] * r**m for m < k)`` mod 2**64)."""
    a, b, r, s = (np.uint64(x) for x in bases)
    return _fingerprint_kernel(np.ascontiguousarray(buf, dtype=np.uint8),
                               np.ascontiguousarray(text_start, dtype=np.int64), int(k), a, b, r, s)


@njit(cache=True, nogil=True)
def _minhash_kernel(hv, n_shingles, a, b):  # pragma: no cover - compiled
    perms = len(a)
    out = np.empty((perms, len(n_shingles)), np.uint32)
    low = np.empty(perms, np.uint32)
    pos = 0
    for t in range(len(n_shingles)):
        low[:] = np.uint32(0xFFFFFFFF)
        for q in range(pos, pos + n_shingles[t]):
            h = _fmix32(hv[q])  # datasketch's affine32 pre-mix: MurmurHash3's 32-bit finalizer
            for p in range(perms):
                v = np.uint32(np.uint32(h * a[p]) + b[p])
                low[p] = min(low[p], v)  # branch-free: LLVM vectorises the loop over p (6x the conditional store)
        pos += n_shingles[t]
        for p in range(perms):
            out[p, t] = low[p]
    return out


def minhash_signatures(hv: np.ndarray, n_shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signatures, transposed: uint32 (num_perm, texts).

    ``hv``: uint32 shingle hashes, text after text, ``n_shingles`` (int64, all > 0) of each; ``a``, ``b``:
    uint32 (num_perm,), datasketch's affine32 permutations. Column ``t`` is ``min over the text's shingles
    of (a_p * fmix32(h) + b_p) mod 2**32``, i.e. ``datasketch.MinHash(num_perm, seed).update_batch`` with a
    hash function returning ``hv``. Raises ``ValueError`` where ``n_shingles`` does not sum to ``len(hv)``."""
    n_shingles = np.ascontiguousarray(n_shingles, dtype=np.int64)
    if int(n_shingles.sum()) != len(hv) or (len(n_shingles) and int(n_shingles.min()) <= 0):
        raise ValueError("n_shingles must be positive and sum to the number of shingle hashes")
    return _minhash_kernel(np.ascontiguousarray(hv, dtype=np.uint32), n_shingles,
                           np.ascontiguousarray(a, dtype=np.uint32), np.ascontiguousarray(b, dtype=np.uint32))


@njit(cache=True, nogil=True, inline="always")
def _bloom_bit(key, probe, words):
    """The word index and the bit mask, in a filter of ``words`` uint64 words, of one key's probe."""
    h = key * probe
    return ((h >> np.uint64(32)) * words) >> np.uint64(32), np.uint64(1) << ((h >> np.uint64(26)) & np.uint64(63))


@njit(cache=True, nogil=True)
def _bloom_add_kernel(bits, keys, probes):  # pragma: no cover - compiled
    words = np.uint64(bits.shape[1])
    for b in range(keys.shape[0]):
        for i in range(keys.shape[1]):
            for p in range(len(probes)):
                word, mask = _bloom_bit(keys[b, i], probes[p], words)
                bits[b, word] |= mask


@njit(cache=True, nogil=True)
def _bloom_maybe_kernel(bits, blocks, keys, probes, first):  # pragma: no cover - compiled
    words = np.uint64(bits.shape[1])
    out = np.ones(len(keys), np.bool_)
    for i in range(len(keys)):
        b = blocks[i] - first
        if b < 0:
            out[i] = False
            continue
        if b >= bits.shape[0]:
            raise IndexError("a key's block lies beyond the filter")
        for p in range(len(probes)):
            word, mask = _bloom_bit(keys[i], probes[p], words)
            if not bits[b, word] & mask:
                out[i] = False
                break
    return out


def bloom_add(bits: np.ndarray, keys: np.ndarray, probes: np.ndarray) -> None:
    """Set, in the blocked Bloom filter ``bits`` (uint64, ``(m, w)``: ``m`` blocks of ``w`` words, ``0 < w <
    2**32``), one bit per key of block ``b`` (``keys[b]``: uint64, ``(m, k)``) and probe (``probes``: uint64 odd
    multipliers), in the block's own words: with ``h = key * probe mod 2**64`` (multiply-shift hashing,
    Dietzfelbinger et al. 1997), bit ``(h >> 26) & 63`` of word ``((h >> 32) * w) >> 32`` (Lemire's
    multiply-high range reduction, "A fast alternative to the modulo reduction", 2016: any block size). Modifies
    ``bits`` in place. Raises ``ValueError`` for blocks of no or 2**32 words or more, or shapes that differ in
    ``m``."""
    _check_filter(bits)
    if bits.shape[0] != keys.shape[0]:
        raise ValueError(f"{keys.shape[0]} blocks of keys for a filter of {bits.shape[0]} blocks")
    _bloom_add_kernel(bits, np.ascontiguousarray(keys, dtype=np.uint64),
                      np.ascontiguousarray(probes, dtype=np.uint64))


def _check_filter(bits: np.ndarray) -> None:
    if bits.ndim != 2 or not 0 < bits.shape[1] < 2**32:
        raise ValueError(f"a blocked Bloom filter takes (blocks, 1 to 2**32 - 1 words), not {bits.shape}")


def bloom_maybe(bits: np.ndarray, blocks: np.ndarray, keys: np.ndarray, probes: np.ndarray,
                first: int = 0) -> np.ndarray:
    """Bool (n,): whether all of each key's bits (as :func:`bloom_add` sets them) are set in its block
    ``blocks[i] - first`` of ``bits`` (which may be a read-only window of a filter starting at block ``first``),
    i.e. whether the key may have been added there (False: it was not; also for a block before ``first``, e.g.
    ``-1`` for a key below every block). Stops at a key's first unset bit. Raises ``ValueError`` as
    :func:`bloom_add` does, ``IndexError`` for a block beyond ``bits``."""
    _check_filter(bits)
    return _bloom_maybe_kernel(bits, np.ascontiguousarray(blocks, dtype=np.int64),
                               np.ascontiguousarray(keys, dtype=np.uint64),
                               np.ascontiguousarray(probes, dtype=np.uint64), np.int64(first))


@njit(cache=True, nogil=True)
def _find_in_blocks_kernel(keys, blocks, needles, block):  # pragma: no cover - compiled
    out = np.full(len(needles), -1, np.int64)
    for i in range(len(needles)):
        lo = blocks[i] * block
        hi = lo + block
        while lo < hi:  # the first position in the block whose key is not below the needle
            mid = (lo + hi) >> 1
            if keys[mid] < needles[i]:
                lo = mid + 1
            else:
                hi = mid
        if lo < blocks[i] * block + block and keys[lo] == needles[i]:
            out[i] = lo
    return out


def find_in_blocks(keys: np.ndarray, blocks: np.ndarray, needles: np.ndarray, block: int) -> np.ndarray:
    """int64 (n,): the position in ``keys`` (uint64, sorted, whole blocks of ``block`` keys; may be a read-only
    memory map) of each needle (uint64, (n,)) within its block ``blocks[i]`` (binary search over the block's
    keys, so only the cache lines it compares are read), ``-1`` where the block does not hold it. Raises
    ``IndexError`` for a block beyond ``keys``."""
    blocks = np.ascontiguousarray(blocks, dtype=np.int64)
    if len(blocks) and (blocks.min() < 0 or (blocks.max() + 1) * block > len(keys)):
        raise IndexError("a needle's block lies outside the keys")
    return _find_in_blocks_kernel(keys, blocks, np.ascontiguousarray(needles, dtype=np.uint64), np.int64(block))
