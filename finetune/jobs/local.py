"""The local backend: the training script in a child process on this machine (CPU, or a GPU).

Each job gets a folder laid out like SageMaker's container, so the script runs the same way::

    <root>/<job_id>/job.json                the Created row and the script's flags
                    code/                   a copy of finetune/entrypoint (train.py, requirements.txt)
                    input/data/train/       the dataset version's data/train.parquet (validation/ alike)
                    model/                  SM_MODEL_DIR: adapter/, merged/, metrics.json
                    output/                 SM_OUTPUT_DATA_DIR
                    train.log               the script's stdout and stderr
                    runner.pid

A runner process (:mod:`finetune.jobs.runner`, started in its own session so it outlives the CLI)
starts the script, records ``InProgress`` then ``Completed`` (with metrics and artifacts), ``Failed``
(with the error line) or ``Stopped`` (on SIGTERM from ``flywheel finetune stop``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pyiceberg.catalog import Catalog

from feedback.config import LakeSettings
from finetune import basemodel
from finetune.errors import JobError
from finetune.jobs import registry
from finetune.jobs.config import FinetuneSettings
from finetune.jobs.launch import ENTRYPOINT, split_file
from finetune.jobs.registry import TERMINAL, JobRecord


class LocalBackend:
    """Runs jobs under ``settings.root`` (default ``<FLYWHEEL_HOME>/jobs``)."""

    name = "local"

    def __init__(self, catalog: Catalog, settings: FinetuneSettings | None = None, lake: LakeSettings | None = None):
        self.catalog, self.settings, self.lake = catalog, settings or FinetuneSettings(), lake

    def job_dir(self, job_id: str) -> Path:
        return self.settings.root / job_id

    def launch(self, rec: JobRecord, dataset_dir: Path, wait: bool = False) -> JobRecord:
        """Prepare the job folder, start the runner; with ``wait``, block until it ends."""
        from finetune.jobs.config import JobConfig

        config = JobConfig(**{k: v for k, v in rec.config.items() if k in JobConfig.model_fields})
        folder = self.job_dir(rec.job_id)
        shutil.copytree(ENTRYPOINT, folder / "code", ignore=shutil.ignore_patterns("__pycache__"))
        for split in ("train", "validation"):
            source = split_file(dataset_dir, split)
            if source is not None:
                (folder / "input" / "data" / split).mkdir(parents=True)
                shutil.copy2(source, folder / "input" / "data" / split / f"{split}.parquet")
        model_path = basemodel.resolve(config.base_model)
        (folder / "job.json").write_text(json.dumps({"record": rec.row() | {"status_at": rec.status_at.isoformat()},
                                                     "hyperparameters": config.hyperparameters(model_path)},
                                                    indent=2, default=str))
        log = open(folder / "runner.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "finetune.jobs.runner", str(folder)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())
        (folder / "runner.pid").write_text(str(proc.pid))
        if wait:
            proc.wait()
            return registry.latest(self.catalog, rec.job_id, self.lake)
        return rec

    def _pid(self, rec: JobRecord) -> int | None:
        path = self.job_dir(rec.job_id) / "runner.pid"
        return int(path.read_text()) if path.exists() else None

    @staticmethod
    def _alive(pid: int | None) -> bool:
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:  # a zombie child of this process counts as ended
            return os.waitpid(pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return True

    def refresh(self, rec: JobRecord) -> JobRecord:
        """The registry's latest row; a job whose runner died without a final row is recorded Failed."""
        alive = self._alive(self._pid(rec))  # first: a runner that has exited has committed its last row
        latest = registry.latest(self.catalog, rec.job_id, self.lake)
        if latest.status not in TERMINAL and not alive:
            latest = registry.record(self.catalog, latest.with_status(
                "Failed", "the runner process ended without recording a result (killed?)"), self.lake)
        return latest

    def stop(self, rec: JobRecord) -> JobRecord:
        """SIGTERM the runner (it stops the script and records Stopped); wait up to 30 s for that."""
        latest = self.refresh(rec)
        if latest.status in TERMINAL:
            raise JobError(f"{rec.job_id} already ended ({latest.status})")
        pid = self._pid(latest)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._alive(pid):
            time.sleep(0.2)
        return self.refresh(latest)

    def logs(self, rec: JobRecord) -> Iterator[str]:
        path = self.job_dir(rec.job_id) / "train.log"
        if not path.exists():
            return iter(())
        return iter(path.read_text(errors="replace").splitlines())
