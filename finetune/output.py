"""Write a built dataset version: Parquet splits (a Hugging Face ``DatasetDict``), exports, a card.

Layout under ``<root>/<version>/``::

    data/train.parquet, data/validation.parquet, data/test.parquet   # TRL's columns + lineage columns
    exports/openai/<split>.jsonl        # sft: {"messages"}; preference: {"input", "preferred_output", "non_preferred_output"}
    exports/bedrock/<split>.jsonl       # sft: {"schemaVersion": "bedrock-conversation-2024", "system", "messages"}
    exports/sagemaker/<split>.jsonl     # TRL's columns as JSON lines, what the Flywheel training script reads in SageMaker
    README.md                           # the dataset card: lineage, spec, counts per step, distributions
    spec.yaml, lineage.json

Formats' sources: OpenAI fine-tuning chat and DPO JSONL (platform.openai.com/docs/guides/fine-tuning);
Bedrock ``bedrock-conversation-2024`` (docs.aws.amazon.com/bedrock, "Prepare data for fine-tuning");
TRL dataset formats (huggingface.co/docs/trl/dataset_formats). Files are written in a fixed order
with fixed options, so the same rows give the same bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
from datasets import Dataset, DatasetDict

from finetune.build import Built
from finetune.splits import SPLITS
from finetune.errors import DatasetError

MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
_LINEAGE = [pa.field(n, pa.string()) for n in ("conversation_id", "source", "app", "model", "prompt_version", "origin")]
SCHEMAS = {
    "sft": pa.schema([pa.field("messages", MESSAGES)] + _LINEAGE
                     + [pa.field("message_id", pa.string()), pa.field("corrected", pa.bool_())]),
    "preference": pa.schema([pa.field("prompt", MESSAGES), pa.field("chosen", MESSAGES), pa.field("rejected", MESSAGES),
                             pa.field("strength", pa.float64())] + _LINEAGE
                            + [pa.field(n, pa.string()) for n in ("chosen_message_id", "rejected_message_id", "rejected_model")]),
    "kto": pa.schema([pa.field("prompt", MESSAGES), pa.field("completion", MESSAGES), pa.field("label", pa.bool_())]
                     + _LINEAGE + [pa.field("message_id", pa.string())]),
}
"""Column types per format: TRL's columns first, then the lineage columns."""
EXPORTS = ("openai", "bedrock", "sagemaker")


def dataset_dict(built: Built) -> DatasetDict:
    """The splits as a ``DatasetDict`` with the format's fixed schema (empty splits included)."""
    schema = SCHEMAS[built.spec.format]
    return DatasetDict({name: Dataset(pa.Table.from_pylist(built.splits[name].to_dict("records"), schema=schema))
                        for name in SPLITS})


def _json(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=False)


def export_record(fmt: str, target: str, row: dict) -> dict | None:
    """One row in an export format (None: the target has no such format, e.g. KTO for OpenAI)."""
    if target == "sagemaker":
        keep = {"sft": ("messages",), "preference": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label")}
        return {k: row[k] for k in keep[fmt]}
    if target == "openai":
        if fmt == "sft":
            return {"messages": row["messages"]}
        if fmt == "preference":
            return {"input": {"messages": row["prompt"]}, "preferred_output": row["chosen"],
                    "non_preferred_output": row["rejected"]}
        return None
    if fmt != "sft":
        return None
    system = [{"text": m["content"]} for m in row["messages"] if m["role"] == "system"]
    turns = [{"role": m["role"], "content": [{"text": m["content"]}]} for m in row["messages"] if m["role"] != "system"]
    return {"schemaVersion": "bedrock-conversation-2024", **({"system": system} if system else {}), "messages": turns}


def write_exports(built: Built, out: Path, targets: tuple[str, ...] = EXPORTS) -> dict[str, int]:
    """JSONL exports under ``out/<target>/<split>.jsonl``; returns rows written per target."""
    unknown = [t for t in targets if t not in EXPORTS]
    if unknown:
        raise DatasetError(f"unknown export {unknown[0]!r}; one of {', '.join(EXPORTS)}")
    rows = {name: _plain(built.splits[name]) for name in SPLITS}  # once per split, not per target
    written = {}
    for target in targets:
        count = 0
        for name in SPLITS:
            records = [export_record(built.spec.format, target, r) for r in rows[name]]
            if any(r is None for r in records):
                break
            (out / target).mkdir(parents=True, exist_ok=True)
            with open(out / target / f"{name}.jsonl", "w", encoding="utf-8") as fh:
                fh.writelines(_json(r) + "\n" for r in records)
            count += len(records)
        written[target] = count
    return written


def _plain(frame) -> list[dict]:
    """Rows as plain Python (lists of dicts, no numpy arrays) for JSON."""
    return pa.Table.from_pandas(frame, preserve_index=False).to_pylist() if len(frame) else []


def write(built: Built, root: Path) -> Path:
    """Write ``built`` under ``root/<version>`` (replacing a partial earlier write); return the folder."""
    folder = root / built.version
    tmp = root / f".{built.version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    for name, ds in dataset_dict(built).items():
        ds.to_parquet(str(tmp / "data" / f"{name}.parquet"))
    exports = write_exports(built, tmp / "exports")
    (tmp / "spec.yaml").write_text(built.spec.canonical_yaml())
    (tmp / "lineage.json").write_text(json.dumps(lineage(built, exports), indent=2, sort_keys=True) + "\n")
    (tmp / "README.md").write_text(card(built, exports))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def lineage(built: Built, exports: dict[str, int]) -> dict:
    """What the card says, as data (stored in ``lineage.json`` and in the lake's registry)."""
    r = built.report
    return {"version": built.version, "name": built.spec.name, "format": built.spec.format,
            "spec_sha256": built.spec.sha256(), "lake_snapshots": built.snapshot.as_dict(),
            "steps": [[s, n] for s, n in r.steps], "dropped": r.dropped, "pii": r.pii, "splits": r.splits,
            "distribution": r.distribution, "exports": exports}


def card(built: Built, exports: dict[str, int]) -> str:
    """The dataset card (README.md): front matter for the Hugging Face hub loader, then lineage."""
    r, spec = built.report, built.spec
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    lines += [f"  - split: {n}\n    path: data/{n}.parquet" for n in SPLITS]
    lines += ["---", "", f"# {built.version}", "", spec.description or f"A `{spec.format}` dataset curated by Flywheel.", "",
              f"- format: `{spec.format}` (TRL columns: {', '.join(SCHEMAS[spec.format].names[:3 if spec.format != 'sft' else 1])})",
              f"- lake snapshots read: interactions `{built.snapshot.interactions}`, feedback `{built.snapshot.feedback}`",
              f"- spec sha256: `{spec.sha256()}`", "", "## Rows after each step", "", "| step | rows | dropped |", "|---|---|---|"]
    lines += [f"| {s} | {n:,} | {r.dropped.get(s, '') if s in r.dropped else ''} |" for s, n in r.steps]
    extra = {k: v for k, v in r.dropped.items() if k not in dict(r.steps)}
    lines += [f"| {k} (before selection's end) | | {v:,} |" for k, v in extra.items()]
    lines += ["", "## PII redacted", "", f"{r.pii.get('texts_changed', 0):,} of {r.pii.get('texts', 0):,} texts changed."]
    lines += [f"- {k}: {v:,}" for k, v in r.pii.get("entities", {}).items()]
    lines += ["", "## Splits", "", "| split | rows |", "|---|---|"] + [f"| {k} | {v:,} |" for k, v in r.splits.items()]
    for dim in ("source", "model", "app"):
        lines += ["", f"## By {dim}", "", "| split | " + dim + " | rows |", "|---|---|---|"]
        lines += [f"| {s} | {k} | {v:,} |" for s, d in r.distribution.items() for k, v in d.get(dim, {}).items()]
    lines += ["", "## Exports", ""] + [f"- {k}: {v:,} rows" + ("" if v else " (no such format for this target)")
                                       for k, v in exports.items()]
    lines += ["", "## Spec", "", "```yaml", spec.canonical_yaml().rstrip(), "```", ""]
    return "\n".join(lines)
