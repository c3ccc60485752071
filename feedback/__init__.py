"""Flywheel's SDK, bus and ingestion: events from applications into the Iceberg lake.

``from feedback import FlywheelClient`` is all an application needs. The client is imported on first
use (PEP 562), so ``import feedback.errors`` and the like do not pull in the Kafka client.
"""

__all__ = ["FlywheelClient"]


def __getattr__(name: str):
    if name == "FlywheelClient":
        from feedback.sdk.client import FlywheelClient

        return FlywheelClient
    raise AttributeError(f"module 'feedback' has no attribute {name!r}")
