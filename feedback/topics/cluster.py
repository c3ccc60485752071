"""Clustering of prompt embeddings: scikit-learn ``MiniBatchKMeans``, k chosen by silhouette.

Input: unit-norm embeddings ``X`` of shape ``(n, d)`` (one row per *distinct* prompt text, so a
prompt asked of four models weighs once). On unit vectors the squared Euclidean distance is
``2 − 2·cos``, so k-means here is spherical-ish k-means on cosine similarity.

Choice of k (documented rule): unless ``k`` is fixed, fit each candidate k of
``TopicsSettings.k_candidates`` (those < n) and keep the one with the highest mean silhouette
coefficient (Rousseeuw 1987, "Silhouettes: a graphical aid to the interpretation and validation of
cluster analysis", J. Comput. Appl. Math. 20:53–65) computed with the cosine metric on a seeded
subsample of ``silhouette_sample`` points (``sklearn.metrics.silhouette_score``); ties go to the
smaller k. Every fit uses ``random_state=seed`` and ``n_init=3``, so a build is repeatable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import silhouette_score

from feedback.topics import TopicsError
from feedback.topics.config import TopicsSettings


@dataclass(frozen=True)
class Clustering:
    """A fitted clustering. ``centroids``: ``(k, d)`` float32, L2-normalised (mean direction of
    each cluster); ``labels``: ``(n,)`` int cluster of each input row; ``silhouettes``: candidate k →
    mean silhouette (empty when k was fixed); ``seconds``: wall time of the whole choice and fit."""

    k: int
    centroids: np.ndarray
    labels: np.ndarray
    silhouettes: dict[int, float]
    seconds: float


def _fit(X: np.ndarray, k: int, seed: int) -> MiniBatchKMeans:
    return MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=2048, max_iter=200).fit(X)


def normalise(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def cluster(X: np.ndarray, settings: TopicsSettings | None = None) -> Clustering:
    """Cluster the rows of ``X`` (``(n, d)``). Raises TopicsError when there are fewer than 2 rows
    or no candidate k is below n."""
    settings = settings or TopicsSettings()
    started = time.perf_counter()
    n = len(X)
    if n < 2:
        raise TopicsError(f"need at least 2 distinct prompts to cluster, got {n}")
    silhouettes: dict[int, float] = {}
    if settings.k:
        k = min(settings.k, n)
        best = _fit(X, k, settings.seed)
    else:
        candidates = sorted({c for c in settings.k_candidates if 2 <= c < n})
        if not candidates:
            raise TopicsError(f"no candidate k in {settings.k_candidates} is below the {n} prompts")
        rng = np.random.default_rng(settings.seed)
        sample = rng.choice(n, size=min(n, settings.silhouette_sample), replace=False)
        best, best_score = None, -np.inf
        for k in candidates:
            model = _fit(X, k, settings.seed)
            labels = model.labels_[sample]
            score = float(silhouette_score(X[sample], labels, metric="cosine")) if len(set(labels)) > 1 else -1.0
            silhouettes[k] = score
            if score > best_score:
                best, best_score = model, score
    centroids = normalise(best.cluster_centers_)
    labels = nearest(X, centroids)[0]
    return Clustering(len(centroids), centroids, labels, silhouettes, time.perf_counter() - started)


def nearest(X: np.ndarray, centroids: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by cosine for each row of ``X`` (``(n, d)``, unit rows) among ``centroids``
    (``(k, d)``, unit rows): ``(topic index (n,) int64, cosine distance 1 − cos (n,) float64)``."""
    idx = np.empty(len(X), dtype=np.int64)
    dist = np.empty(len(X), dtype=np.float64)
    for s in range(0, len(X), chunk):
        sims = X[s:s + chunk] @ centroids.T
        j = sims.argmax(axis=1)
        idx[s:s + chunk] = j
        dist[s:s + chunk] = 1.0 - sims[np.arange(len(j)), j]
    return idx, dist
