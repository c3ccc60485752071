"""OpenAssistant oasst1 (English validation split) as version-1 events.

The file holds one message per line; the messages of a ``message_tree_id`` form a tree whose paths
from the root are conversations. Every ``assistant`` message becomes an interaction. Note that the
"assistant" replies in oasst1 were written by human volunteers, not by a model, so the interaction's
``model`` is ``oasst1/human-volunteer``. The human signal maps to feedback events:

- ``emojis`` ``+1`` / ``-1`` counts -> that many ``thumb`` events (up / down), on every message;
- ``labels`` (0-1 means over raters) -> one ``rating`` event per label name;
- sibling ``rank`` (0 = best) -> one ``preference`` event per pair of differently ranked siblings.

Prompter messages are not interactions, so thumbs and ratings on them refer to user messages.
Deleted messages are kept and flagged (``metadata.deleted``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import orjson

from feedback.contracts import build_event, stable_event_id
from feedback.errors import ReplayError
from feedback.replay.tokens import TOKEN_COUNTER, count_tokens

NAME = "oasst1"
FOLDER = "oasst1"
FILE = "oasst1_en_validation.jsonl"
MODEL = "oasst1/human-volunteer"
_ROLES = {"prompter": "user", "assistant": "assistant"}
_THUMBS = {"+1": "up", "-1": "down"}


def _time(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _path(msg: dict, by_id: dict[str, dict]) -> tuple[list[dict], bool]:
    """Ancestors of ``msg`` from the root down to its parent, and whether one was missing (orphan)."""
    path, parent_id, seen = [], msg["parent_id"], {msg["message_id"]}
    while parent_id is not None:
        parent = by_id.get(parent_id)
        if parent is None or parent_id in seen:
            return path[::-1], True
        seen.add(parent_id)
        path.append(parent)
        parent_id = parent["parent_id"]
    return path[::-1], False


def _interaction(msg: dict, by_id: dict[str, dict], tokens: dict[str, int]) -> dict[str, Any]:
    path, orphan = _path(msg, by_id)
    parent = by_id.get(msg["parent_id"]) if msg["parent_id"] else None
    return {
        "conversation_id": f"oasst1:{msg['message_tree_id']}",
        "message_id": msg["message_id"],
        "parent_id": msg["parent_id"],
        "prompt": [{"role": _ROLES[m["role"]], "content": m["text"]} for m in path],
        "response": msg["text"],
        "model": MODEL,
        "provider": "openassistant",
        "app": "oasst1",
        "user_id": parent["user_id"] if parent else None,
        "tokens_in": sum(tokens[m["message_id"]] for m in path),
        "tokens_out": tokens[msg["message_id"]],
        "tokens_derived": True,
        "status": "ok",
        "metadata": {
            "deleted": msg["deleted"],
            "review_result": msg["review_result"],
            "rank": msg["rank"],
            "assistant_author_id": msg["user_id"],
            "lang": msg["lang"],
            "orphan": orphan,
            "event_time_source": "created_date",
            "token_counter": TOKEN_COUNTER,
        },
    }


def _message_feedback(msg: dict) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event id, body) of the thumbs and ratings given to one message."""
    base = {"conversation_id": f"oasst1:{msg['message_tree_id']}", "message_id": msg["message_id"],
            "source": "annotator", "author_id": None}
    emojis = msg.get("emojis") or {}
    for name, count in zip(emojis.get("name", []), emojis.get("count", [])):
        if name in _THUMBS:
            for i in range(count):
                yield stable_event_id(NAME, msg["message_id"], "thumb", name, i), {
                    **base, "kind": "thumb", "thumb": _THUMBS[name],
                    "metadata": {"event_time_source": "message.created_date"}}
    labels = msg.get("labels") or {}
    for name, value, count in zip(labels.get("name", []), labels.get("value", []), labels.get("count", [])):
        yield stable_event_id(NAME, msg["message_id"], "rating", name), {
            **base, "kind": "rating", "rating": {"value": value, "scale_min": 0, "scale_max": 1, "name": name},
            "metadata": {"rater_count": count, "aggregate": "mean over raters",
                         "event_time_source": "message.created_date"}}


def _preferences(messages: list[dict]) -> Iterator[tuple[str, dict[str, Any], datetime]]:
    """(event id, body, time) per pair of ranked assistant siblings with different ranks."""
    siblings: dict[str, list[dict]] = defaultdict(list)
    for m in messages:
        if m["role"] == "assistant" and m["rank"] is not None and m["parent_id"] is not None:
            siblings[m["parent_id"]].append(m)
    for group in siblings.values():
        for a, b in combinations(group, 2):
            if a["rank"] == b["rank"]:
                continue
            chosen, rejected = (a, b) if a["rank"] < b["rank"] else (b, a)
            body = {
                "conversation_id": f"oasst1:{chosen['message_tree_id']}",
                "message_id": None,
                "kind": "preference",
                "source": "annotator",
                "author_id": None,
                "preference": {"chosen_message_id": chosen["message_id"],
                               "rejected_message_id": rejected["message_id"], "strength": None, "tie": False},
                "metadata": {"chosen_rank": chosen["rank"], "rejected_rank": rejected["rank"],
                             "event_time_source": "message.created_date (later of the pair)"},
            }
            when = max(_time(a["created_date"]), _time(b["created_date"]))
            yield stable_event_id(NAME, chosen["message_id"], rejected["message_id"], "preference"), body, when


def events(data_dir: Path, *, project: str, replay_time: datetime) -> Iterator[dict]:
    """Events of ``<data_dir>/oasst1/oasst1_en_validation.jsonl``, in file order.

    Per message: its interaction (assistant messages only), then its thumbs and ratings; after all
    messages, the sibling preferences. ``replay_time`` is unused (every record has ``created_date``).
    Token counts are the SmolLM2 tokenizer's counts of the message texts (prompt = the path from the
    tree root to the parent). Raises ReplayError when the file is missing.
    """
    path = Path(data_dir) / FOLDER / FILE
    if not path.is_file():
        raise ReplayError(f"oasst1 file not found: {path}")
    messages = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    by_id = {m["message_id"]: m for m in messages}
    tokens = dict(zip(by_id, count_tokens([m["text"] for m in by_id.values()])))

    def event(event_type: str, event_id: str, body: dict, when: datetime) -> dict:
        return build_event(event_type, body, project=project, source=f"replay:{NAME}",
                           event_id=event_id, occurred_at=when)

    for msg in messages:
        when = _time(msg["created_date"])
        if msg["role"] == "assistant":
            body = _interaction(msg, by_id, tokens)
            yield event("interaction", stable_event_id(NAME, msg["message_id"], "interaction"), body, when)
        for event_id, body in _message_feedback(msg):
            yield event("feedback", event_id, body, when)
    for event_id, body, when in _preferences(messages):
        yield event("feedback", event_id, body, when)
