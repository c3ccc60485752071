"""Dataset curation at scale: time and peak memory of ``flywheel dataset build`` (select → clean →
dedup → split → PII → write, streamed in batches) on a lake of the real events and on one with at least
1,000,000 distinct conversations, measured in the same run, plus a run with a smaller batch size and one
on a quarter of the data (how memory grows with the data).

Lakes are the real replayed events (all four data sets) re-keyed per copy (:mod:`bench.kpi_bench`);
the number of copies is ``ceil(conversations wanted / distinct conversation_ids in one copy)``. Every
text of a copy also gets a copy tag (`` [c<letters>]``, the copy number in base-26 letters) and the
copy's letters before each word that starts with a letter (:func:`tag_text`), so PII redaction and
duplicate detection see N times the distinct texts, as they would with N times the real conversations
(with the tag alone, copies of a long text are near-duplicates and the build drops most of them). The
tags hold no digit on purpose: a digit in every text would send every text through Presidio's
phone-number matcher, where only the real share of texts (about a fifth) has one. Building
the lake is setup, timed separately. Each build runs in a child process, with Arrow's allocator chosen as
``flywheel dataset`` chooses it (:data:`finetune.cli.ARROW_POOL`); its peak RSS is that process's
``VmHWM``, and the PII worker processes' largest own ``VmHWM`` (sampled every 0.2 s while they run; their
``RUSAGE_CHILDREN`` peak would include the parent's memory at the moment it forked them) beside it. The spec is
SFT over all answers but HH-RLHF harmless-base, with PII on for the pattern entities (e-mail, phone,
card, IP); runs with ``--no-pii`` variants show what the pipeline costs without Presidio. After each build,
the time to write its SageMaker JSONL export from the Parquet (``flywheel dataset export``, not part of a
build) is reported apart (``export_sagemaker_s``, and its own peak RSS ``export_sagemaker_peak_rss_mb``).

    . .venv/bin/activate && python bench/dataset_bench.py                 # 1 copy and >= 1M conversations
    . .venv/bin/activate && python bench/dataset_bench.py --conversations 100000 --small-batch 1024
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

SPEC = {"name": "bench-sft", "format": "sft", "selection": {"exclude_apps": ["hh_rlhf/harmless-base"]},
        "cleaning": {"pii": True, "pii_entities": ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS"]}}
BATCH_ROWS = 8192


def copy_tag(copy: int) -> str:
    """`` [c<letters>]``: the copy number in base-26 letters (no digits, see the module doc)."""
    letters = ""
    copy += 1
    while copy:
        copy, rest = divmod(copy - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f" [c{letters}]"


def tag_text(texts: pa.Array, copy: int) -> pa.Array:
    """Copy ``copy`` of real texts: every word that starts with a letter after a space gets the copy's
    letters as a prefix, and the text ends with :func:`copy_tag`. Copies then share almost no 5-word
    shingle (a suffix alone would leave copies of a long text near-duplicates, and the near-duplicate
    step would drop most of a large lake); numbers, e-mail domains and IP addresses are untouched, so
    PII detection sees what it sees in the real text."""
    letters = copy_tag(copy)[3:-1]
    prefixed = pc.replace_substring_regex(texts, pattern=" ([A-Za-z])", replacement=f" {letters}\\1")
    return pc.binary_join_element_wise(prefixed, pa.scalar(copy_tag(copy)), "")


def tagged_copy(base: dict[str, pa.Table], name: str, copy: int) -> pa.Table:
    """:func:`bench.kpi_bench.copy_of` plus the copy's :func:`tag_text` on every response and prompt message."""
    from bench.kpi_bench import copy_of

    table = copy_of(base[name], name, copy)
    if name != "interactions":
        return table
    table = table.set_column(table.schema.get_field_index("response"), "response",
                             tag_text(table["response"].combine_chunks(), copy))
    prompt = table["prompt"].combine_chunks()
    flat = prompt.values
    content = tag_text(flat.field("content"), copy)
    values = pa.StructArray.from_arrays([flat.field("role"), content], fields=list(flat.type))
    tagged = pa.ListArray.from_arrays(prompt.offsets, values, type=prompt.type, mask=prompt.is_null())
    return table.set_column(table.schema.get_field_index("prompt"), "prompt", tagged)


def build_lake(home: Path, copies: int, base: dict[str, pa.Table]) -> dict:
    """Append ``copies`` tagged copies of ``base`` to a fresh lake under ``home``; returns its size and time."""
    from feedback.config import HomeSettings, LakeSettings
    from feedback.lake.catalog import ensure_table, open_catalog

    catalog = open_catalog(LakeSettings(), HomeSettings(home=home))
    tables = {name: ensure_table(catalog, LakeSettings(), name) for name in base}
    started = time.perf_counter()
    for first in range(0, copies, 8):
        for name, table in tables.items():
            table.append(pa.concat_tables([tagged_copy(base, name, c) for c in range(first, min(first + 8, copies))]))
    conversations = copies * len(pc.unique(base["interactions"]["conversation_id"]))
    return {"copies": copies, "events": copies * sum(t.num_rows for t in base.values()),
            "lake_conversations": conversations, "lake_build_s": round(time.perf_counter() - started, 1)}


class ChildPeaks(threading.Thread):
    """Samples the ``VmHWM`` of this process's child processes every ``every_s`` seconds; ``peak_mb`` is the
    largest seen (Linux ``/proc``; 0 elsewhere or with no children)."""

    def __init__(self, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.every_s, self.peak_mb, self.done = every_s, 0, threading.Event()

    def run(self) -> None:
        me = str(os.getpid())
        while not self.done.wait(self.every_s):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
                except OSError:
                    continue
                if fields.get("PPid", "").strip() == me and "VmHWM" in fields:
                    self.peak_mb = max(self.peak_mb, int(fields["VmHWM"].split()[0]) // 1024)


def child(home: str, spec_json: str, batch_rows: str) -> None:
    """Build and write one dataset in this process; print timings and peak RSS as JSON."""
    import pyarrow.parquet as pq

    from feedback.config import HomeSettings, LakeSettings
    from feedback.lake.catalog import open_catalog
    from finetune import build, output, stream
    from finetune.allocator import use_mmap_threshold
    from finetune.config import DatasetSettings
    from finetune.spec import parse_spec

    use_mmap_threshold()  # as `flywheel dataset` does
    catalog = open_catalog(LakeSettings(), HomeSettings(home=Path(home)))
    spec = parse_spec(json.loads(spec_json))
    root = Path(home) / "datasets"
    peaks = ChildPeaks()
    peaks.start()
    started = time.perf_counter()
    # the memory knobs as `flywheel dataset build` reads them (FLYWHEEL_DATASET_*), the batch size from the bench
    config = dataclasses.replace(DatasetSettings().stream_config(), batch_rows=int(batch_rows))
    built = build.build(catalog, spec, workdir=root, config=config)
    folder = output.write(built, root)
    total = time.perf_counter() - started
    # the build resets VmHWM between phases (to report each phase's peak): the run's peak is the largest
    peak_mb = max([stream._peak_rss_mb(), *built.report.phase_peak_rss_mb.values()])
    peaks.done.set()
    peaks.join()
    # the JSONL export that every format has, written from the Parquet when asked (not part of a build)
    from finetune.exports import write_export

    stream._reset_peak_rss()  # a new VmHWM for the export alone
    started = time.perf_counter()
    write_export(folder / "data", spec.format, "sagemaker", root / "export-sagemaker")
    export_s = time.perf_counter() - started
    export_peak_mb = stream._peak_rss_mb()
    export_bytes = sum(p.stat().st_size for p in (root / "export-sagemaker").iterdir())
    conversations = set()
    for name in ("train", "validation", "test"):
        conversations.update(pq.read_table(folder / "data" / f"{name}.parquet", columns=["conversation_id"])
                             ["conversation_id"].to_pylist())
    print(json.dumps({"total_s": round(total, 1), "phase_s": built.report.phase_seconds,
                      "phase_peak_rss_mb": built.report.phase_peak_rss_mb, "peak_rss_mb": peak_mb,
                      "pii_workers": built.report.pii_workers, "pii_worker_peak_rss_mb": peaks.peak_mb,
                      "state_mb": round(built.report.state_bytes / 2**20, 1), "steps": built.report.steps,
                      "splits": built.report.splits, "pii_report": built.report.pii,
                      "output_conversations": len(conversations),
                      "bytes_written": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
                      "export_sagemaker_s": round(export_s, 1), "export_sagemaker_bytes": export_bytes,
                      "export_sagemaker_peak_rss_mb": export_peak_mb}))
    import shutil

    shutil.rmtree(folder)
    shutil.rmtree(root / "export-sagemaker")


def run_child(home: Path, spec: dict, batch_rows: int) -> dict:
    load_before = os.getloadavg()
    from finetune.cli import ARROW_POOL

    env = dict(os.environ)
    env.setdefault(*ARROW_POOL)  # the child's Arrow allocates as a `flywheel dataset build` process's does
    out = subprocess.run([sys.executable, __file__, "--child", str(home), json.dumps(spec), str(batch_rows)],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "batch_rows": batch_rows, "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=1_000_000, help="distinct conversations in the big lake")
    parser.add_argument("--batch", type=int, default=BATCH_ROWS)
    parser.add_argument("--small-batch", type=int, default=1024)
    parser.add_argument("--lakes", type=Path, help="keep the lakes here and reuse them (default: a temp folder)")
    parser.add_argument("--child", nargs=3)
    opts = parser.parse_args()
    if opts.child:
        child(*opts.child)
        return
    from bench.kpi_bench import base_tables

    base = base_tables()
    per_copy = len(pc.unique(base["interactions"]["conversation_id"]))
    copies = math.ceil(opts.conversations / per_copy)
    no_pii = {**SPEC, "cleaning": {"pii": False}}
    mid = max(2, copies // 4)  # a quarter of the data: does memory grow with it?
    plan = [(1, SPEC, opts.batch, "pii"), (1, no_pii, opts.batch, "no-pii"), (mid, no_pii, opts.batch, "no-pii"),
            (copies, SPEC, opts.batch, "pii"), (copies, no_pii, opts.batch, "no-pii"),
            (copies, no_pii, opts.small_batch, "no-pii")]
    summary = {"measured_at": datetime.now(UTC).isoformat(), "cpu_count": os.cpu_count(),
               "conversations_per_copy": per_copy, "uptime_start": uptime(), "runs": []}
    print(f"{per_copy:,} distinct conversations a copy -> {copies} copies; {summary['uptime_start']}", flush=True)
    lakes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, spec, batch, label in plan:
            home = (opts.lakes or Path(tmp)) / f"c{n}"
            marker = home / "lake.json"
            if n not in lakes and marker.exists():
                lakes[n] = {**json.loads(marker.read_text()), "lake_reused": True}
            if n not in lakes:
                lakes[n] = build_lake(home, n, base)
                marker.write_text(json.dumps(lakes[n]))
                print(json.dumps(lakes[n]), flush=True)
            result = {**lakes[n], "variant": label, **run_child(home, spec, batch)}
            result["lake_conversations_per_s"] = round(result["lake_conversations"] / result["total_s"])
            print(json.dumps({k: v for k, v in result.items() if k not in ("steps",)}), flush=True)
            summary["runs"].append(result)
    summary["uptime_end"] = uptime()
    base_runs = {r["variant"]: r for r in summary["runs"] if r["copies"] == 1}
    table = ["| copies | lake conversations | rows selected | rows kept | PII | batch | seconds | select / pass 1 / "
             "pass 2 s | conv/s | peak RSS MB | PII workers' peak MB | state MB | time ratio | RSS ratio | "
             "SageMaker JSONL export s / peak RSS MB (apart) |",
             "|" + "---|" * 15]
    for r in summary["runs"]:
        ref = base_runs[r["variant"]]
        r["time_ratio"] = round(r["total_s"] / ref["total_s"], 1)
        r["rss_ratio"] = round(r["peak_rss_mb"] / ref["peak_rss_mb"], 2)
        table.append(f"| {r['copies']} | {r['lake_conversations']:,} | {r['steps'][0][1]:,} | {r['steps'][-1][1]:,} | "
                     f"{r['variant']} | {r['batch_rows']} | {r['total_s']} | "
                     f"{' / '.join(str(r['phase_s'].get(p, '')) for p in ('select', 'pass 1', 'pass 2'))} | "
                     f"{r['lake_conversations_per_s']:,} | "
                     f"{r['peak_rss_mb']} | {r['pii_worker_peak_rss_mb']} | {r['state_mb']} | {r['time_ratio']} | "
                     f"{r['rss_ratio']} | {r['export_sagemaker_s']} / {r['export_sagemaker_peak_rss_mb']} |")
    summary["table"] = table
    summary["target"] = "1M conversations < 60 s, memory bounded by the batch size"
    print("\n".join(table))
    print(f"load: start {summary['uptime_start']}; end {summary['uptime_end']}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"dataset_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
