"""``flywheel dataset build``: spec → selection → rows in TRL's format → cleaning → splits → files.

Steps, each counted in the dataset card (:class:`BuildReport`):

1. **selected** — candidates from the lake (:mod:`finetune.select`), at pinned snapshots;
2. **empty turns** — a message, response, chosen, rejected or completion that is empty or blank;
3. **chosen == rejected** (preference) — the same text on both sides (after whitespace/case normalisation);
4. **safety** — answers the source labels unsafe (``cleaning.safety_labels``; for preference the chosen
   side, for kto only rows labelled desirable);
5. **length** — a response, chosen, rejected or completion outside [``min_chars``, ``max_chars``];
6. **PII** — redacted in every distinct text with Presidio (:mod:`finetune.pii`); counted per entity
   (per distinct text), rows kept;
7. **duplicates** — exact (same normalised texts), then near-duplicates: the prompt and every answer
   text in the same MinHash LSH clusters as an earlier row's (:mod:`finetune.dedup`);
8. **split** — by conversation and near-duplicate cluster of the prompt, so neither crosses splits.

The version id is ``<name>-<first 12 hex of sha256(spec hash, snapshot ids)>``: the same spec on the
same snapshots is the same version, written byte for byte the same.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pyiceberg.catalog import Catalog

from feedback.config import LakeSettings
from finetune import dedup, select, splits
from finetune.errors import DatasetError
from finetune.spec import DatasetSpec

Message = dict[str, str]


@dataclass
class BuildReport:
    """Counts after each step, PII redactions, split sizes and the distributions, for the card."""

    steps: list[tuple[str, int]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    pii: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    distribution: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    seconds: float = 0.0

    def step(self, name: str, rows: int, dropped: int | None = None) -> None:
        self.steps.append((name, rows))
        if dropped is not None:
            self.dropped[name] = dropped


@dataclass
class Built:
    """A built dataset version in memory: one DataFrame per split, and its lineage."""

    version: str
    spec: DatasetSpec
    snapshot: select.LakeSnapshot
    splits: dict[str, pd.DataFrame]
    report: BuildReport


def version_id(spec: DatasetSpec, snapshot: select.LakeSnapshot) -> str:
    """``<name>-<12 hex>`` from the spec's hash and the snapshot ids."""
    key = f"{spec.sha256()}:{snapshot.interactions}:{snapshot.feedback}"
    return f"{spec.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _messages(prompt: Any) -> list[Message]:
    return [{"role": m["role"], "content": m["content"]} for m in (prompt if prompt is not None else [])]


def _assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def _blank(text: Any) -> bool:
    return not isinstance(text, str) or not text.strip()


def rows_of(spec: DatasetSpec, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Candidate rows in TRL's columns (conversational), with lineage columns kept beside them."""
    rows = []
    for rec in frame.to_dict("records"):
        prompt = _messages(rec["prompt"])
        meta = {k: rec.get(k) for k in ("conversation_id", "source", "app", "model", "prompt_version", "origin")}
        if spec.format == "sft":
            rows.append({"messages": prompt + _assistant(rec["response"]), **meta, "message_id": rec["message_id"],
                         "corrected": bool(rec["corrected"]), "_unsafe": bool(rec["unsafe"])})
        elif spec.format == "preference":
            rows.append({"prompt": prompt, "chosen": _assistant(rec["chosen_text"]),
                         "rejected": _assistant(rec["rejected_text"]),
                         "strength": None if pd.isna(rec["strength"]) else float(rec["strength"]), **meta,
                         "chosen_message_id": rec["chosen_message_id"],
                         "rejected_message_id": rec["rejected_message_id"], "rejected_model": rec["rejected_model"],
                         "_unsafe": bool(rec["unsafe"])})
        else:
            rows.append({"prompt": prompt, "completion": _assistant(rec["response"]), "label": bool(rec["label"]),
                         **meta | {"origin": "thumbs"}, "message_id": rec["message_id"], "_unsafe": bool(rec["unsafe"])})
    return rows


def _texts(spec: DatasetSpec, row: dict) -> list[str]:
    """The answer-side texts of a row (those that length bounds apply to)."""
    if spec.format == "sft":
        return [row["messages"][-1]["content"]]
    if spec.format == "preference":
        return [row["chosen"][0]["content"], row["rejected"][0]["content"]]
    return [row["completion"][0]["content"]]


def _all_messages(spec: DatasetSpec, row: dict) -> list[Message]:
    if spec.format == "sft":
        return row["messages"]
    if spec.format == "preference":
        return row["prompt"] + row["chosen"] + row["rejected"]
    return row["prompt"] + row["completion"]


def _prompt_text(spec: DatasetSpec, row: dict) -> str:
    prompt = row["messages"][:-1] if spec.format == "sft" else row["prompt"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def _row_text(spec: DatasetSpec, row: dict) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in _all_messages(spec, row))


def _keep(rows: list[dict], keep: list[bool]) -> list[dict]:
    return [r for r, k in zip(rows, keep) if k]


def clean(spec: DatasetSpec, rows: list[dict], report: BuildReport) -> list[dict]:
    """Steps 2–7 of the module doc on ``rows`` (in place for PII), counting each."""
    c = spec.cleaning
    keep = [not any(_blank(m["content"]) for m in _all_messages(spec, r)) for r in rows]
    rows = _keep(rows, keep)
    report.step("empty turns dropped", len(rows), keep.count(False))
    if spec.format == "preference":
        keep = [dedup.normalise(r["chosen"][0]["content"]) != dedup.normalise(r["rejected"][0]["content"]) for r in rows]
        rows = _keep(rows, keep)
        report.step("chosen == rejected dropped", len(rows), keep.count(False))
    keep = [not (r["_unsafe"] and (spec.format != "kto" or r["label"])) for r in rows]
    rows = _keep(rows, keep)
    report.step("safety-labelled dropped", len(rows), keep.count(False))
    keep = [all(c.min_chars <= len(t) <= c.max_chars for t in _texts(spec, r)) for r in rows]
    rows = _keep(rows, keep)
    report.step("out-of-bounds lengths dropped", len(rows), keep.count(False))
    if c.pii and rows:
        from finetune.pii import PiiRedactor

        redactor = PiiRedactor(entities=c.pii_entities)
        messages = [m for r in rows for m in _all_messages(spec, r)]
        distinct = sorted({m["content"] for m in messages})  # prompts repeat across sibling answers
        redacted, pii = redactor.redact_many(distinct)
        replaced = dict(zip(distinct, redacted))
        for m in messages:
            m["content"] = replaced[m["content"]]
        report.pii = {"texts": pii.texts, "texts_changed": pii.texts_changed, "entities": dict(sorted(pii.entities.items()))}
        report.step("PII redacted (rows kept)", len(rows))
    else:
        report.pii = {"texts": 0, "texts_changed": 0, "entities": {}, "disabled": not c.pii}
    rows, exact, near = _deduplicate(spec, rows)
    report.step("exact duplicates dropped", len(rows) + near, exact)
    report.step("near-duplicates dropped", len(rows), near)
    return rows


def _deduplicate(spec: DatasetSpec, rows: list[dict]) -> tuple[list[dict], int, int]:
    """Drop exact duplicates (same normalised texts) and near-duplicates: rows whose prompt and every
    answer text fall in the same MinHash clusters as an earlier row's. Different answers to one
    prompt are not duplicates, however long the prompt. Stores each row's prompt cluster in
    ``_prompt_cluster`` (the split keeps clusters together)."""
    config = dedup.DedupConfig(threshold=spec.cleaning.dedup_threshold)
    prompt_clusters = dedup.deduplicate([_prompt_text(spec, r) for r in rows], config).cluster
    answers = list(zip(*[_texts(spec, r) for r in rows])) if rows else []
    answer_clusters = [dedup.deduplicate(list(texts), config).cluster for texts in answers]
    seen_exact: set[str] = set()
    seen_near: set[tuple] = set()
    kept, exact, near = [], 0, 0
    for i, row in enumerate(rows):
        text = dedup.normalise(_row_text(spec, row))
        key = (prompt_clusters[i], *(c[i] for c in answer_clusters)) + ((row["label"],) if spec.format == "kto" else ())
        if text in seen_exact:
            exact += 1
        elif key in seen_near:
            near += 1
        else:
            seen_exact.add(text)
            seen_near.add(key)
            row["_prompt_cluster"] = prompt_clusters[i]
            kept.append(row)
    return kept, exact, near


def split(spec: DatasetSpec, rows: list[dict], report: BuildReport) -> dict[str, pd.DataFrame]:
    """Assign each row to train / validation / test by conversation and prompt near-duplicate cluster."""
    names = splits.assign_splits([r["conversation_id"] for r in rows], [r["_prompt_cluster"] for r in rows],
                                spec.split.fractions(), spec.split.seed) if rows else []
    out = {}
    for name in splits.SPLITS:
        part = [{k: v for k, v in r.items() if not k.startswith("_")} for r, s in zip(rows, names) if s == name]
        out[name] = pd.DataFrame.from_records(part)
        report.splits[name] = len(part)
        report.distribution[name] = {
            dim: dict(sorted(out[name][dim].fillna("(none)").value_counts().items())) if len(part) else {}
            for dim in ("source", "model", "app")}
    return out


def build(catalog: Catalog, spec: DatasetSpec, lake: LakeSettings | None = None,
          snapshot: select.LakeSnapshot | None = None) -> Built:
    """Select, format, clean and split (no files written; see :func:`finetune.output.write`).
    Raises DatasetError when the lake has no data or nothing is selected."""
    started = time.perf_counter()
    con, snap = select.open_lake(catalog, lake, snapshot)
    report = BuildReport()
    if spec.format == "sft":
        frame, extra = select.sft_candidates(con, spec), {}
    elif spec.format == "preference":
        frame, conflicting = select.preference_candidates(con, spec)
        extra = {"conflicting pairs dropped": conflicting}
    else:
        frame, tied = select.kto_candidates(con, spec)
        extra = {"as many thumbs up as down (dropped)": tied}
    rows = rows_of(spec, frame)
    for name, n in extra.items():
        report.dropped[name] = n
    report.step("selected", len(rows))
    if not rows:
        raise DatasetError(f"{spec.name}: the selection matched nothing in the lake")
    rows = clean(spec, rows, report)
    splits = split(spec, rows, report)
    report.seconds = round(time.perf_counter() - started, 2)
    return Built(version_id(spec, snap), spec, snap, splits, report)
