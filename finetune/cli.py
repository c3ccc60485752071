"""``flywheel dataset build | list | show | export``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from feedback.errors import FlywheelError
from feedback.cli_errors import fail as _fail

dataset_app = typer.Typer(help="Curated fine-tuning datasets (SFT, preference, KTO) from the lake.", no_args_is_help=True)

ARROW_POOL = ("ARROW_DEFAULT_MEMORY_POOL", "system")
"""Arrow's environment variable choosing its default memory pool (read once, when pyarrow is imported), and the
value the ``dataset`` commands give it unless it is set: Arrow allocates from the system allocator (glibc's malloc
on Linux) instead of its default, mimalloc, which keeps the pages a build frees for reuse while a build frees and
allocates a batch's columns again and again. On the 1 M conversation bench (bench/dataset_bench.py, 2 cores,
2026-11-24): peak RSS 0.87-0.97 GB in 47.5-58.0 s (8 runs) against 0.99-1.06 GB in 48.0-49.4 s (4 runs,
alternated with four of the first), each PII worker 324-343 MB against 358-367 MB; at 4 M, 227.1 s and 1.11 GB
against 237-255 s and 1.17-1.22 GB earlier that day. Setting the pool from Python after pyarrow is loaded
(``pyarrow.set_memory_pool``) reaches only pyarrow's own calls, not Arrow's C++ (IPC, Parquet, compute): it
saved 40 MB there."""


@dataset_app.callback()
def _dataset() -> None:
    # Before any dataset command imports pyarrow: the variable then holds for this process and the processes it
    # starts (the build's PII workers). A process with pyarrow loaded (a test run, a notebook) keeps its allocator,
    # for its workers too.
    if "pyarrow" not in sys.modules:
        os.environ.setdefault(*ARROW_POOL)
    # glibc hands the batches' freed columns back instead of keeping the largest moment's heap
    from finetune.allocator import use_mmap_threshold

    use_mmap_threshold()


@dataset_app.command("build")
def dataset_build(spec_path: Path = typer.Argument(..., help="YAML spec (see finetune/spec.py)."),
                  snapshot_interactions: Optional[int] = typer.Option(None, help="Read this snapshot of interactions."),
                  snapshot_feedback: Optional[int] = typer.Option(None, help="Read this snapshot of feedback.")) -> None:
    """Select, clean, split and write a dataset version; register it in the lake."""
    from feedback.lake.catalog import open_catalog
    from finetune import build, output, registry, select
    from finetune.config import DatasetSettings
    from finetune.spec import load_spec

    try:
        spec = load_spec(spec_path)
        catalog = open_catalog()
        snapshot = None
        if snapshot_interactions is not None or snapshot_feedback is not None:
            if snapshot_interactions is None or snapshot_feedback is None:
                raise typer.BadParameter("give both --snapshot-interactions and --snapshot-feedback")
            snapshot = select.LakeSnapshot(snapshot_interactions, snapshot_feedback)
        settings = DatasetSettings()
        root = settings.root
        built = build.build(catalog, spec, snapshot=snapshot, workdir=root, config=settings.stream_config())
        folder = output.write(built, root)
        new = registry.register(catalog, built, folder, output.lineage(built))
    except FlywheelError as exc:
        _fail(exc)
    for step, rows in built.report.steps:
        typer.echo(f"{step:34s} {rows:9,d}")
    typer.echo(f"splits: {built.report.splits}; PII redacted in {built.report.pii.get('texts_changed', 0):,} texts")
    phases = ", ".join(f"{name} {seconds}s" for name, seconds in built.report.phase_seconds.items())
    peak = max(built.report.phase_peak_rss_mb.values(), default=None)
    typer.echo(f"time: {phases}" + (f"; peak memory {peak:,} MB" if peak is not None else ""))
    typer.echo(f"{'built' if new else 'rebuilt (already registered)'} {built.version} in {built.report.seconds}s -> {folder}")


@dataset_app.command("list")
def dataset_list() -> None:
    """Registered dataset versions."""
    from feedback.lake.catalog import open_catalog
    from feedback.report import format_table
    from finetune import registry

    rows = [(r["version"], r["format"], r["created_at"].isoformat(timespec="seconds"), r["train_rows"],
             r["validation_rows"], r["test_rows"], r["path"]) for r in registry.versions(open_catalog())]
    typer.echo(format_table(["version", "format", "created_at", "train", "validation", "test", "path"], rows)
               if rows else "no dataset versions yet: flywheel dataset build SPEC.yaml")


@dataset_app.command("show")
def dataset_show(version: str) -> None:
    """A version's card (lineage, counts per step, distributions)."""
    from feedback.lake.catalog import open_catalog
    from finetune import registry

    try:
        row = registry.get(open_catalog(), version)
    except FlywheelError as exc:
        _fail(exc)
    card = Path(row["path"]) / "README.md"
    typer.echo(card.read_text() if card.exists() else json.dumps(json.loads(row["lineage_json"]), indent=2))


@dataset_app.command("export")
def dataset_export(version: str, to: str = typer.Option(..., "--to", help="openai | bedrock | sagemaker"),
                   out: Path = typer.Option(..., "--out", help="Folder to write <split>.jsonl into.")) -> None:
    """Write a version's JSONL export for a fine-tuning service (from its Parquet splits) into a folder."""
    from feedback.lake.catalog import open_catalog
    from finetune import registry
    from finetune.exports import write_export

    try:
        row = registry.get(open_catalog(), version)
        rows = write_export(Path(row["path"]) / "data", row["format"], to, out)
    except FlywheelError as exc:
        _fail(exc)
    for split, n in rows.items():
        typer.echo(f"{out / f'{split}.jsonl'}\t{n} rows")
