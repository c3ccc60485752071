"""Drift: has the distribution of prompt embeddings shifted between two time windows?

Test: the kernel two-sample test of A. Gretton, K. M. Borgwardt, M. J. Rasch, B. Schölkopf &
A. Smola (2012), "A Kernel Two-Sample Test", JMLR 13:723–773.

* Statistic: the unbiased estimate of the squared maximum mean discrepancy (their eq. 3, Lemma 6)
  for samples ``X`` (m rows) and ``Y`` (n rows)::

      MMD²_u = Σ_{i≠j} k(x_i,x_j) / (m(m−1)) + Σ_{i≠j} k(y_i,y_j) / (n(n−1)) − 2 Σ_{i,j} k(x_i,y_j) / (mn)

  with the Gaussian (RBF) kernel ``k(x, y) = exp(−‖x − y‖² / (2σ²))``. Units: kernel units
  (dimensionless, in [−1, 2]; 0 when the distributions are equal, in expectation).
* Bandwidth σ: the median heuristic — the median Euclidean distance between distinct points of the
  pooled sample (Gretton et al. 2012, §8; discussed by Garreau, Jitkrittum & Kanagawa 2017,
  arXiv:1707.07269).
* p-value: a permutation test (their §5 suggests bootstrap/permutation of the pooled sample):
  ``P`` random relabellings of the pooled sample, ``p = (1 + #{MMD²_perm ≥ MMD²_obs}) / (1 + P)``
  (B. Phipson & G. K. Smyth 2010, "Permutation p-values should never be zero", SAGMB 9:39).
  Prompts of one conversation are not independent (the turns of one OASST1 tree sit in the same days
  and topic), so a plain permutation of prompts rejects far too often between windows of one
  distribution. With ``groups`` (a conversation id per prompt) the permutation moves whole blocks —
  a conversation's prompts within one window — between the windows (a block / cluster permutation
  test: exchangeability is assumed of conversations, not prompts; e.g. A. C. Davison & D. V.
  Hinkley 1997, *Bootstrap Methods and their Application*, §4.3 and §3.8 on clustered data). The
  windows' sizes then vary between permutations; the statistic uses each permutation's own sizes.
* Cost: each window is subsampled (seeded) to at most ``max_per_window`` prompts; the pooled kernel
  matrix is computed once (``N² `` floats, N ≤ 2·max) and all permutations are evaluated together as
  one ``(N, N) @ (N, P)`` product.

Windows are half-open UTC time ranges ``[start, end)`` on the interactions' ``occurred_at``; a
window's sample is the prompt texts (last user messages) of its answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist

from feedback.topics import TopicsError
from feedback.topics.config import TopicsSettings
from feedback.topics.embed import Embedder, prompt_text_sql


@dataclass(frozen=True)
class MMDResult:
    """``mmd2`` (unbiased MMD², kernel units), ``p_value`` (permutation), ``sigma`` (RBF bandwidth,
    Euclidean units of the embeddings), ``m``/``n`` (sizes used after subsampling), ``m_total``/
    ``n_total`` (sizes before), ``permutations``."""

    mmd2: float
    p_value: float
    sigma: float
    m: int
    n: int
    m_total: int
    n_total: int
    permutations: int


def median_bandwidth(Z: np.ndarray) -> float:
    """Median of the pairwise Euclidean distances of the rows of ``Z`` (``(N, d)``); 1.0 if all coincide."""
    d = pdist(Z.astype(np.float64))
    med = float(np.median(d[d > 0])) if np.any(d > 0) else 1.0
    return med


def _gram(Z: np.ndarray, sigma: float) -> np.ndarray:
    Z = Z.astype(np.float64)
    sq = (Z * Z).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * Z @ Z.T, 0.0)
    return np.exp(-d2 / (2.0 * sigma * sigma))


def mmd_test(X: np.ndarray, Y: np.ndarray, permutations: int = 500, max_per_window: int | None = 1000,
             seed: int = 0, sigma: float | None = None, groups_x: Sequence | None = None,
             groups_y: Sequence | None = None) -> MMDResult:
    """Two-sample MMD test of ``X`` (``(m, d)``) against ``Y`` (``(n, d)``); see the module doc.
    ``groups_x``/``groups_y`` (one label per row, e.g. conversation ids) make the permutation move
    whole blocks (a label within one sample); None: every row is its own block.

    Raises TopicsError when either sample has fewer than 2 rows, the dimensions differ or a groups
    sequence does not match its sample's length."""
    if len(X) < 2 or len(Y) < 2:
        raise TopicsError(f"each window needs at least 2 prompts, got {len(X)} and {len(Y)}")
    if X.shape[1] != Y.shape[1]:
        raise TopicsError(f"dimension mismatch: {X.shape[1]} vs {Y.shape[1]}")
    for name, g, s in (("groups_x", groups_x, X), ("groups_y", groups_y, Y)):
        if g is not None and len(g) != len(s):
            raise TopicsError(f"{name} has {len(g)} labels for {len(s)} rows")
    rng = np.random.default_rng(seed)
    m_total, n_total = len(X), len(Y)
    gx = np.asarray([f"x:{g}" for g in groups_x]) if groups_x is not None else np.asarray([f"x#{i}" for i in range(m_total)])
    gy = np.asarray([f"y:{g}" for g in groups_y]) if groups_y is not None else np.asarray([f"y#{i}" for i in range(n_total)])
    if max_per_window and len(X) > max_per_window:
        keep = rng.choice(len(X), max_per_window, replace=False)
        X, gx = X[keep], gx[keep]
    if max_per_window and len(Y) > max_per_window:
        keep = rng.choice(len(Y), max_per_window, replace=False)
        Y, gy = Y[keep], gy[keep]
    m, n = len(X), len(Y)
    _, block = np.unique(np.r_[gx, gy], return_inverse=True)  # block index per pooled row
    blocks = int(block.max()) + 1
    blocks_x = len(np.unique(block[:m]))
    Z = np.vstack([X, Y])
    sigma = sigma or median_bandwidth(Z)
    K = _gram(Z, sigma)
    np.fill_diagonal(K, 0.0)
    total = K.sum()
    rows = K.sum(axis=1)

    def stat(W: np.ndarray) -> np.ndarray:
        """MMD²_u for each column of the 0/1 membership matrix ``W`` (``(N, P)``, 1 = first sample),
        with each column's own sample sizes."""
        mp = W.sum(axis=0)
        npp = N - mp
        sxx = np.einsum("ip,ip->p", W, K @ W)
        wr = W.T @ rows
        sxy = wr - sxx
        syy = total - 2.0 * wr + sxx
        with np.errstate(divide="ignore", invalid="ignore"):
            out = sxx / (mp * (mp - 1)) + syy / (npp * (npp - 1)) - 2.0 * sxy / (mp * npp)
        return np.where((mp >= 2) & (npp >= 2), out, -np.inf)  # a degenerate split never counts as extreme

    N = m + n
    observed = float(stat(np.r_[np.ones(m), np.zeros(n)][:, None])[0])
    exceed, done, chunk = 0, 0, 100
    while done < permutations:
        p = min(chunk, permutations - done)
        W = np.zeros((N, p))
        for j in range(p):
            first = rng.permutation(blocks)[:blocks_x]  # as many blocks as X had go to the first sample
            W[np.isin(block, first), j] = 1.0
        exceed += int(np.sum(stat(W) >= observed))
        done += p
    return MMDResult(observed, (1 + exceed) / (1 + permutations), float(sigma), m, n, m_total, n_total, permutations)


def window_groups(con, start: datetime | None, end: datetime | None, where: str = "TRUE",
                  params: list | None = None) -> tuple[list[str], list[str]]:
    """:func:`window_texts` and, per text, the conversation it belongs to (the smallest conversation
    id among its answers in the window): the blocks of the permutation test."""
    clauses, args = [where], list(params or [])
    if start is not None:
        clauses.append("i.occurred_at >= ?")
        args.append(start)
    if end is not None:
        clauses.append("i.occurred_at < ?")
        args.append(end)
    rows = con.execute(f"""SELECT {prompt_text_sql('i')} AS t, min(i.conversation_id) FROM interactions i
                           WHERE {' AND '.join(clauses)} GROUP BY 1 ORDER BY 1""", args).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def window_texts(con, start: datetime | None, end: datetime | None, where: str = "TRUE", params: list | None = None) -> list[str]:
    """The distinct prompt texts of the answers with ``start <= occurred_at < end`` (None:
    unbounded) in ``where`` (a condition on interactions ``i``), sorted. Distinct: a prompt answered
    several times (sibling answers in OASST1, four models in Tulu, chosen/rejected in HH-RLHF) counts
    once, so the test compares what was asked, not how often it was answered — and exact ties, which
    inflate the within-window kernel sums of small windows, are avoided."""
    return window_groups(con, start, end, where, params)[0]


def drift_between(con, a: tuple[datetime | None, datetime | None], b: tuple[datetime | None, datetime | None],
                  embedder: Embedder | None = None, settings: TopicsSettings | None = None,
                  where: str = "TRUE", params: list | None = None) -> MMDResult:
    """MMD test of window ``a`` = (start, end) against window ``b`` (see :func:`mmd_test`).
    Raises TopicsError when a window has fewer than 2 prompts."""
    settings = settings or TopicsSettings()
    embedder = embedder or Embedder(settings)
    (xa, ga), (xb, gb) = window_groups(con, *a, where, params), window_groups(con, *b, where, params)
    if len(xa) < 2 or len(xb) < 2:
        raise TopicsError(f"window A has {len(xa)} prompts and window B {len(xb)}: each needs at least 2")
    return mmd_test(embedder.embed(xa), embedder.embed(xb), settings.drift_permutations,
                    settings.drift_max_per_window, settings.seed, groups_x=ga, groups_y=gb)


def drift_series(con, reference: tuple[datetime | None, datetime | None] | None = None, grain: str = "week",
                 embedder: Embedder | None = None, settings: TopicsSettings | None = None,
                 where: str = "TRUE", params: list | None = None, min_prompts: int = 20,
                 permutations: int = 200) -> pd.DataFrame:
    """Drift of each UTC ``grain`` window (``day`` or ``week``) with at least ``min_prompts`` answers
    against the ``reference`` window (default: the first such window, which is then left out of the
    series): columns ``window_start``, ``prompts`` (distinct prompt texts), ``mmd2``, ``p_value``,
    ``sigma``, ``drifted`` (p < 0.05). Raises TopicsError when the reference has < 2 prompts,
    ValueError on another grain."""
    if grain not in ("day", "week"):
        raise ValueError(f"grain must be day or week, got {grain!r}")
    settings = settings or TopicsSettings()
    embedder = embedder or Embedder(settings)
    windows = con.execute(f"""SELECT date_trunc('{grain}', i.occurred_at) AS w, count(DISTINCT {prompt_text_sql('i')}) AS c
                              FROM interactions i WHERE {where} GROUP BY 1 HAVING c >= ? ORDER BY 1""",
                          list(params or []) + [min_prompts]).fetchall()
    step = timedelta(days=1 if grain == "day" else 7)
    if reference is None:
        if not windows:
            raise TopicsError(f"no {grain} has {min_prompts} or more distinct prompts")
        reference, windows = (windows[0][0], windows[0][0] + step), windows[1:]
    ref, ref_groups = window_groups(con, *reference, where, params)
    if len(ref) < 2:
        raise TopicsError(f"the reference window has {len(ref)} prompts: it needs at least 2")
    R = embedder.embed(ref)
    out = []
    for start, count in windows:
        texts, groups = window_groups(con, start, start + step, where, params)
        r = mmd_test(R, embedder.embed(texts), permutations, settings.drift_max_per_window, settings.seed,
                     groups_x=ref_groups, groups_y=groups)
        out.append({"window_start": start, "prompts": count, "mmd2": r.mmd2, "p_value": r.p_value,
                    "sigma": r.sigma, "drifted": r.p_value < 0.05})
    return pd.DataFrame(out, columns=["window_start", "prompts", "mmd2", "p_value", "sigma", "drifted"])
