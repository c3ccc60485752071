"""Settings of the finetune package (``FLYWHEEL_DATASET_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.config import flywheel_home


class DatasetSettings(BaseSettings):
    """Dataset curation: where built versions are written (``root``, default ``<FLYWHEEL_HOME>/datasets``;
    any local path; an object store would be mounted or synced by the deployment), and the memory knobs of
    the streaming build, none of which changes what is written (:class:`finetune.stream.StreamConfig`):
    ``duckdb_memory`` (DuckDB's cap during the selection, e.g. ``"512MB"``), ``sort_rows`` (rows per bucket
    of the selection's sort), ``memory_keys`` (keys each dedup index keeps in memory before writing runs
    to disk; 0 keeps all in memory) and ``pii_workers`` (PII processes; unset: one per core, at most 4,
    for large builds)."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_DATASET_")
    root: Path = Field(default_factory=lambda: flywheel_home() / "datasets")
    duckdb_memory: str = Field("512MB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
    sort_rows: int = Field(32_768, ge=1)
    memory_keys: int = Field(1 << 20, ge=0)
    pii_workers: int | None = Field(None, ge=0)

    def stream_config(self):
        """The :class:`finetune.stream.StreamConfig` these settings give (default batch size)."""
        from finetune.stream import StreamConfig

        return StreamConfig(duckdb_memory=self.duckdb_memory, sort_rows=self.sort_rows,
                            memory_keys=self.memory_keys or None, pii_workers=self.pii_workers)
