"""Streaming exact and near-duplicate clusters of texts, with compact per-text state.

:class:`StreamingClusters` sees texts batch after batch, in stream order, and gives each a cluster id:

* **exact**: a text whose :func:`finetune.dedup.normalise`-d form equals an earlier text's gets that
  text's cluster (matched by :mod:`finetune.minhash`'s 64-bit word-sequence fingerprints and word count,
  mixed into one 64-bit key);
* **near**: a new text of more than ``shingle_words`` words gets the MinHash signature and LSH band keys
  :func:`finetune.dedup.deduplicate` computes (same shingles, permutations and bands). It joins the
  cluster of the earliest earlier text it shares a band with (greedy, no union-find and no signature
  kept: the Jaccard estimate is *not* re-checked against the full signature, so a pair sharing a band at
  a similarity below the threshold -- probability ``1 - (1 - s**r)**b``, about 0.5 % at s = 0.5 and
  20 % at s = 0.7 with 11 bands of 11 -- is treated as near duplicates); otherwise it starts a cluster.

Every pair of texts that share a band key is also recorded as a *link* between their clusters
(:meth:`StreamingClusters.link_batches`), so a union-find over links joins everything LSH could call similar:
splits built on that closure never separate two texts :func:`finetune.dedup.deduplicate` would join.

State, O(distinct texts), not O(text size): one 12-byte entry per distinct text (exact key) and one per
new band key (up to ``bands`` a text, 11 at the default threshold) in :class:`finetune.keyindex.KeyIndex`
-- about 150 bytes a distinct long text -- plus 16 bytes a link (:class:`finetune.arraylog.ArrayLog`: in a
file of the key indexes' folder when they have one). Signatures live only for the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from finetune import dedup, minhash
from finetune.arraylog import ArrayLog
from finetune.keyindex import KeyIndex, mix64

__all__ = ["Fingerprints", "StreamingClusters", "exact_keys"]

_BAND_MUL = np.uint64(0x100000001B3)


def _unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """``np.unique(pairs, axis=0)`` for int64 (m, 2) pairs of cluster ids in [0, 2**32): each pair packed
    into one uint64 (first id in the high half, so the packed order is the rows' lexicographic order), which
    numpy sorts as numbers instead of as 16-byte rows (about 7x faster)."""
    packed = np.unique((pairs[:, 0].astype(np.uint64) << np.uint64(32)) | pairs[:, 1].astype(np.uint64))
    return np.stack([(packed >> np.uint64(32)).astype(np.int64), (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)],
                    axis=1)


def exact_keys(texts: Sequence[str] | pa.Array, shingle_words: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(key, n_shingles, shingle_hash)`` of ``texts`` (n strings, or an Arrow string array whose nulls read
    as empty texts): ``key`` uint64 (n,) equal exactly when the :func:`finetune.dedup.normalise`-d texts are
    (up to a 2**-64 collision), ``n_shingles`` int64 (n,) and the shingle hashes (uint32, text by text) that
    :func:`finetune.dedup.deduplicate` uses. Texts are hashed in pieces of about 2 MB (the hashing needs
    some 30 bytes of scratch a byte of text); an Arrow array's bytes are read from its buffers, without a
    Python string per text."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if isinstance(texts, pa.Array):
        pieces = (texts.slice(a, b - a) for a, b in minhash.byte_pieces(texts, minhash._CHUNK_BYTES))
    else:
        texts = list(texts)
        bounds = minhash.pieces(np.fromiter(map(len, texts), np.int64, len(texts)), minhash._CHUNK_BYTES)
        pieces = (texts[a:b] for a, b in bounds)
    keys, counts, hashes = [], [], []
    for piece in pieces:
        key1, key2, n_words, n_shingles, shingle_hash = minhash._fingerprints(piece, shingle_words)
        keys.append(mix64(key1, key2, n_words))
        counts.append(n_shingles)
        hashes.append(shingle_hash)
    if not keys:
        return np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.uint32)
    return np.concatenate(keys), np.concatenate(counts), np.concatenate(hashes)


@dataclass(frozen=True)
class Fingerprints:
    """What :meth:`StreamingClusters.fingerprints` computes for a batch of n texts: ``key`` uint64 (n,) exact
    keys; ``uniq``/``first``/``inverse`` as :func:`numpy.unique` gives them for ``key``; ``long_rows`` int64
    (L,) ascending batch positions of the distinct texts with shingles; ``band_keys`` uint64 (bands, L)."""

    key: np.ndarray
    uniq: np.ndarray
    first: np.ndarray
    inverse: np.ndarray
    long_rows: np.ndarray
    band_keys: np.ndarray


class StreamingClusters:
    """Cluster ids for a stream of texts (see the module doc). Ids are dense ints from 0 in order of the
    cluster's first text. ``config``: :class:`finetune.dedup.DedupConfig`. ``keep_links``: record links
    between clusters that share band keys (needed for splits). ``folder``, ``memory_keys``: where the key
    indexes put their runs beyond ``memory_keys`` keys (:class:`finetune.keyindex.KeyIndex`; None: all in
    memory). Raises ``ValueError`` for a bad config."""

    def __init__(self, config: dedup.DedupConfig = dedup.DedupConfig(), keep_links: bool = False,
                 folder: Path | None = None, memory_keys: int = 1 << 20) -> None:
        self.config = config
        self.bands, self.rows = minhash._bands(config.threshold, config.num_perm)
        self.perm = minhash._permutations(config.num_perm, config.seed)
        self.salt = (np.arange(1, self.bands + 1, dtype=np.uint64) * _BAND_MUL)[:, None]
        self.exact = KeyIndex(folder, memory_keys)
        self.band_index = KeyIndex(folder, memory_keys)
        self.next_id = 0
        self.keep_links = keep_links
        # pairs, flattened; in a file of `folder` when given and links are kept
        self._links = ArrayLog(folder if keep_links else None, np.int64)

    def link_batches(self):
        """The links recorded by each :meth:`assign` call that recorded any, in turn: int64 (m, 2) pairs of
        cluster ids whose texts share an LSH band key, read back one call's at a time."""
        for i in range(len(self._links)):
            yield self._links[i].reshape(-1, 2)

    @property
    def nbytes(self) -> int:
        """Memory held by the cross-batch state, in bytes."""
        return self.exact.nbytes + self.band_index.nbytes + self._links.nbytes

    @property
    def disk_bytes(self) -> int:
        """Bytes on disk: the key indexes' runs and the links."""
        return self.exact.disk_bytes + self.band_index.disk_bytes + self._links.disk_bytes

    def close(self) -> None:
        """Delete the key indexes' disk runs."""
        self.exact.close()
        self.band_index.close()

    def fingerprints(self, texts: Sequence[str] | pa.Array) -> Fingerprints:
        """The batch's exact keys and, for each distinct text of more than ``shingle_words`` words, its LSH
        band keys. Reads no state, so it may run in another thread while :meth:`assign` handles the batch
        before. Raises ``TypeError`` for a non-str."""
        key, n_shingles, shingle_hash = exact_keys(texts, self.config.shingle_words)
        uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        long = n_shingles[first] > 0
        long_rows = np.sort(first[long])  # batch positions of the long distinct texts, ascending
        if len(long_rows):
            take = np.zeros(len(key), dtype=bool)
            take[long_rows] = True
            hv = shingle_hash[np.repeat(take, n_shingles)]
            sig_t = minhash._minhash(hv, n_shingles[long_rows], *self.perm)
            band_keys = minhash._fmix64(minhash._band_keys(sig_t, self.bands, self.rows) ^ self.salt)
        else:
            band_keys = np.empty((self.bands, 0), dtype=np.uint64)
        return Fingerprints(key, uniq, first, inverse.ravel(), long_rows, band_keys)

    def assign(self, texts: Sequence[str] | Fingerprints) -> tuple[np.ndarray, np.ndarray]:
        """``(cluster, key)`` for a batch of texts in stream order (or their :meth:`fingerprints`): int64
        cluster ids and uint64 exact keys, one per text. Later calls see this batch as earlier texts.
        Raises ``TypeError`` for a non-str."""
        fp = texts if isinstance(texts, Fingerprints) else self.fingerprints(texts)
        if len(fp.key) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint64)
        cluster_u = self.exact.get(fp.uniq)
        new_u = np.flatnonzero(cluster_u < 0)
        new_u = new_u[np.argsort(fp.first[new_u], kind="stable")]  # new distinct texts in stream order
        if len(new_u):
            rows = fp.first[new_u]
            column = np.searchsorted(fp.long_rows, rows)
            column[column == len(fp.long_rows)] = 0
            is_long = fp.long_rows[column] == rows if len(fp.long_rows) else np.zeros(len(rows), dtype=bool)
            keys = fp.band_keys[:, column[is_long]]
            cluster_u[new_u] = self._assign_new(is_long, keys)
            self.exact.add(fp.uniq[new_u], cluster_u[new_u])
        return cluster_u[fp.inverse], fp.key

    def _assign_new(self, long: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Cluster ids of the batch's new distinct texts (in stream order); ``long`` marks those with band
        keys, ``keys`` (bands, long ones) holds them."""
        m = len(long)
        cluster = np.full(m, -1, dtype=np.int64)
        li = np.flatnonzero(long)
        follow = np.arange(m)
        if len(li):
            hits = self.band_index.get(keys).reshape(keys.shape)  # earlier batches' clusters, -1 none
            hit_any = (hits >= 0).any(axis=0)
            best = np.where(hits >= 0, hits, np.iinfo(np.int64).max).min(axis=0)
            cluster[li[hit_any]] = best[hit_any]
            # within the batch: the first earlier text holding the same band key
            first_member = np.empty_like(hits)
            for b in range(self.bands):
                _, fb, inv = np.unique(keys[b], return_index=True, return_inverse=True)
                first_member[b] = fb[inv.ravel()]
            prior = np.where(first_member < np.arange(len(li)), first_member, len(li)).min(axis=0)
            chained = ~hit_any & (prior < len(li))
            follow[li[chained]] = li[prior[chained]]
            new_keys = (hits < 0) & (first_member == np.arange(len(li)))
        roots = cluster < 0
        roots &= follow == np.arange(m)
        cluster[roots] = self.next_id + np.arange(int(roots.sum()))
        self.next_id += int(roots.sum())
        while True:  # follow chains to a text with a cluster (pointer jumping; follow[j] < j)
            nxt = follow[follow]
            if np.array_equal(nxt, follow):
                break
            follow = nxt
        cluster = np.where(cluster >= 0, cluster, cluster[follow])
        if len(li):
            cl = cluster[li]
            self.band_index.add(keys[new_keys], np.broadcast_to(cl, keys.shape)[new_keys])
            if self.keep_links:
                other = np.where(hits >= 0, hits, cl[first_member])
                pairs = np.stack([np.broadcast_to(cl, keys.shape).ravel(), other.ravel()], axis=1)
                pairs = pairs[pairs[:, 0] != pairs[:, 1]]
                if len(pairs):
                    self._links.append(_unique_pairs(pairs))
        return cluster
