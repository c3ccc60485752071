"""Arrow schemas of the lake tables and the mapping from validated events to their rows.

Tables (namespace ``flywheel`` by default), each partitioned by day:

| table | one row per | partitioned by |
|---|---|---|
| ``interactions`` | interaction event | ``day(occurred_at)`` |
| ``feedback`` | feedback event | ``day(occurred_at)`` |
| ``metrics`` | metric event | ``day(occurred_at)`` |
| ``quarantine`` | rejected record (with its original bytes) | ``day(quarantined_at)`` |

``occurred_at`` is event time in UTC, so a late rating lands in its own day's partition.
``feedback.rating_normalized`` = (value − scale_min) / (scale_max − scale_min), in [0, 1].
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from feedback.contracts import parse_occurred_at

TS = pa.timestamp("us", tz="UTC")

_COMMON = [
    pa.field("event_id", pa.string()),
    pa.field("schema_version", pa.string()),
    pa.field("occurred_at", TS),
    pa.field("ingested_at", TS),
    pa.field("project", pa.string()),
    pa.field("source", pa.string()),
]
_KAFKA = [
    pa.field("kafka_topic", pa.string()),
    pa.field("kafka_partition", pa.int32()),
    pa.field("kafka_offset", pa.int64()),
]
MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "interactions": pa.schema(
        _COMMON
        + [
            pa.field("conversation_id", pa.string()),
            pa.field("message_id", pa.string()),
            pa.field("parent_id", pa.string()),
            pa.field("prompt", pa.list_(MESSAGE)),
            pa.field("response", pa.string()),
            pa.field("model", pa.string()),
            pa.field("provider", pa.string()),
            pa.field("prompt_version", pa.string()),
            pa.field("app", pa.string()),
            pa.field("user_id", pa.string()),
            pa.field("tokens_in", pa.int64()),
            pa.field("tokens_out", pa.int64()),
            pa.field("tokens_derived", pa.bool_()),
            pa.field("latency_ms", pa.float64()),
            pa.field("time_to_first_token_ms", pa.float64()),
            pa.field("cost_usd", pa.float64()),
            pa.field("status", pa.string()),
            pa.field("error", pa.string()),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("metadata", pa.string()),
        ]
        + _KAFKA
    ),
    "feedback": pa.schema(
        _COMMON
        + [
            pa.field("conversation_id", pa.string()),
            pa.field("message_id", pa.string()),
            pa.field("kind", pa.string()),
            pa.field("feedback_source", pa.string()),
            pa.field("author_id", pa.string()),
            pa.field("thumb", pa.string()),
            pa.field("rating_value", pa.float64()),
            pa.field("rating_scale_min", pa.float64()),
            pa.field("rating_scale_max", pa.float64()),
            pa.field("rating_normalized", pa.float64()),
            pa.field("rating_name", pa.string()),
            pa.field("rating_label", pa.string()),
            pa.field("category", pa.string()),
            pa.field("comment", pa.string()),
            pa.field("correction", pa.string()),
            pa.field("chosen_message_id", pa.string()),
            pa.field("rejected_message_id", pa.string()),
            pa.field("preference_strength", pa.float64()),
            pa.field("preference_tie", pa.bool_()),
            pa.field("metadata", pa.string()),
        ]
        + _KAFKA
    ),
    "metrics": pa.schema(
        _COMMON
        + [
            pa.field("conversation_id", pa.string()),
            pa.field("message_id", pa.string()),
            pa.field("name", pa.string()),
            pa.field("value", pa.float64()),
            pa.field("unit", pa.string()),
            pa.field("metadata", pa.string()),
        ]
        + _KAFKA
    ),
    "quarantine": pa.schema(
        [
            pa.field("quarantine_id", pa.string()),
            pa.field("quarantined_at", TS),
            pa.field("reason_code", pa.string()),
            pa.field("reason", pa.string()),
            pa.field("event_id", pa.string()),
            pa.field("event_type", pa.string()),
            pa.field("raw", pa.binary()),
            pa.field("raw_size_bytes", pa.int64()),
            pa.field("kafka_timestamp_ms", pa.int64()),
        ]
        + _KAFKA
    ),
}
PARTITION_COLUMN = {"interactions": "occurred_at", "feedback": "occurred_at", "metrics": "occurred_at", "quarantine": "quarantined_at"}
TABLE_FOR_TYPE = {"interaction": "interactions", "feedback": "feedback", "metric": "metrics"}
KEY_COLUMN = {"interactions": "event_id", "feedback": "event_id", "metrics": "event_id", "quarantine": "quarantine_id"}


def _json_or_none(value: Any) -> str | None:
    return orjson.dumps(value).decode() if value else None


def _common(event: dict[str, Any], ingested_at: datetime, topic: str, partition: int, offset: int) -> dict[str, Any]:
    return {
        "event_id": event["event_id"],
        "schema_version": event["schema_version"],
        "occurred_at": parse_occurred_at(event["occurred_at"]),
        "ingested_at": ingested_at,
        "project": event["project"],
        "source": event["source"],
        "kafka_topic": topic,
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def interaction_row(body: dict[str, Any]) -> dict[str, Any]:
    """Columns of ``interactions`` taken from a validated interaction body."""
    return {
        "conversation_id": body["conversation_id"],
        "message_id": body["message_id"],
        "parent_id": body.get("parent_id"),
        "prompt": body["prompt"],
        "response": body["response"],
        "model": body["model"],
        "provider": body.get("provider"),
        "prompt_version": body.get("prompt_version"),
        "app": body.get("app"),
        "user_id": body.get("user_id"),
        "tokens_in": body.get("tokens_in"),
        "tokens_out": body.get("tokens_out"),
        "tokens_derived": body.get("tokens_derived"),
        "latency_ms": body.get("latency_ms"),
        "time_to_first_token_ms": body.get("time_to_first_token_ms"),
        "cost_usd": body.get("cost_usd"),
        "status": body.get("status", "ok"),
        "error": body.get("error"),
        "tags": body.get("tags"),
        "metadata": _json_or_none(body.get("metadata")),
    }


def feedback_row(body: dict[str, Any]) -> dict[str, Any]:
    """Columns of ``feedback`` taken from a validated feedback body (flattened by kind)."""
    rating = body.get("rating") or {}
    pref = body.get("preference") or {}
    normalized = None
    if rating:
        span = rating["scale_max"] - rating["scale_min"]
        normalized = (rating["value"] - rating["scale_min"]) / span if span else None
    return {
        "conversation_id": body["conversation_id"],
        "message_id": body.get("message_id"),
        "kind": body["kind"],
        "feedback_source": body["source"],
        "author_id": body.get("author_id"),
        "thumb": body.get("thumb"),
        "rating_value": rating.get("value"),
        "rating_scale_min": rating.get("scale_min"),
        "rating_scale_max": rating.get("scale_max"),
        "rating_normalized": normalized,
        "rating_name": rating.get("name", "overall") if rating else None,
        "rating_label": rating.get("label"),
        "category": body.get("category"),
        "comment": body.get("comment"),
        "correction": body.get("correction"),
        "chosen_message_id": pref.get("chosen_message_id"),
        "rejected_message_id": pref.get("rejected_message_id"),
        "preference_strength": pref.get("strength"),
        "preference_tie": pref.get("tie", False) if pref else None,
        "metadata": _json_or_none(body.get("metadata")),
    }


def metric_row(body: dict[str, Any]) -> dict[str, Any]:
    """Columns of ``metrics`` taken from a validated metric body."""
    return {
        "conversation_id": body.get("conversation_id"),
        "message_id": body["message_id"],
        "name": body["name"],
        "value": body["value"],
        "unit": body.get("unit"),
        "metadata": _json_or_none(body.get("metadata")),
    }


_BODY_ROW = {"interaction": interaction_row, "feedback": feedback_row, "metric": metric_row}


def event_row(event: dict[str, Any], ingested_at: datetime, topic: str, partition: int, offset: int) -> dict[str, Any]:
    """One lake row for a validated event, with its Kafka coordinates."""
    row = _common(event, ingested_at, topic, partition, offset)
    row.update(_BODY_ROW[event["event_type"]](event["body"]))
    return row
