"""The local backend's runner: ``python -m finetune.jobs.runner <job folder>``.

Runs the training script with SageMaker's environment variables pointing into the job folder and
records the job's status changes in the registry (see :mod:`finetune.jobs.local`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from feedback.lake.catalog import open_catalog
from finetune.jobs import registry
from finetune.jobs.registry import JobRecord

ERROR_MARKERS = ("Error", "Exception", "SystemExit", "error:")


def _record(row: dict) -> JobRecord:
    row = dict(row)
    row["status_at"] = datetime.fromisoformat(row["status_at"])
    return JobRecord.from_row(row)


def error_line(log: Path) -> str:
    """The last line of ``log`` that names an error (the script's last words), or its last line."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    for line in reversed(lines):
        if any(m in line for m in ERROR_MARKERS):
            return line.strip()[:500]
    return (lines[-1].strip() if lines else "no output")[:500]


def run(folder: Path) -> int:
    """Run the job in ``folder``; return the script's exit code."""
    job = json.loads((folder / "job.json").read_text())
    catalog = open_catalog()
    rec = _record(job["record"])
    flags = [x for k, v in job["hyperparameters"].items() for x in (f"--{k}", v)]
    env = os.environ | {"SM_MODEL_DIR": str(folder / "model"), "SM_OUTPUT_DATA_DIR": str(folder / "output"),
                        "SM_CHANNEL_TRAIN": str(folder / "input" / "data" / "train"), "PYTHONUNBUFFERED": "1"}
    if (folder / "input" / "data" / "validation").exists():
        env["SM_CHANNEL_VALIDATION"] = str(folder / "input" / "data" / "validation")
    artifacts = {"job_dir": str(folder), "log": str(folder / "train.log")}
    with open(folder / "train.log", "ab") as log:
        child = subprocess.Popen([sys.executable, str(folder / "code" / "train.py"), *flags], stdout=log,
                                 stderr=subprocess.STDOUT, env=env, cwd=str(folder))
        stopped = []

        def on_term(signum, frame):  # flywheel finetune stop
            stopped.append(signum)
            child.terminate()

        signal.signal(signal.SIGTERM, on_term)
        rec = registry.record(catalog, rec.with_status("InProgress", external_id=f"pid:{os.getpid()}",
                                                       artifacts=artifacts))
        code = child.wait()
    if stopped:
        registry.record(catalog, rec.with_status("Stopped", "stopped by request"))
    elif code == 0:
        metrics = json.loads((folder / "model" / "metrics.json").read_text())
        artifacts |= {"adapter": str(folder / "model" / "adapter"), "metrics": str(folder / "model" / "metrics.json")}
        if (folder / "model" / "merged").exists():
            artifacts["merged"] = str(folder / "model" / "merged")
        registry.record(catalog, rec.with_status("Completed", None, metrics=metrics, artifacts=artifacts))
    else:
        registry.record(catalog, rec.with_status("Failed", f"exit {code}: {error_line(folder / 'train.log')}"))
    return code


if __name__ == "__main__":
    sys.exit(0 if run(Path(sys.argv[1])) == 0 else 1)
