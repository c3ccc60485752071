"""``flywheel dataset build``: spec → selection → cleaning → splits → files, streamed in batches.

Steps, each counted in the dataset card (:class:`BuildReport`):

1. **selected** — candidates from the lake (:mod:`finetune.select`), at pinned snapshots;
2. **empty turns** — a message, response, chosen, rejected or completion that is empty or blank;
3. **chosen == rejected** (preference) — the same text on both sides (after whitespace/case normalisation);
4. **safety** — answers the source labels unsafe (``cleaning.safety_labels``; for preference the chosen
   side, for kto only rows labelled desirable);
5. **length** — a response, chosen, rejected or completion outside [``min_chars``, ``max_chars``];
6. **duplicates** — exact (same normalised prompt and answers as an earlier row), then near-duplicates:
   the prompt and every answer in the same MinHash LSH clusters as an earlier kept row's
   (:mod:`finetune.neardup`, streaming and greedy);
7. **split** — by conversation and near-duplicate cluster of the prompt, so neither crosses splits;
8. **PII** — redacted with Presidio (:mod:`finetune.pii`) in the kept rows' distinct texts; counted per
   entity (per distinct text), rows kept.

The work is done by :mod:`finetune.stream` in batches of rows, writing the files as it goes into a work
folder that :func:`finetune.output.write` moves into place. The version id is ``<name>-<first 12 hex of
sha256(spec hash, snapshot ids)>``: the same spec on the same snapshots is the same version, written
byte for byte the same.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog

from feedback.config import LakeSettings
from finetune import select, stream
from finetune.spec import DatasetSpec
from finetune.splits import SPLITS

__all__ = ["BuildReport", "Built", "build", "version_id"]


@dataclass
class BuildReport:
    """Counts after each step, PII redactions, split sizes and the distributions, for the card;
    ``seconds`` of the build, ``phase_seconds`` (select, pass 1, splits, pass 2), ``phase_peak_rss_mb``
    (peak resident memory during each phase, MiB), ``state_bytes`` (cross-batch state in memory at the
    end of pass 1, see :mod:`finetune.stream`) and ``state_disk_bytes`` (its key-index runs on disk)."""

    steps: list[tuple[str, int]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    pii: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    distribution: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    seconds: float = 0.0
    state_bytes: int = 0
    pii_workers: int = 0
    state_disk_bytes: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    phase_peak_rss_mb: dict[str, int] = field(default_factory=dict)


class _Splits(Mapping):
    """``split name → pandas DataFrame``, read from the written Parquet file on access (nothing is held)."""

    def __init__(self, built: "Built") -> None:
        self._built = weakref.ref(built)

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise KeyError(name)
        return pd.DataFrame.from_records(pq.read_table(self._built().files / "data" / f"{name}.parquet").to_pylist())

    def __iter__(self) -> Iterator[str]:
        return iter(SPLITS)

    def __len__(self) -> int:
        return len(SPLITS)


@dataclass
class Built:
    """A built dataset version: its files (``files``: a folder with ``data/``, a private
    work folder until :func:`finetune.output.write` moves it), lineage and report. ``splits`` maps each
    split name to a DataFrame read from ``files`` on access (small datasets, tests)."""

    version: str
    spec: DatasetSpec
    snapshot: select.LakeSnapshot
    files: Path
    report: BuildReport
    staged: bool = True
    """True while ``files`` is the build's private work folder."""

    @property
    def splits(self) -> Mapping[str, pd.DataFrame]:
        return _Splits(self)


def version_id(spec: DatasetSpec, snapshot: select.LakeSnapshot) -> str:
    """``<name>-<12 hex>`` from the spec's hash and the snapshot ids."""
    key = f"{spec.sha256()}:{snapshot.interactions}:{snapshot.feedback}"
    return f"{spec.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def build(catalog: Catalog, spec: DatasetSpec, lake: LakeSettings | None = None,
          snapshot: select.LakeSnapshot | None = None, workdir: Path | None = None,
          config: stream.StreamConfig = stream.StreamConfig()) -> Built:
    """Select, clean, split, redact and write ``spec``'s rows into a work folder (under ``workdir``, default
    the system temp folder; put it on the destination's file system so the final move is a rename).
    The folder is removed when the :class:`Built` is garbage collected unless
    :func:`finetune.output.write` moved it. Raises DatasetError when the lake has no data, the snapshot
    is unknown or nothing is selected."""
    started = time.perf_counter()
    snap = select.resolve_snapshot(catalog, lake, snapshot)
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=workdir))
    try:
        files = spec.format in select.PARTITIONED  # only their queries read the lake's data files
        stats = stream.run(lambda memory, threads: select.open_lake(catalog, lake, snap, memory, threads, files)[0],
                           spec, folder, config)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    report = BuildReport(steps=stats.steps, dropped=stats.dropped, pii=stats.pii, splits=stats.splits,
                         distribution=stats.distribution, state_bytes=stats.state_bytes,
                         pii_workers=stats.pii_workers, state_disk_bytes=stats.state_disk_bytes,
                         phase_seconds=stats.seconds,
                         phase_peak_rss_mb=stats.peak_rss_mb)
    report.seconds = round(time.perf_counter() - started, 2)
    built = Built(version_id(spec, snap), spec, snap, folder, report)
    weakref.finalize(built, _cleanup, folder)
    return built


def _cleanup(folder: Path) -> None:
    """Remove a work folder that was never moved into place (a moved one no longer exists there)."""
    shutil.rmtree(folder, ignore_errors=True)
