"""A curated dataset version of the replayed real data, built the way a user builds one."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from feedback.cli import app
from finetune import registry

TULU = "tulu1_human_eval"


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
