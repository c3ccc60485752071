"""Seed prompts: real prompts a synthetic set is grown from, with their lineage.

Three sources, one result (:class:`SeedSet`):

* ``topic`` (default ``"confusion"``): prompts assigned to a topic by :mod:`feedback.topics` (lake tables
  ``topics`` and ``topic_assignments``: ``message_id → topic_id``; ``"confusion"`` means the topics its
  ``confusion(...)`` function ranks first). That package is imported lazily by :func:`from_topic`, an
  adapter kept small on purpose; when it or its tables are missing it raises SynthError naming the
  alternatives below.
* ``dataset``: rows of a dataset version's ``train`` split (any format; the answer is the sft message,
  the preference ``chosen`` or a thumbs-up kto completion).
* ``app``: answered interactions of one app in the lake (current ``interactions`` snapshot).

A seed is one real (prompt, answer) pair: the whole prompt conversation, the text of its last user turn
(what generation prompts quote), the real answer (None where there is none; used for the reward floor)
and ids (message, conversation, topic). Seeds are sampled reproducibly (``seed``), distinct by
normalised last user turn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from finetune.dedup import normalise
from finetune.synth.errors import SynthError


@dataclass(frozen=True)
class Seed:
    """One real prompt: ``message_id`` / ``conversation_id`` of the answer in the lake, ``prompt`` the
    conversation before the answer (``[{role, content}]``), ``text`` its last user turn, ``response`` the
    real answer or None, ``topic_id`` or None."""

    message_id: str
    conversation_id: str | None
    prompt: list[dict]
    text: str
    response: str | None = None
    topic_id: str | None = None


@dataclass
class SeedSet:
    """Seeds and where they came from: ``source`` (``topic:<id>``, ``dataset:<version>``, ``app:<app>``)
    and ``lake_snapshots`` (``{"interactions": id, "feedback": id}`` where known)."""

    seeds: list[Seed]
    source: str
    lake_snapshots: dict[str, int | None] = field(default_factory=lambda: {"interactions": None, "feedback": None})


def _last_user(prompt: list[dict]) -> str | None:
    for m in reversed(prompt or []):
        if m.get("role") == "user" and (m.get("content") or "").strip():
            return m["content"]
    return None


def _sample(seeds: list[Seed], k: int, seed: int) -> list[Seed]:
    """Up to ``k`` seeds with distinct normalised texts, sampled with ``random.Random(seed)`` from the
    candidates sorted by message id (so the result does not depend on read order)."""
    seen, distinct = set(), []
    for s in sorted(seeds, key=lambda s: s.message_id):
        key = normalise(s.text)
        if key and key not in seen:
            seen.add(key)
            distinct.append(s)
    rng = random.Random(seed)
    return rng.sample(distinct, min(k, len(distinct)))


def from_rows(rows: list[dict], fmt: str, k: int, seed: int = 0, topic_id: str | None = None) -> list[Seed]:
    """Seeds from dataset rows of format ``fmt`` (see the module doc)."""
    out = []
    for r in rows:
        if fmt == "sft":
            msgs = r.get("messages") or []
            if not msgs or msgs[-1]["role"] != "assistant":
                continue
            prompt, response, mid = msgs[:-1], msgs[-1]["content"], r.get("message_id")
        elif fmt == "preference":
            prompt, response, mid = r.get("prompt") or [], (r.get("chosen") or [{}])[0].get("content"), r.get("chosen_message_id")
        else:
            prompt = r.get("prompt") or []
            response = (r.get("completion") or [{}])[0].get("content") if r.get("label") else None
            mid = r.get("message_id")
        text = _last_user(prompt)
        if text and mid:
            out.append(Seed(mid, r.get("conversation_id"), [dict(role=m["role"], content=m["content"]) for m in prompt],
                            text, response, topic_id))
    return _sample(out, k, seed)


def from_dataset(catalog, version: str, k: int, seed: int = 0, lake=None) -> SeedSet:
    """Seeds from the ``train`` split of dataset ``version``. Raises SynthError when unknown or empty."""
    from feedback.errors import FlywheelError
    from finetune import registry

    try:
        row = registry.get(catalog, version, lake)
    except FlywheelError as exc:
        raise SynthError(str(exc)) from exc
    path = Path(row["path"]) / "data" / "train.parquet"
    rows = pq.read_table(path).to_pylist() if path.exists() else []
    seeds = from_rows(rows, row["format"], k, seed)
    if not seeds:
        raise SynthError(f"{version}: no usable seed prompts in its train split")
    return SeedSet(seeds, f"dataset:{version}", {"interactions": row.get("snapshot_interactions"),
                                                 "feedback": row.get("snapshot_feedback")})


def _interaction_seeds(con, where: str, params: list, topic_of: dict[str, str] | None = None) -> list[Seed]:
    rows = con.execute(f"""
        SELECT message_id, conversation_id, prompt, response FROM interactions
        WHERE message_id IS NOT NULL AND response IS NOT NULL AND len(prompt) > 0 AND {where}""", params).fetchall()
    out = []
    for mid, conv, prompt, response in rows:
        prompt = [{"role": m["role"], "content": m["content"] or ""} for m in prompt]
        text = _last_user(prompt)
        if text:
            out.append(Seed(mid, conv, prompt, text, response, (topic_of or {}).get(mid)))
    return out


def from_app(catalog, app: str, k: int, seed: int = 0, lake=None) -> SeedSet:
    """Seeds from the lake's answered interactions of ``app`` (current snapshots). Raises SynthError when
    the lake has no data or the app no usable prompts."""
    from feedback.errors import FlywheelError
    from finetune import select

    try:
        con, snap = select.open_lake(catalog, lake, files=False)
    except FlywheelError as exc:
        raise SynthError(str(exc)) from exc
    try:
        seeds = _sample(_interaction_seeds(con, "app = ?", [app]), k, seed)
    finally:
        con.close()
    if not seeds:
        raise SynthError(f"no answered interactions with a user prompt for app {app!r} in the lake")
    return SeedSet(seeds, f"app:{app}", snap.as_dict())


def _topic_ids(tcon, topic: str, max_topics: int, min_n: int) -> list[str]:
    """``[topic]``, or for ``"confusion"`` the first ``max_topics`` topics of confusion of the current
    topic model (:func:`feedback.topics.kpis.confusion`: n ≥ ``min_n`` rated answers, lowest upper
    bound of the satisfaction interval first)."""
    if topic != "confusion":
        return [topic]
    from feedback.topics import kpis

    ranked = kpis.confusion(kpis.topic_table(tcon, min_n=min_n), min_n=min_n, limit=max_topics)
    ids = [str(i) for i in ranked["topic_id"]]
    if not ids:
        raise SynthError(f"no topics of confusion (no topic with ≥ {min_n} rated answers): pass --topic <id>, "
                         "--seed-dataset or --seed-app")
    return ids


def from_topic(catalog, topic: str, k: int, seed: int = 0, lake=None, max_topics: int = 3,
               min_n: int = 30) -> SeedSet:
    """Seeds from the prompts assigned to ``topic`` (or the topics of confusion), see the module doc.
    Raises SynthError when ``feedback.topics`` or its tables are not there, or the topic has no prompts."""
    from feedback.config import LakeSettings
    from feedback.errors import FlywheelError
    from feedback.topics import store
    from finetune import select

    lake = lake or LakeSettings()
    tcon = store.connect(catalog, lake)
    try:
        if store.current_version(tcon) is None:
            raise SynthError("topics are not built (`flywheel topics build`): build them first, "
                             "or pass --seed-dataset <version> / --seed-app <app>")
        ids = _topic_ids(tcon, topic, max_topics, min_n)
        marks = ", ".join("?" for _ in ids)
        topic_of = dict(tcon.execute(f"SELECT CAST(message_id AS VARCHAR), CAST(topic_id AS VARCHAR) FROM "
                                     f"current_assignments WHERE CAST(topic_id AS VARCHAR) IN ({marks})", ids).fetchall())
    finally:
        tcon.close()
    try:
        con, snap = select.open_lake(catalog, lake, files=False)
    except FlywheelError as exc:
        raise SynthError(str(exc)) from exc
    try:
        if not topic_of:
            raise SynthError(f"no prompts are assigned to topic(s) {', '.join(ids)}")
        import pyarrow as pa

        con.register("wanted", pa.table({"message_id": pa.array(sorted(topic_of), pa.string())}))
        seeds = _sample(_interaction_seeds(con, "message_id IN (SELECT message_id FROM wanted)", [], topic_of), k, seed)
    finally:
        con.close()
    if not seeds:
        raise SynthError(f"topic(s) {', '.join(ids)}: no answered interactions with a user prompt")
    return SeedSet(seeds, f"topic:{topic}", snap.as_dict())
