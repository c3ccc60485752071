"""Fit the topic model and assign interactions to it (the ``build`` and incremental ``assign`` paths).

``build``: every interaction in scope → its prompt text (:func:`feedback.topics.embed.prompt_text_sql`)
→ embeddings of the distinct texts (cached) → :func:`feedback.topics.cluster.cluster` on the distinct
texts → c-TF-IDF labels → one ``topics`` row per topic and one ``topic_assignments`` row per
interaction, under a new model version (``<UTC time>-k<k>-<8 hex of the centroids>``).

``assign``: the interactions in scope that have no assignment to the current model version →
embedded (cache first) → nearest centroid by cosine → appended. Earlier assignments are never
rewritten; a rebuild creates a new version and leaves older versions in the tables.

Scope: optional lists of ``apps`` and ``sources`` (interactions' ``app`` / ``source`` columns);
``assign`` should be run with the scope ``build`` used (the CLI keeps no scope between runs).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog

from feedback.config import KpiSettings, LakeSettings
from feedback.topics import TopicsError
from feedback.topics import store
from feedback.topics.cluster import cluster, nearest
from feedback.topics.config import TopicsSettings
from feedback.topics.embed import Embedder, prompt_text_sql
from feedback.topics.label import ctfidf_terms


@dataclass(frozen=True)
class Scope:
    """Which interactions a build or assign covers (empty lists: all)."""

    apps: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def where(self, alias: str = "i") -> tuple[str, list]:
        """SQL condition and parameters on interactions ``alias``."""
        clauses, params = ["TRUE"], []
        for column, values in (("app", self.apps), ("source", self.sources)):
            if values:
                clauses.append(f"{alias}.{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        return " AND ".join(clauses), params


@dataclass
class BuildResult:
    """What ``build`` did: model version, k, interactions assigned, distinct prompt texts, texts
    encoded (cache misses), encoding seconds and texts/s, clustering seconds, silhouette per k."""

    model_version: str
    k: int
    interactions: int
    distinct_texts: int
    encoded: int
    encode_s: float
    texts_per_s: float | None
    cluster_s: float
    silhouettes: dict[int, float] = field(default_factory=dict)
    total_s: float = 0.0


@dataclass
class AssignResult:
    """What ``assign`` did: model version, interactions newly assigned, texts encoded, seconds."""

    model_version: str
    assigned: int
    encoded: int
    seconds: float


def _pending(con, scope: Scope, version: str | None) -> pa.Table:
    """(message_id, conversation_id, text) of interactions in scope with no assignment to ``version``."""
    where, params = scope.where("i")
    anti = ""
    if version is not None:
        anti = "AND i.message_id NOT IN (SELECT message_id FROM topic_assignments WHERE model_version = ?)"
        params = params + [version]
    return con.execute(f"""
        SELECT message_id, any_value(conversation_id) AS conversation_id, any_value({prompt_text_sql('i')}) AS text
        FROM interactions i WHERE i.message_id IS NOT NULL AND {where} {anti}
        GROUP BY message_id ORDER BY message_id""", params).fetch_arrow_table()


def _assignment_rows(rows: pa.Table, topic: np.ndarray, dist: np.ndarray, version: str, now: datetime) -> pa.Table:
    n = rows.num_rows
    return pa.table({"message_id": rows["message_id"], "conversation_id": rows["conversation_id"],
                     "topic_id": pa.array(topic.astype(np.int32)), "distance": pa.array(dist.astype(np.float64)),
                     "model_version": pa.array([version] * n, pa.string()),
                     "assigned_at": pa.array([now] * n, store.TS)})


def build(catalog: Catalog, lake: LakeSettings | None = None, settings: TopicsSettings | None = None,
          scope: Scope | None = None, embedder: Embedder | None = None) -> BuildResult:
    """Fit a new topic model on every interaction in ``scope`` and assign them all (see module doc).

    Raises TopicsError when fewer than 2 distinct prompt texts are in scope."""
    started = time.perf_counter()
    lake, settings, scope = lake or LakeSettings(), settings or TopicsSettings(), scope or Scope()
    con = store.connect(catalog, lake, KpiSettings())
    rows = _pending(con, scope, None)
    con.close()
    if rows.num_rows == 0:
        raise TopicsError("no interactions in scope: replay or ingest events first")
    texts = rows["text"].to_pylist()
    distinct = sorted(set(texts))
    embedder = embedder or Embedder(settings)
    X = embedder.embed(distinct)
    stats = embedder.last
    fit = cluster(X, settings)
    terms = ctfidf_terms(distinct, fit.labels, fit.k, settings.n_terms)
    position = {t: i for i, t in enumerate(distinct)}
    rows_idx = np.fromiter((position[t] for t in texts), dtype=np.int64, count=len(texts))
    topic, dist = nearest(X[rows_idx], fit.centroids)
    now = datetime.now(UTC)
    version = f"{now:%Y%m%dT%H%M%S}-k{fit.k}-{hashlib.sha256(fit.centroids.tobytes()).hexdigest()[:8]}"
    sizes = np.bincount(topic, minlength=fit.k)
    topics = pa.table({
        "topic_id": pa.array(np.arange(fit.k, dtype=np.int32)),
        "label": [" · ".join(t[:settings.label_terms]) or f"topic {c}" for c, t in enumerate(terms)],
        "terms": pa.array(terms, pa.list_(pa.string())),
        "size": pa.array(sizes.astype(np.int64)),
        "centroid": pa.array([c.tolist() for c in fit.centroids], pa.list_(pa.float32())),
        "model_version": [version] * fit.k,
        "created_at": pa.array([now] * fit.k, store.TS),
    })
    store.append(catalog, lake, store.TOPICS, topics)  # first: a failed assignment append is healed by `assign`
    store.append(catalog, lake, store.ASSIGNMENTS, _assignment_rows(rows, topic, dist, version, now))
    return BuildResult(version, fit.k, rows.num_rows, len(distinct), stats.encoded, stats.encode_s, stats.texts_per_s,
                       fit.seconds, fit.silhouettes, time.perf_counter() - started)


def current_model(con) -> tuple[str, np.ndarray]:
    """(current model version, centroids ``(k, d)`` float32 indexed by topic_id). Raises TopicsError
    when no model was built."""
    version = store.current_version(con)
    if version is None:
        raise TopicsError("no topic model yet: run `flywheel topics build`")
    t = con.execute("SELECT topic_id, centroid FROM topics WHERE model_version = ? ORDER BY topic_id", [version]).fetchall()
    if [r[0] for r in t] != list(range(len(t))):
        raise TopicsError(f"topic model {version} has missing topic ids")
    return version, np.asarray([r[1] for r in t], dtype=np.float32)


def assign(catalog: Catalog, lake: LakeSettings | None = None, settings: TopicsSettings | None = None,
           scope: Scope | None = None, embedder: Embedder | None = None) -> AssignResult:
    """Assign the interactions in ``scope`` not yet assigned to the current model version to their
    nearest topic (cosine), appending one row each. Raises TopicsError when no model was built."""
    started = time.perf_counter()
    lake, settings, scope = lake or LakeSettings(), settings or TopicsSettings(), scope or Scope()
    con = store.connect(catalog, lake, KpiSettings())
    version, centroids = current_model(con)
    rows = _pending(con, scope, version)
    con.close()
    if rows.num_rows == 0:
        return AssignResult(version, 0, 0, time.perf_counter() - started)
    embedder = embedder or Embedder(settings)
    X = embedder.embed(rows["text"].to_pylist())
    topic, dist = nearest(X, centroids)
    store.append(catalog, lake, store.ASSIGNMENTS, _assignment_rows(rows, topic, dist, version, datetime.now(UTC)))
    return AssignResult(version, rows.num_rows, embedder.last.encoded, time.perf_counter() - started)
