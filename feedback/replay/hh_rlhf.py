"""Anthropic HH-RLHF test splits as version-1 events.

Each line is a pair of full transcripts (``chosen``, ``rejected``) that share the dialogue prefix
and differ in the last Assistant turn. Each transcript becomes an interaction (prompt = the turns
before its last Assistant turn, response = that turn; a rare trailing Human turn is left out and
counted in ``metadata.turns_after_response``) and the pair one preference. The source names
no model and has no timestamps: ``model`` is ``unknown`` and every event occurs at the replay time.
Pairs with ``chosen == rejected`` are kept, flagged ``metadata.identical_pair`` on the preference.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from feedback.contracts import build_event, stable_event_id
from feedback.errors import ReplayError
from feedback.replay.tokens import TOKEN_COUNTER, count_tokens

NAME = "hh_rlhf"
FOLDER = "hh_rlhf"
SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
_MARKER = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_turns(transcript: str) -> list[dict[str, str]]:
    """``[{"role": "user"|"assistant", "content": stripped text}, ...]`` from a transcript split on
    the ``\\n\\nHuman:`` / ``\\n\\nAssistant:`` markers (text before the first marker is dropped)."""
    parts = _MARKER.split(transcript)
    return [{"role": _ROLES[role], "content": text.strip()} for role, text in zip(parts[1::2], parts[2::2])]


def split_last_reply(turns: list[dict[str, str]]) -> tuple[list[dict[str, str]], str | None, int]:
    """(prompt, response, dropped): the turns before the last assistant turn, that turn's text, and
    how many turns follow it (left out); all turns, None and 0 when there is no assistant turn."""
    for i in range(len(turns) - 1, -1, -1):
        if turns[i]["role"] == "assistant":
            return turns[:i], turns[i]["content"], len(turns) - i - 1
    return turns, None, 0


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        raise ReplayError(f"hh_rlhf file not found: {path}")
    with gzip.open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def _subset_events(path: Path, subset: str, project: str, replay_time: datetime) -> Iterator[dict]:
    rows = _read(path)
    pairs = [{k: split_last_reply(parse_turns(row[k])) for k in ("chosen", "rejected")} for row in rows]
    texts = sorted({t["content"] for p in pairs for prompt, _, _ in p.values() for t in prompt}
                   | {reply or "" for p in pairs for _, reply, _ in p.values()})
    tokens = dict(zip(texts, count_tokens(texts)))
    source, app = f"replay:{NAME}", f"hh_rlhf/{subset}"

    for index, (row, pair) in enumerate(zip(rows, pairs)):
        conversation_id = f"hh_rlhf:{subset}:{index}"
        for side, (prompt, reply, dropped) in pair.items():
            metadata: dict[str, Any] = {"event_time_source": "replay", "token_counter": TOKEN_COUNTER}
            if reply is None:
                metadata["no_assistant_turn"] = True
            if dropped:
                metadata["turns_after_response"] = dropped
            body = {
                "conversation_id": conversation_id,
                "message_id": f"{conversation_id}:{side}",
                "parent_id": None,
                "prompt": prompt,
                "response": reply or "",
                "model": "unknown",
                "provider": "anthropic-hh-rlhf",
                "app": app,
                "user_id": None,
                "tokens_in": sum(tokens[t["content"]] for t in prompt),
                "tokens_out": tokens[reply or ""],
                "tokens_derived": True,
                "status": "ok",
                "metadata": metadata,
            }
            yield build_event("interaction", body, project=project, source=source,
                              event_id=stable_event_id(NAME, subset, index, side), occurred_at=replay_time)
        metadata = {"event_time_source": "replay"}
        if row["chosen"] == row["rejected"]:
            metadata["identical_pair"] = True
        body = {
            "conversation_id": conversation_id,
            "message_id": None,
            "kind": "preference",
            "source": "annotator",
            "author_id": None,
            "preference": {"chosen_message_id": f"{conversation_id}:chosen",
                           "rejected_message_id": f"{conversation_id}:rejected", "strength": None, "tie": False},
            "metadata": metadata,
        }
        yield build_event("feedback", body, project=project, source=source,
                          event_id=stable_event_id(NAME, subset, index, "preference"), occurred_at=replay_time)


def events(data_dir: Path, *, project: str, replay_time: datetime) -> Iterator[dict]:
    """Events of ``<data_dir>/hh_rlhf/<subset>_test.jsonl.gz`` for each of ``SUBSETS``: per line
    (``line_index`` from 0) the chosen and the rejected interaction, then their preference.

    Tokens are the SmolLM2 tokenizer's counts of the turn texts (batched per file). Raises
    ReplayError when a subset file is missing.
    """
    for subset in SUBSETS:
        yield from _subset_events(Path(data_dir) / FOLDER / f"{subset}_test.jsonl.gz", subset, project, replay_time)
