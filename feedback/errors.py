"""Flywheel's exception tree.

One root, :class:`FlywheelError`, and one subclass per package or stage so callers can catch
exactly what they handle. Other packages (``dashboards``, ``finetune``) derive from the root too.
"""


class FlywheelError(Exception):
    """Root of every error Flywheel raises on purpose."""


class ConfigError(FlywheelError):
    """A setting is missing or inconsistent."""


class ContractError(FlywheelError):
    """An event does not satisfy its versioned JSON Schema contract, or is too large.

    ``reason_code`` is one of ``oversized``, ``undecodable``, ``schema_invalid``,
    ``unsupported_version``, ``topic_mismatch``; ``str(error)`` carries the detail (never user text).
    """

    def __init__(self, reason_code: str, detail: str):
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail


class BusError(FlywheelError):
    """The Kafka bus or the embedded broker failed (unreachable, cannot start, topic admin failed)."""


class LakeError(FlywheelError):
    """The Iceberg catalog or a lake table failed (commit retries exhausted, missing table)."""


class IngestError(FlywheelError):
    """The ingestion consumer cannot continue."""


class ReplayError(FlywheelError):
    """A source data set cannot be read or mapped to events."""
