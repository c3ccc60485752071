"""Settings, one pydantic-settings object per component, all read from ``FLYWHEEL_*`` variables.

| component | class | env prefix |
|---|---|---|
| paths of the embedded defaults | :class:`HomeSettings` | ``FLYWHEEL_`` (``FLYWHEEL_HOME``) |
| Kafka connection (any component that talks to the bus) | :class:`KafkaSettings` | ``FLYWHEEL_KAFKA_`` |
| embedded Tansu broker | :class:`BrokerSettings` | ``FLYWHEEL_BROKER_`` |
| Iceberg lake | :class:`LakeSettings` | ``FLYWHEEL_LAKE_`` |
| ingestion consumer | :class:`IngestSettings` | ``FLYWHEEL_INGEST_`` |
| SDK client | :class:`SDKSettings` | ``FLYWHEEL_SDK_`` |

The defaults run everything on one machine (Tansu on 127.0.0.1, a SQLite SQL catalog and a local
warehouse under ``FLYWHEEL_HOME``); pointing at Kafka/MSK with SASL/TLS, or at a REST/Glue/Postgres
catalog and S3, is configuration only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_EVENT_BYTES = 1_048_576
"""Largest accepted event: 1 MiB of UTF-8 JSON (Kafka's default ``message.max.bytes`` is ~1 MB)."""


def flywheel_home() -> Path:
    """The folder for embedded state: ``$FLYWHEEL_HOME``, else ``./.flywheel``."""
    return Path(os.environ.get("FLYWHEEL_HOME", ".flywheel")).resolve()


def cache_root() -> Path:
    """Where derived, re-creatable files are cached (tokenizer, dequantised models):
    ``$FLYWHEEL_CACHE_DIR``, else ``~/.cache/flywheel``."""
    return Path(os.environ.get("FLYWHEEL_CACHE_DIR") or Path.home() / ".cache" / "flywheel")


def kafka_settings() -> "KafkaSettings":
    """Kafka settings from the environment; without ``FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS``, the embedded
    broker's address (``FLYWHEEL_BROKER_HOST``/``_PORT``)."""
    if "FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS" in os.environ:
        return KafkaSettings()
    broker = BrokerSettings()
    return KafkaSettings(bootstrap_servers=f"{broker.host}:{broker.port}")


class HomeSettings(BaseSettings):
    """Where embedded state lives (broker pid/log, catalog, warehouse, SDK spool)."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_")
    home: Path = Field(default_factory=flywheel_home)


class KafkaSettings(BaseSettings):
    """How to reach the bus. Defaults to the embedded broker; set SASL/TLS for MSK or Kafka.

    ``topic_prefix`` names the topics ``<prefix>.interaction``, ``<prefix>.feedback``,
    ``<prefix>.metric`` and the dead-letter topic ``<prefix>.dlq``.
    """

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_KAFKA_")
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    topic_prefix: str = "flywheel"
    partitions: int = 3
    replication_factor: int = 1

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by kafka-python's producer, consumer and admin client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.sasl_plain_password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return kwargs

    def topic(self, event_type: str) -> str:
        """Topic carrying ``event_type`` (``interaction``, ``feedback``, ``metric``) or ``dlq``."""
        return f"{self.topic_prefix}.{event_type}"

    @property
    def event_topics(self) -> list[str]:
        """The three event topics, in a fixed order."""
        return [self.topic(t) for t in ("interaction", "feedback", "metric")]


class BrokerSettings(BaseSettings):
    """The embedded Tansu broker (memory storage only: a restart loses its data)."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_BROKER_")
    host: str = "127.0.0.1"
    port: int = 9092
    start_timeout_s: float = 20.0


class LakeSettings(BaseSettings):
    """The Iceberg catalog and warehouse.

    With ``catalog_uri`` unset, a pyiceberg SQL catalog on ``<home>/catalog.db`` (SQLite) and a
    warehouse at ``<home>/warehouse`` are used. ``catalog_properties`` passes anything else to
    ``pyiceberg.catalog.load_catalog`` (``{"type": "rest", "uri": ...}``, ``{"type": "glue"}``, S3
    credentials, ...).
    """

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_LAKE_")
    catalog_name: str = "flywheel"
    catalog_uri: str | None = None
    warehouse: str | None = None
    namespace: str = "flywheel"
    catalog_properties: dict[str, str] = Field(default_factory=dict)
    commit_retries: int = 5


class IngestSettings(BaseSettings):
    """The ingestion consumer: consumer group, micro-batch bounds and group timing.

    Group timings default to values that make Tansu form a group in ~3 s (see
    ``shared/notes/stack.md``); a JVM Kafka is happy with them too.
    """

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_INGEST_")
    group_id: str = "flywheel-ingest"
    batch_max_events: int = 20_000
    batch_max_ms: int = 500
    poll_timeout_ms: int = 100
    max_poll_interval_ms: int = 5_000
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 1_000
    fetch_max_wait_ms: int = 10
    max_event_bytes: int = MAX_EVENT_BYTES


class SDKSettings(BaseSettings):
    """The application-side client.

    ``spool_max_bytes`` bounds the on-disk spool used while the broker is unreachable;
    ``redeliver_window_s`` keeps recently acknowledged events in memory and sends them again after
    an outage, because a memory-only broker (Tansu) loses acknowledged-but-unconsumed events when it
    restarts. The consumer drops the resulting duplicates by ``event_id``. Set it to 0 for a durable
    Kafka.
    """

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_SDK_")
    project: str = "default"
    spool_dir: Path | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    queue_max_events: int = 100_000
    flush_interval_ms: int = 200
    batch_max_events: int = 2_000
    send_timeout_s: float = 10.0
    retry_interval_s: float = 1.0
    redeliver_window_s: float = 120.0
    redeliver_max_bytes: int = 128 * 1024 * 1024


class KpiSettings(BaseSettings):
    """The KPI layer.

    ``prices_usd_per_1k_tokens`` maps a model to ``{"input": usd, "output": usd}`` per 1,000 tokens;
    it fills ``cost_usd`` where an interaction has none (and such costs are counted as derived). It is
    empty by default: Flywheel ships no prices it cannot source. ``rating_criteria`` are the rating
    names that count as satisfaction (oasst1's spam or toxicity labels do not).
    ``positive_rating_threshold`` is the normalised rating (0–1) at or above which an answer counts
    as positively rated. ``allowed_lateness_s`` sets the watermark = latest event time processed −
    this lateness; later events still update their windows.
    """

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_KPI_")
    min_observations: int = 30
    refresh_interval_s: float = 0.25
    allowed_lateness_s: float = 0.0
    rating_criteria: list[str] = Field(default_factory=lambda: ["overall", "quality"])
    positive_rating_threshold: float = 0.75
    prices_usd_per_1k_tokens: dict[str, dict[str, float]] = Field(default_factory=dict)
    sentiment_scorer: str | None = None
    rebuild_days_per_chunk: int = 31
    snapshot_retention_s: float = 600.0
    duckdb_memory_limit: str = "1GB"
    duckdb_threads: int = 2
