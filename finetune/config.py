"""Settings of the finetune package (``FLYWHEEL_DATASET_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.config import flywheel_home


class DatasetSettings(BaseSettings):
    """Dataset curation: where built versions are written (``root``, default ``<FLYWHEEL_HOME>/datasets``;
    any local path; an object store would be mounted or synced by the deployment)."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_DATASET_")
    root: Path = Field(default_factory=lambda: flywheel_home() / "datasets")
