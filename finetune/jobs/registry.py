"""The job registry: lake table ``finetune_jobs``, one row per status change of a job (append-only).

A job's current state is its latest row; its history is all of them, so any engine reading the lake
sees every job, its backend, dataset version, config, status over time, metrics and artifacts.
Status names follow SageMaker's ``TrainingJobStatus`` (``InProgress``, ``Completed``, ``Failed``,
``Stopping``, ``Stopped``) plus ``Created`` (registered, not started yet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo

from feedback.config import LakeSettings
from feedback.lake.catalog import create_table, read_table
from finetune.errors import JobError

TABLE = "finetune_jobs"
STATUSES = ("Created", "InProgress", "Completed", "Failed", "Stopping", "Stopped")
TERMINAL = ("Completed", "Failed", "Stopped")
SCHEMA = pa.schema([
    pa.field("job_id", pa.string()), pa.field("backend", pa.string()), pa.field("dataset_version", pa.string()),
    pa.field("method", pa.string()), pa.field("base_model", pa.string()), pa.field("config_json", pa.string()),
    pa.field("status", pa.string()), pa.field("status_at", pa.timestamp("us", tz="UTC")),
    pa.field("message", pa.string()), pa.field("external_id", pa.string()),
    pa.field("metrics_json", pa.string()), pa.field("artifacts_json", pa.string()),
])


@dataclass
class JobRecord:
    """One row of the registry: a job in one status.

    ``config`` is the JobConfig (and, for SageMaker, the settings used) as a dict; ``metrics`` what
    the training script reported (``metrics.json``: loss curve, steps/s, seconds, peak memory);
    ``artifacts`` names → paths or S3 URIs (``job_dir``, ``adapter``, ``merged``, ``model_tar``,
    ``log``); ``external_id`` the backend's id (SageMaker training job ARN, local runner pid)."""

    job_id: str
    backend: str
    dataset_version: str
    method: str
    base_model: str
    config: dict[str, Any]
    status: str
    status_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    message: str | None = None
    external_id: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)

    def row(self) -> dict:
        return {"job_id": self.job_id, "backend": self.backend, "dataset_version": self.dataset_version,
                "method": self.method, "base_model": self.base_model,
                "config_json": json.dumps(self.config, sort_keys=True, default=str), "status": self.status,
                "status_at": self.status_at, "message": self.message, "external_id": self.external_id,
                "metrics_json": json.dumps(self.metrics, sort_keys=True, default=str),
                "artifacts_json": json.dumps(self.artifacts, sort_keys=True)}

    @classmethod
    def from_row(cls, row: dict) -> JobRecord:
        return cls(job_id=row["job_id"], backend=row["backend"], dataset_version=row["dataset_version"],
                   method=row["method"], base_model=row["base_model"], config=json.loads(row["config_json"]),
                   status=row["status"], status_at=row["status_at"], message=row["message"],
                   external_id=row["external_id"], metrics=json.loads(row["metrics_json"] or "{}"),
                   artifacts=json.loads(row["artifacts_json"] or "{}"))

    def with_status(self, status: str, message: str | None = None, **changes) -> JobRecord:
        """A copy in ``status`` now (other fields updated from ``changes``). Raises JobError on an unknown status."""
        if status not in STATUSES:
            raise JobError(f"unknown job status {status!r}")
        values = {**self.__dict__, **changes, "status": status, "message": message, "status_at": datetime.now(UTC)}
        return JobRecord(**values)


def record(catalog: Catalog, rec: JobRecord, lake: LakeSettings | None = None) -> JobRecord:
    """Append ``rec`` (one status change) to the registry; return it."""
    if rec.status not in STATUSES:
        raise JobError(f"unknown job status {rec.status!r}")
    create_table(catalog, lake or LakeSettings(), TABLE, SCHEMA).append(pa.Table.from_pylist([rec.row()], schema=SCHEMA))
    return rec


def _rows(catalog: Catalog, lake: LakeSettings | None, row_filter=None) -> list[dict]:
    return read_table(catalog, lake or LakeSettings(), TABLE, SCHEMA, row_filter).to_pylist()


def history(catalog: Catalog, job_id: str, lake: LakeSettings | None = None) -> list[JobRecord]:
    """Every status of ``job_id``, oldest first. Raises JobError when the job is unknown."""
    rows = sorted(_rows(catalog, lake, EqualTo("job_id", job_id)), key=lambda r: r["status_at"])
    if not rows:
        raise JobError(f"unknown job {job_id!r}; `flywheel finetune list` shows them")
    return [JobRecord.from_row(r) for r in rows]


def latest(catalog: Catalog, job_id: str, lake: LakeSettings | None = None) -> JobRecord:
    """The job's current row. Raises JobError when unknown."""
    return history(catalog, job_id, lake)[-1]


def jobs(catalog: Catalog, lake: LakeSettings | None = None) -> list[JobRecord]:
    """Every job's current row, newest job first."""
    current: dict[str, dict] = {}
    first: dict[str, datetime] = {}
    for r in sorted(_rows(catalog, lake), key=lambda r: r["status_at"]):
        current[r["job_id"]] = r
        first.setdefault(r["job_id"], r["status_at"])
    return [JobRecord.from_row(current[j]) for j in sorted(current, key=lambda j: first[j], reverse=True)]
