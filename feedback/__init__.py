"""Flywheel's SDK, bus and ingestion: events from applications into the Iceberg lake.

``from feedback import FlywheelClient`` is all an application needs.
"""

from feedback.sdk.client import FlywheelClient

__all__ = ["FlywheelClient"]
