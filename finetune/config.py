"""Settings of the finetune package (``FLYWHEEL_DATASET_*``)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import ByteSize, Field, TypeAdapter
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.config import flywheel_home

MEMORY_SIZE = r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"
"""A DuckDB memory size as the settings take it: ``512MB``, ``1.5GiB``."""


def memory_bytes(size: str) -> int:
    """Bytes of a :data:`MEMORY_SIZE` such as ``"512MB"`` (10**6 bytes a MB, as DuckDB reads it) or
    ``"1.5GiB"``, as pydantic's ``ByteSize`` reads them. Raises ``ValueError`` for another form."""
    if not re.match(MEMORY_SIZE, size):
        raise ValueError(f"not a memory size: {size!r} (e.g. 512MB, 2GiB)")
    return int(TypeAdapter(ByteSize).validate_python(size))


class DatasetSettings(BaseSettings):
    """Dataset curation: where built versions are written (``root``, default ``<FLYWHEEL_HOME>/datasets``;
    any local path; an object store would be mounted or synced by the deployment), and the memory knobs of
    the streaming build, none of which changes what is written (:class:`finetune.stream.StreamConfig`):
    ``duckdb_memory`` (DuckDB's cap during the selection, default ``"256MB"``), ``sort_rows`` (rows per bucket
    of the selection's sort), ``partition_answers`` (answers whose feedback one selection query aggregates;
    more are selected in hash partitions; unset: as many as three quarters of ``duckdb_memory`` holds),
    ``memory_keys`` (keys each dedup index keeps in memory before writing runs to disk; 0 keeps all in
    memory) and ``pii_workers`` (PII processes; unset: one per core, at most 4, for large builds)."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_DATASET_")
    root: Path = Field(default_factory=lambda: flywheel_home() / "datasets")
    duckdb_memory: str = Field("256MB", pattern=MEMORY_SIZE)
    sort_rows: int = Field(16_384, ge=1)
    partition_answers: int | None = Field(None, ge=1)
    memory_keys: int = Field(1 << 20, ge=0)
    pii_workers: int | None = Field(None, ge=0)

    def stream_config(self):
        """The :class:`finetune.stream.StreamConfig` these settings give (default batch size)."""
        from finetune.stream import StreamConfig

        return StreamConfig(duckdb_memory=self.duckdb_memory, sort_rows=self.sort_rows,
                            partition_answers=self.partition_answers, memory_keys=self.memory_keys or None,
                            pii_workers=self.pii_workers)
