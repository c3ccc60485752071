"""Write a built dataset version: Parquet splits (a Hugging Face ``DatasetDict``), a card, the spec, lineage.

Layout under ``<root>/<version>/``::

    data/train.parquet, data/validation.parquet, data/test.parquet   # TRL's columns + lineage columns
    README.md                           # the dataset card: lineage, spec, counts per step, distributions
    spec.yaml, lineage.json

The JSONL exports are written from the Parquet splits when asked (``flywheel dataset export <version> --to
<target> --out <folder>``, :func:`finetune.exports.write_export`), into ``<folder>/<split>.jsonl``:

    openai       # sft: {"messages"}; preference: {"input", "preferred_output", "non_preferred_output"}
    bedrock      # sft: {"schemaVersion": "bedrock-conversation-2024", "system", "messages"}
    sagemaker    # TRL's columns as JSON lines

Fine-tune jobs read the Parquet splits themselves (:mod:`finetune.jobs`). Formats' sources: OpenAI
fine-tuning chat and DPO JSONL (platform.openai.com/docs/guides/fine-tuning); Bedrock
``bedrock-conversation-2024`` (docs.aws.amazon.com/bedrock, "Prepare data for fine-tuning"); TRL dataset
formats (huggingface.co/docs/trl/dataset_formats). Files are written in a fixed order with fixed options,
so the same rows give the same bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from finetune.build import Built
from finetune.exports import SCHEMAS, export_rows
from finetune.splits import SPLITS


def write(built: Built, root: Path) -> Path:
    """Put ``built`` under ``root/<version>`` (replacing a partial or earlier write) with its card, spec and
    lineage; return the folder. The build's files are moved there (a rename when on the same file system)
    the first time, copied from there on later calls."""
    folder = root / built.version
    tmp = root / f".{built.version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    if built.staged:
        shutil.move(str(built.files / "data"), str(tmp / "data"))
    else:
        shutil.copytree(built.files / "data", tmp / "data")
    (tmp / "spec.yaml").write_text(built.spec.canonical_yaml())
    (tmp / "lineage.json").write_text(json.dumps(lineage(built), indent=2, sort_keys=True) + "\n")
    (tmp / "README.md").write_text(card(built))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    if built.staged:
        shutil.rmtree(built.files, ignore_errors=True)
    built.files, built.staged = folder, False
    return folder


def lineage(built: Built) -> dict:
    """What the card says, as data (stored in ``lineage.json`` and in the lake's registry)."""
    r = built.report
    return {"version": built.version, "name": built.spec.name, "format": built.spec.format,
            "spec_sha256": built.spec.sha256(), "lake_snapshots": built.snapshot.as_dict(),
            "steps": [[s, n] for s, n in r.steps], "dropped": r.dropped, "pii": r.pii, "splits": r.splits,
            "distribution": r.distribution, "exports": _exports(built)}


def _exports(built: Built) -> dict[str, int]:
    """Rows each export target's files hold for this version (:func:`finetune.exports.export_rows`)."""
    return export_rows(built.spec.format, sum(built.report.splits.values()))


def card(built: Built) -> str:
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
    lines += ["", "## Exports", "", f"Written when asked: `flywheel dataset export {built.version} --to <target> --out "
              "<folder>`.", ""]
    lines += [f"- {k}: {v:,} rows" + ("" if v else " (no such format for this target)")
              for k, v in _exports(built).items()]
    lines += ["", "## Spec", "", "```yaml", spec.canonical_yaml().rstrip(), "```", ""]
    return "\n".join(lines)
