"""Leakage guard: drop synthetic rows that copy a held-out (validation or test) row.

A synthetic row *leaks* when its prompt or its answer is, after :func:`finetune.dedup.normalise`, equal
to, or a MinHash near-duplicate of, any user turn or answer of any ``validation``/``test`` row of the
reference dataset version(s): estimated Jaccard similarity of the word-5-shingle sets ``>= threshold``
(default: the reference spec's ``cleaning.dedup_threshold``, 0.85 unless set; the lowest of several
references). Signatures, shingles and LSH bands are exactly :mod:`finetune.dedup`'s (equal to
datasketch's ``MinHash``/``MinHashLSH``, Broder 1997); every LSH candidate is checked against the full
signature, as :func:`finetune.dedup.deduplicate` does, and texts of at most ``shingle_words`` words are
matched exactly only (as there). Unlike :func:`~finetune.dedup.deduplicate`, synthetic texts are only
compared with reference texts, never with each other, so nothing is dropped transitively.

Why: a synthetic answer generated from real seeds can reproduce a real held-out prompt or answer (the
generator saw it in its seed, or in its pre-training); training on it would inflate held-out metrics.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

from finetune import dedup, minhash
from finetune.neardup import exact_keys

HELD_OUT = ("validation", "test")


def row_texts(row: dict) -> list[str]:
    """The user turns and answers of one dataset row, any format (sft ``messages``; preference ``prompt``,
    ``chosen``, ``rejected``; kto ``prompt``, ``completion``); system turns are left out."""
    out = []
    for col in ("messages", "prompt", "chosen", "rejected", "completion"):
        for m in row.get(col) or []:
            if m.get("role") != "system" and (m.get("content") or "").strip():
                out.append(m["content"])
    return out


def reference_rows(version_rows: Iterable[dict], splits: Sequence[str] = HELD_OUT) -> list[dict]:
    """The ``splits`` rows of each dataset version (registry rows with ``path``)."""
    rows = []
    for v in version_rows:
        for split in splits:
            path = Path(v["path"]) / "data" / f"{split}.parquet"
            if path.exists():
                rows.extend(pq.read_table(path).to_pylist())
    return rows


def spec_threshold(version_rows: Iterable[dict], default: float = 0.85) -> float:
    """The lowest ``cleaning.dedup_threshold`` of the versions' specs (``default`` where none is recorded)."""
    found = []
    for v in version_rows:
        try:
            spec = yaml.safe_load(v.get("spec_yaml") or "") or {}
            found.append(float(spec.get("cleaning", {}).get("dedup_threshold", default)))
        except (yaml.YAMLError, AttributeError, TypeError, ValueError):
            found.append(default)
    return min(found) if found else default


@dataclass
class LeakageReport:
    """``checked`` rows, ``dropped`` rows, and why: ``exact`` (a text equal after normalisation) and
    ``near`` (a MinHash near-duplicate); ``by_part`` counts dropped rows by ``prompt``/``response``
    (a row leaking in both counts in both)."""

    checked: int = 0
    dropped: int = 0
    exact: int = 0
    near: int = 0
    by_part: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "response": 0})


class LeakageGuard:
    """An index of reference texts; :meth:`leaks` says which texts are equal or near-duplicate to one.

    ``texts``: the held-out texts (n strings). ``threshold`` in (0, 1]. Memory: 4 * num_perm bytes per long
    reference text plus ``bands`` dict entries (about 1 KB a text in all). Raises ValueError for a bad
    threshold."""

    def __init__(self, texts: Sequence[str], threshold: float = 0.85, num_perm: int = 128, shingle_words: int = 5,
                 seed: int = 1) -> None:
        self.config = dedup.DedupConfig(threshold=threshold, num_perm=num_perm, shingle_words=shingle_words, seed=seed)
        self.bands, self.rows = minhash._bands(threshold, num_perm)
        self.perm = minhash._permutations(num_perm, seed)
        keys, _, sig, band_keys = self._hash(list(texts))
        self.exact = set(keys.tolist())
        self.sig = sig  # (L, num_perm) of long reference texts
        self.index: dict[tuple[int, int], list[int]] = defaultdict(list)
        for b in range(band_keys.shape[0]):
            for j, k in enumerate(band_keys[b].tolist()):
                self.index[b, k].append(j)
        self.size = len(texts)

    def _hash(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Exact keys (n,), shingle counts (n,), signatures of the long texts (L, num_perm) and their band
        keys (bands, L); ``long`` texts are those with shingles."""
        key, n_shingles, shingle_hash = exact_keys(texts, self.config.shingle_words)
        long = n_shingles > 0
        if not long.any():
            return (key, n_shingles, np.empty((0, self.config.num_perm), np.uint32),
                    np.empty((self.bands, 0), np.uint64))
        sig_t = minhash._minhash(shingle_hash, n_shingles[long], *self.perm)
        return key, n_shingles, np.ascontiguousarray(sig_t.T), minhash._band_keys(sig_t, self.bands, self.rows)

    def leaks(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(exact, near)`` bool arrays (n,): the text equals a reference text after normalisation /
        is a near-duplicate (estimated Jaccard ``>= threshold``) of one."""
        texts = [t or "" for t in texts]
        n = len(texts)
        exact = np.zeros(n, bool)
        near = np.zeros(n, bool)
        if not n:
            return exact, near
        key, n_shingles, sig, band_keys = self._hash(texts)
        exact[:] = [k in self.exact for k in key.tolist()]
        long_rows = np.flatnonzero(n_shingles > 0)
        need = int(np.ceil(self.config.threshold * self.config.num_perm - 1e-9))
        for j, row in enumerate(long_rows.tolist()):
            if exact[row]:
                continue
            candidates = {r for b in range(self.bands) for r in self.index.get((b, int(band_keys[b, j])), ())}
            if candidates:
                equal = np.count_nonzero(self.sig[sorted(candidates)] == sig[j], axis=1)
                near[row] = bool((equal >= need).any())
        return exact, near


def filter_rows(rows: list[dict], guard: LeakageGuard) -> tuple[list[dict], LeakageReport]:
    """The synthetic ``rows`` (sft ``messages``: a user prompt and an assistant answer) that do not leak,
    in order, and the :class:`LeakageReport`. A row is dropped when its prompt (user turns) or its answer
    leaks (see the module doc)."""
    report = LeakageReport(checked=len(rows))
    if not rows:
        return [], report
    prompts = ["\n".join(m["content"] for m in r["messages"] if m["role"] == "user") for r in rows]
    answers = ["\n".join(m["content"] for m in r["messages"] if m["role"] == "assistant") for r in rows]
    pe, pn = guard.leaks(prompts)
    re_, rn = guard.leaks(answers)
    drop = pe | pn | re_ | rn
    report.dropped = int(drop.sum())
    report.exact = int((drop & (pe | re_)).sum())
    report.near = report.dropped - report.exact
    report.by_part = {"prompt": int((pe | pn).sum()), "response": int((re_ | rn).sum())}
    return [r for r, d in zip(rows, drop.tolist()) if not d], report
