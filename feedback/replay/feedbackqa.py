"""FeedbackQA (McGill-NLP) as version-1 events.

Each item is a question answered by a retrieved FAQ passage, rated by several raters on a 4-level
scale with a free-text explanation each. The item becomes an interaction (response = the passage's
``section_content``; ``app`` = the deployment: Australia, CDC, UK, WHO); each rater gives one
``rating`` (Bad=1 .. Excellent=4, name ``overall``) and, where written, one ``comment``. The source
has no timestamps: every event occurs at the replay time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson

from feedback.contracts import build_event, stable_event_id
from feedback.errors import ReplayError
from feedback.replay.tokens import TOKEN_COUNTER, count_tokens

NAME = "feedbackqa"
FOLDER = "feedbackqa"
DOMAINS = ("Australia", "CDC", "UK", "WHO")
SPLITS = ("train", "valid")
MODEL = "feedbackqa/retrieved-faq"
RATING_VALUES = {"Bad": 1, "Could be Improved": 2, "Acceptable": 3, "Excellent": 4}


def answer_text(passage: dict) -> str:
    """The passage's ``reference.section_content``, else its joined ``section_headers``, else ``""``."""
    ref = passage.get("reference") or {}
    return ref.get("section_content") or "\n".join(ref.get("section_headers") or [])


def files(data_dir: Path) -> list[tuple[str, str, Path]]:
    """``[(domain, split, path), ...]`` of the ``feedback_<split>.json`` files present, in
    ``DOMAINS`` x ``SPLITS`` order."""
    root = Path(data_dir) / FOLDER
    found = [(d, s, root / d / f"feedback_{s}.json") for d in DOMAINS for s in SPLITS]
    return [f for f in found if f[2].is_file()]


def _file_events(path: Path, domain: str, split: str, project: str, replay_time: datetime) -> Iterator[dict]:
    items = orjson.loads(path.read_bytes())
    answers = [answer_text(item["passage"]) for item in items]
    counts = count_tokens([item["question"] for item in items] + answers)
    q_tokens, a_tokens = counts[: len(items)], counts[len(items):]
    source = f"replay:{NAME}"

    def event(event_type: str, body: dict, *id_parts: object) -> dict:
        return build_event(event_type, body, project=project, source=source, occurred_at=replay_time,
                           event_id=stable_event_id(NAME, domain, split, *id_parts))

    for index, item in enumerate(items):
        conversation_id = f"feedbackqa:{domain}:{split}:{index}"
        message_id = f"{conversation_id}:answer"
        passage = item["passage"]
        yield event("interaction", {
            "conversation_id": conversation_id,
            "message_id": message_id,
            "parent_id": None,
            "prompt": [{"role": "user", "content": item["question"]}],
            "response": answers[index],
            "model": MODEL,
            "provider": None,
            "app": domain,
            "user_id": None,
            "tokens_in": q_tokens[index],
            "tokens_out": a_tokens[index],
            "tokens_derived": True,
            "status": "ok",
            "metadata": {"passage_id": passage.get("passage_id"), "uri": passage.get("uri"),
                         "event_time_source": "replay", "token_counter": TOKEN_COUNTER},
        }, index, "interaction")
        base = {"conversation_id": conversation_id, "message_id": message_id, "source": "annotator"}
        feedback = item.get("feedback") or []
        for i, label in enumerate(item.get("rating") or []):
            if label not in RATING_VALUES:
                raise ReplayError(f"feedbackqa {path} item {index}: unknown rating {label!r}")
            metadata = {"rater_index": i, "event_time_source": "replay"}
            # The source pairs rating[i] with feedback[i] (one rater); raters are anonymous, so the
            # author is that position within this item, never the same id across items.
            rater = {**base, "author_id": f"{conversation_id}:rater{i}"}
            rating = {"value": RATING_VALUES[label], "scale_min": 1, "scale_max": 4, "name": "overall", "label": label}
            yield event("feedback", {**rater, "kind": "rating", "rating": rating, "metadata": metadata},
                        index, "rating", i)
            text = feedback[i] if i < len(feedback) else None
            if isinstance(text, str) and text.strip():
                yield event("feedback", {**rater, "kind": "comment", "comment": text, "metadata": dict(metadata)},
                            index, "comment", i)


def events(data_dir: Path, *, project: str, replay_time: datetime) -> Iterator[dict]:
    """Events of ``<data_dir>/feedbackqa/<Domain>/feedback_<split>.json`` (see :func:`files`): per
    item its interaction, then per rater ``i`` a rating and (non-empty feedback) a comment.

    ``conversation_id = feedbackqa:<domain>:<split>:<index>``; tokens are the SmolLM2 tokenizer's
    counts of the question and the answer (batched per file). Raises ReplayError when no file is
    found or a rating label is unknown.
    """
    found = files(data_dir)
    if not found:
        raise ReplayError(f"no feedbackqa files under {Path(data_dir) / FOLDER}")
    for domain, split, path in found:
        yield from _file_events(path, domain, split, project, replay_time)
