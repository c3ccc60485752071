"""Tülu-1 human evaluation (allenai/open-instruct) as version-1 events.

``eval_instances_tulu_1.jsonl`` holds prompts with model completions (one interaction per distinct
``(instance id, model)``); ``eval_annotations_tulu_1.jsonl`` holds one A/B judgement per row, which
becomes two thumbs (``completion_*_is_acceptable``) and one preference. Instances have no time of
their own: an interaction takes the earliest annotation ``timestamp`` of its instance (naive, UTC).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from feedback.contracts import build_event, stable_event_id
from feedback.errors import ReplayError
from feedback.replay.tokens import TOKEN_COUNTER, count_tokens

NAME = "tulu"
FOLDER = "tulu1_human_eval"
INSTANCES = "eval_instances_tulu_1.jsonl"
ANNOTATIONS = "eval_annotations_tulu_1.jsonl"
APP = "tulu1_human_eval"
_THUMBS = {"yes": "up", "no": "down"}
# preference label -> (chosen position, strength, tie)
_PREFERENCES = {
    "a-is-better": ("a", 1.0, False),
    "a-is-slightly-better": ("a", 0.5, False),
    "tie": ("a", 0.0, True),
    "b-is-slightly-better": ("b", 0.5, False),
    "b-is-better": ("b", 1.0, False),
}


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise ReplayError(f"tulu file not found: {path}")
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _time(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _message_id(instance_id: str, model: str) -> str:
    return f"tulu:{instance_id}:{model}"


def _completions(instances: list[dict], annotations: list[dict]) -> dict[tuple[str, str], tuple[str, str, bool]]:
    """``{(instance_id, model): (prompt, completion, from_annotation)}``: the instances file first,
    then any pair that only an annotation names (with the annotation's texts)."""
    out: dict[tuple[str, str], tuple[str, str, bool]] = {}
    for inst in instances:
        for c in inst["completions"]:
            out.setdefault((inst["id"], c["model"]), (inst["prompt"], c["completion"], False))
    for a in annotations:
        for pos in ("a", "b"):
            key = (a["instance_id"], a[f"model_{pos}"])
            out.setdefault(key, (a["prompt"] or "", a[f"completion_{pos}"] or "", True))
    return out


def _annotation_feedback(a: dict, time_source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event id, body) of one annotation row's two thumbs and its preference."""
    base = {"conversation_id": f"tulu:{a['instance_id']}", "source": "annotator", "author_id": a["evaluator"]}
    ids = {pos: _message_id(a["instance_id"], a[f"model_{pos}"]) for pos in ("a", "b")}
    for pos in ("a", "b"):
        verdict = a[f"completion_{pos}_is_acceptable"]
        if verdict is None:
            continue
        if verdict not in _THUMBS:
            raise ReplayError(f"tulu annotation {a['id']}: unknown acceptability {verdict!r}")
        yield stable_event_id(NAME, a["id"], pos), {
            **base, "message_id": ids[pos], "kind": "thumb", "thumb": _THUMBS[verdict],
            "metadata": {"annotation_id": a["id"], "position": pos, "event_time_source": time_source}}
    if a["preference"] not in _PREFERENCES:
        raise ReplayError(f"tulu annotation {a['id']}: unknown preference {a['preference']!r}")
    chosen, strength, tie = _PREFERENCES[a["preference"]]
    rejected = "b" if chosen == "a" else "a"
    yield stable_event_id(NAME, a["id"], "preference"), {
        **base, "message_id": None, "kind": "preference",
        "preference": {"chosen_message_id": ids[chosen], "rejected_message_id": ids[rejected],
                       "strength": strength, "tie": tie},
        "metadata": {"preference_label": a["preference"], "annotation_id": a["id"], "event_time_source": time_source}}


def events(data_dir: Path, *, project: str, replay_time: datetime) -> Iterator[dict]:
    """Events of ``<data_dir>/tulu1_human_eval/``: all interactions first, then per annotation row
    (file order) its two thumbs and its preference.

    Interactions: ``message_id = tulu:<instance_id>:<model>``, prompt = one user message; tokens are
    the SmolLM2 tokenizer's counts; occurred_at = the instance's earliest annotation, else
    ``replay_time``. Raises ReplayError for a missing file or an unknown label.
    """
    folder = Path(data_dir) / FOLDER
    instances, annotations = _read_jsonl(folder / INSTANCES), _read_jsonl(folder / ANNOTATIONS)
    first_seen: dict[str, datetime] = {}
    for a in annotations:
        if not a["timestamp"]:
            continue
        ts = _time(a["timestamp"])
        first_seen[a["instance_id"]] = min(ts, first_seen.get(a["instance_id"], ts))
    completions = _completions(instances, annotations)
    texts = sorted({t for prompt, completion, _ in completions.values() for t in (prompt, completion)})
    tokens = dict(zip(texts, count_tokens(texts)))
    source = f"replay:{NAME}"

    for (instance_id, model), (prompt, completion, from_annotation) in completions.items():
        when = first_seen.get(instance_id)
        metadata = {"event_time_source": "annotation.timestamp (earliest)" if when else "replay",
                    "token_counter": TOKEN_COUNTER}
        if from_annotation:
            metadata["from_annotation"] = True
        body = {
            "conversation_id": f"tulu:{instance_id}",
            "message_id": _message_id(instance_id, model),
            "parent_id": None,
            "prompt": [{"role": "user", "content": prompt}],
            "response": completion,
            "model": model,
            "provider": None,
            "app": APP,
            "user_id": None,
            "tokens_in": tokens[prompt],
            "tokens_out": tokens[completion],
            "tokens_derived": True,
            "status": "ok",
            "metadata": metadata,
        }
        yield build_event("interaction", body, project=project, source=source,
                          event_id=stable_event_id(NAME, instance_id, model, "interaction"),
                          occurred_at=when or replay_time)
    for a in annotations:
        when, time_source = (_time(a["timestamp"]), "timestamp") if a["timestamp"] else (replay_time, "replay")
        for event_id, body in _annotation_feedback(a, time_source):
            yield build_event("feedback", body, project=project, source=source, event_id=event_id,
                              occurred_at=when)
