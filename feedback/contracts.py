"""The versioned event contracts in ``schemas/``: build, encode, decode and validate events.

The JSON Schema files (draft-07) are the source of truth, so any language can validate against
them; this module validates with ``jsonschema-rs`` (Rust; ~10x faster than fastjsonschema here).
An event is valid when the envelope
schema accepts it, its ``body`` passes the schema of its ``event_type``, its major
``schema_version`` is one this build knows, and its UTF-8 JSON is at most ``MAX_EVENT_BYTES``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

from feedback.config import MAX_EVENT_BYTES
from feedback.errors import ContractError

SCHEMA_VERSION = "1.0"
KNOWN_MAJOR_VERSIONS = ("1",)
_ID_NAMESPACE = uuid.UUID("5b0c2f4e-3a51-4f0e-9d6e-6b2f8f6a9e11")


def schemas_dir() -> Path:
    """Folder of the versioned schema files (``schemas/`` in a checkout, bundled in a wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schemas", here.parent / "schemas"):
        if (candidate / "v1").is_dir():
            return candidate
    raise ContractError("schema_invalid", f"no schemas folder next to {here}")


@lru_cache(maxsize=None)
def _load_schema(major: str, name: str) -> dict[str, Any]:
    return orjson.loads((schemas_dir() / f"v{major}" / f"{name}.schema.json").read_bytes())


@lru_cache(maxsize=None)
def _compiled(major: str, name: str) -> jsonschema_rs.Draft7Validator:
    return jsonschema_rs.Draft7Validator(_load_schema(major, name))


def _violation(exc: jsonschema_rs.ValidationError, prefix: str) -> str:
    """``<json path>: violates '<rule>'`` — built from paths only: the library's message may quote
    the offending value, which can be user text."""
    path = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.instance_path)
    rule = next((str(p) for p in reversed(list(exc.schema_path)) if isinstance(p, str)), "schema")
    return f"{path}: violates {rule!r}"


def stable_event_id(*parts: object) -> str:
    """A deterministic event id (UUID5 text) from ``parts``, so a replay of the same source record
    always yields the same id and lands once."""
    return str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def utc_iso(ts: datetime) -> str:
    """RFC 3339 text in UTC with microseconds and ``Z``; naive datetimes are taken as UTC."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@lru_cache(maxsize=4096)
def parse_occurred_at(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with offset into an aware UTC datetime.

    Cached (datetimes are immutable): ingestion parses each event's time when validating and again
    when building its row, and the second parse is then a lookup.
    Raises ContractError(``schema_invalid``) when it has no offset or is not a real time.
    """
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ContractError("schema_invalid", "occurred_at is not a valid RFC 3339 time") from exc
    if ts.tzinfo is None:
        raise ContractError("schema_invalid", "occurred_at has no UTC offset")
    return ts.astimezone(UTC)


def build_event(
    event_type: str,
    body: dict[str, Any],
    *,
    project: str,
    source: str,
    event_id: str | None = None,
    occurred_at: datetime | str | None = None,
) -> dict[str, Any]:
    """Wrap ``body`` in a version-1 envelope. Does not validate (see :func:`validate`).

    ``event_id`` defaults to a random UUID4; ``occurred_at`` defaults to now (UTC).
    """
    if isinstance(occurred_at, datetime) or occurred_at is None:
        occurred_at = utc_iso(occurred_at or datetime.now(UTC))
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": occurred_at,
        "project": project,
        "source": source,
        "body": body,
    }


def encode(event: dict[str, Any]) -> bytes:
    """UTF-8 JSON bytes of ``event`` (orjson; no size check)."""
    return orjson.dumps(event)


def decode(raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> dict[str, Any]:
    """Parse one event's bytes. Raises ContractError ``oversized`` or ``undecodable``."""
    if raw is None:
        raise ContractError("undecodable", "empty record value (tombstone)")
    if len(raw) > max_bytes:
        raise ContractError("oversized", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError("undecodable", f"not UTF-8 JSON ({type(exc).__name__} at pos {exc.pos})") from None
    if not isinstance(event, dict):
        raise ContractError("schema_invalid", f"event is a JSON {type(event).__name__}, not an object")
    return event


def validate(event: dict[str, Any]) -> dict[str, Any]:
    """Check ``event`` against the envelope and its body schema; return it unchanged.

    Raises ContractError ``unsupported_version`` for an unknown major version and
    ``schema_invalid`` (with the failing JSON path and rule, never the value) otherwise.
    """
    version = event.get("schema_version")
    major = version.split(".", 1)[0] if isinstance(version, str) else None
    if major not in KNOWN_MAJOR_VERSIONS:
        raise ContractError("unsupported_version", f"schema_version {str(version)[:20]!r} not in {KNOWN_MAJOR_VERSIONS}")
    try:
        _compiled(major, "envelope").validate(event)
    except jsonschema_rs.ValidationError as exc:
        raise ContractError("schema_invalid", _violation(exc, "data")) from None
    try:
        _compiled(major, event["event_type"]).validate(event["body"])
    except jsonschema_rs.ValidationError as exc:
        raise ContractError("schema_invalid", f"{_violation(exc, 'data.body')} ({event['event_type']})") from None
    parse_occurred_at(event["occurred_at"])
    return event
