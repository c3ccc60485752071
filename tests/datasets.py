"""A curated dataset version of the replayed real data, built the way a user builds one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from feedback.cli import app
from finetune import registry

TULU = "tulu1_human_eval"


def point_at_lake(mp: pytest.MonkeyPatch, home: Path, tmp: Path) -> None:
    """Set, on ``mp``, the environment the CLI reads: ``FLYWHEEL_HOME`` = ``home`` (the replayed lake) and
    every output root (datasets, fine-tune jobs, reward models, the synthesis cache) under ``tmp``."""
    for name, value in {"FLYWHEEL_HOME": home, "FLYWHEEL_DATASET_ROOT": tmp / "datasets",
                        "FLYWHEEL_FINETUNE_ROOT": tmp / "jobs", "FLYWHEEL_FINETUNE_REWARD_ROOT": tmp / "reward_models",
                        "FLYWHEEL_SYNTH_CACHE_PATH": tmp / "cache.sqlite"}.items():
        mp.setenv(name, str(value))


def build_version(catalog, folder: Path, name: str, fmt: str, apps: tuple[str, ...] = (TULU,)) -> dict:
    """``flywheel dataset build`` on a spec for ``apps`` (PII off, for speed); returns the version's
    registry row. Needs ``FLYWHEEL_HOME`` (and ``FLYWHEEL_DATASET_ROOT``) set by the caller."""
    spec = Path(folder) / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({"name": name, "format": fmt, "selection": {"apps": list(apps)},
                                    "cleaning": {"pii": False}}))
    result = CliRunner().invoke(app, ["dataset", "build", str(spec)])
    assert result.exit_code == 0, result.output
    return next(r for r in registry.versions(catalog) if r["name"] == name and r["format"] == fmt
                and r["version"] in result.output)
