"""Launching a job: its id, its dataset version, its first registry row, and the backend that runs it.

Backends (:mod:`finetune.jobs.local`, :mod:`finetune.jobs.sagemaker`) share one interface,
:class:`Backend`: ``launch`` starts the training script on a dataset version and returns the job's
row; ``refresh`` asks the backend for the job's state and records a change; ``stop`` and ``logs``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pyiceberg.catalog import Catalog

from feedback.config import LakeSettings
from finetune import registry as datasets
from finetune.errors import DatasetError, JobError
from finetune.jobs import registry
from finetune.jobs.config import DATASET_FORMAT, JobConfig
from finetune.jobs.registry import JobRecord

ENTRYPOINT = Path(__file__).resolve().parents[1] / "entrypoint"
"""The training script's folder (``train.py`` + ``requirements.txt``): SageMaker's source dir."""


def split_file(dataset: Path, split: str) -> Path | None:
    """A dataset version's ``data/<split>.parquet`` (what a job's channel of that split holds; the training
    script reads Parquet), or None where it is missing or has no rows."""
    import pyarrow.parquet as pq

    path = Path(dataset) / "data" / f"{split}.parquet"
    if not path.is_file() or not pq.ParquetFile(path).metadata.num_rows:
        return None
    return path


class Backend(Protocol):
    """Where a job runs. Every method records status changes in the registry itself."""

    name: str

    def launch(self, rec: JobRecord, dataset_dir: Path, wait: bool = False) -> JobRecord:
        """Start the job (``rec`` is its Created row); return its latest row (terminal when ``wait``)."""

    def refresh(self, rec: JobRecord) -> JobRecord:
        """The backend's current state of the job, recorded if it changed; return the latest row."""

    def stop(self, rec: JobRecord) -> JobRecord:
        """Ask the backend to stop the job; return the latest row."""

    def logs(self, rec: JobRecord) -> Iterator[str]:
        """The training script's output lines so far."""


def new_job_id(method: str) -> str:
    """``ft-<method>-<UTC yyyymmdd-hhmmss>-<6 hex>``: valid as a SageMaker training job name."""
    return f"ft-{method}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def dataset_dir(catalog: Catalog, version: str, method: str, lake: LakeSettings | None = None) -> Path:
    """The folder of dataset ``version``, checked to be of the format ``method`` trains on and to
    have a training split. Raises JobError."""
    try:
        row = datasets.get(catalog, version, lake)
    except DatasetError as exc:
        raise JobError(str(exc)) from exc
    want = DATASET_FORMAT[method]
    if row["format"] != want:
        raise JobError(f"--method {method} trains on a {want!r} dataset; {version} is {row['format']!r}")
    folder = Path(row["path"])
    if not (folder / "data" / "train.parquet").is_file():
        raise JobError(f"{version}: no data/train.parquet under {folder} (moved or deleted?)")
    if not row["train_rows"]:
        raise JobError(f"{version} has no training rows")
    return folder


def created(job_id: str, backend: str, version: str, config: JobConfig, extra: dict | None = None) -> JobRecord:
    """The job's first row (status Created)."""
    return JobRecord(job_id=job_id, backend=backend, dataset_version=version, method=config.method,
                     base_model=config.base_model, config={**config.model_dump(), **(extra or {})}, status="Created")


def launch(catalog: Catalog, backend: Backend, version: str, config: JobConfig, wait: bool = False,
           lake: LakeSettings | None = None, extra_config: dict | None = None) -> JobRecord:
    """Register a job on dataset ``version`` and start it on ``backend``. Raises JobError."""
    folder = dataset_dir(catalog, version, config.method, lake)
    rec = registry.record(catalog, created(new_job_id(config.method), backend.name, version, config, extra_config), lake)
    return backend.launch(rec, folder, wait=wait)
