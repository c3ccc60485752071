"""Train / validation / test splits that no conversation and no near-duplicate cluster crosses.

Rows sharing a conversation or a near-duplicate cluster (:attr:`finetune.dedup.DedupResult.cluster`)
form one connected component and go to one split, chosen by a stable hash, so the same rows give
the same splits in every process and run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

SPLITS = ("train", "validation", "test")

def _unit_interval(seed: int, group: str) -> float:
    """A stable number in [0, 1) from SHA-256 of ``seed`` and ``group`` (not ``hash()``, which is salted)."""
    digest = hashlib.sha256(f"{seed}\x1f{group}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_indices(seed: int, groups: Sequence[str], fractions: Mapping[str, float]) -> np.ndarray:
    """The split of each component named by its smallest group id: int8 indices into :data:`SPLITS`, one per
    name in ``groups``. Each name maps to [0, 1) by :func:`_unit_interval` (SHA-256 of ``seed`` and the name),
    then to the first split whose cumulative fraction (in :data:`SPLITS` order) exceeds it; points past the
    end go to the last split with a non-zero fraction. ``fractions`` are assumed valid (see
    :func:`assign_splits`)."""
    values = [float(fractions.get(name, 0.0)) for name in SPLITS]
    cumulative = np.cumsum(values)
    last = max(i for i, v in enumerate(values) if v > 0)
    points = np.fromiter((_unit_interval(seed, str(g)) for g in groups), dtype=np.float64, count=len(groups))
    return np.minimum(np.searchsorted(cumulative, points, side="right"), last).astype(np.int8)


def assign_splits(
    groups: Sequence[str],
    clusters: Sequence[int],
    fractions: Mapping[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1},
    seed: int = 0,
) -> list[str]:
    """One split name per row such that no group (conversation id) and no cluster spans two splits.

    ``groups`` (str) and ``clusters`` (int, e.g. :attr:`DedupResult.cluster`) have one entry per row.
    Rows are joined into connected components over shared groups and shared clusters (what a union-find
    over both computes; here ``scipy.sparse.csgraph.connected_components`` on the group-cluster graph).
    Each component goes to one split, chosen from SHA-256 of ``(seed, the component's smallest group id)``
    mapped to [0, 1) against the cumulative fractions in :data:`SPLITS` order. The result depends only on
    the rows' values, not on the process or the run (byte-identical). Split sizes match ``fractions`` only
    in expectation, per component: a large component moves all of its rows together.

    ``fractions`` maps names from :data:`SPLITS` (missing ones get 0) to non-negative numbers summing to 1
    (within 1e-9). Raises ``ValueError`` if they do not, if a name is not in :data:`SPLITS`, or if
    ``groups`` and ``clusters`` differ in length.
    """
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; splits are {list(SPLITS)}")
    values = [float(fractions.get(name, 0.0)) for name in SPLITS]
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"split fractions must be finite and non-negative, got {dict(fractions)}")
    total = math.fsum(values)
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {total!r} from {dict(fractions)}")
    if len(groups) != len(clusters):
        raise ValueError(f"groups and clusters differ in length: {len(groups)} != {len(clusters)}")
    n = len(groups)
    if n == 0:
        return []
    group_index: dict[str, int] = {}
    g = np.fromiter((group_index.setdefault(x, len(group_index)) for x in groups), dtype=np.int64, count=n)
    _, c = np.unique(np.asarray(clusters, dtype=np.int64), return_inverse=True)
    n_groups = len(group_index)
    n_nodes = n_groups + int(c.max()) + 1
    # bipartite graph: group nodes 0..G-1, cluster nodes G..; one edge per row
    graph = coo_matrix((np.ones(n, dtype=np.int8), (g, c + n_groups)), shape=(n_nodes, n_nodes))
    label = connected_components(graph, directed=False)[1]
    smallest: dict[int, str] = {}
    for name, node in group_index.items():
        comp = int(label[node])
        if comp not in smallest or name < smallest[comp]:
            smallest[comp] = name
    index = split_indices(seed, list(smallest.values()), fractions)
    split_of = {comp: SPLITS[i] for comp, i in zip(smallest, index.tolist())}
    return [split_of[comp] for comp in label[g].tolist()]
