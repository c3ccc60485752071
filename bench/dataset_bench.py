"""Dataset curation at scale: time and peak memory of ``flywheel dataset build`` (select → clean →
split → write) on a lake of the real events and on one N times larger, measured in the same run.

Lakes are the real replayed events (all four data sets) re-keyed per copy (:mod:`bench.kpi_bench`).
Unlike the KPI benchmark, every text of a copy also gets a copy tag (`` [c<copy>]``), so PII
redaction and duplicate detection see N times the distinct texts, as they would with N times the
real conversations; exact-duplicate removal still works within a copy. Each build runs in a child
process; its peak RSS is that process's ``VmHWM``. The spec is SFT over all answers but HH-RLHF
harmless-base, with PII on for the pattern entities (e-mail, phone, card, IP); PERSON (spaCy NER)
is timed separately on the baseline, since its rate, not the pipeline, bounds it.

    . .venv/bin/activate && python bench/dataset_bench.py --copies 1 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

SPEC = {"name": "bench-sft", "format": "sft", "selection": {"exclude_apps": ["hh_rlhf/harmless-base"]},
        "cleaning": {"pii": True, "pii_entities": ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS"]}}


def tagged_copy(base: dict[str, pa.Table], name: str, copy: int) -> pa.Table:
    """:func:`bench.kpi_bench.copy_of` plus a copy tag on every text."""
    from bench.kpi_bench import copy_of

    table = copy_of(base[name], name, copy)
    tag = pa.scalar(f" [c{copy}]")
    if name == "interactions":
        table = table.set_column(table.schema.get_field_index("response"), "response",
                                 pc.binary_join_element_wise(table["response"], tag, ""))
        prompts = [[{"role": m["role"], "content": m["content"] + f" [c{copy}]"} for m in p] if p else p
                   for p in table["prompt"].to_pylist()]
        table = table.set_column(table.schema.get_field_index("prompt"), "prompt",
                                 pa.array(prompts, type=table.schema.field("prompt").type))
    return table


def build_lake(home: Path, copies: int, base: dict[str, pa.Table]) -> dict:
    from feedback.config import HomeSettings, LakeSettings
    from feedback.lake.catalog import ensure_table, open_catalog

    catalog = open_catalog(LakeSettings(), HomeSettings(home=home))
    tables = {name: ensure_table(catalog, LakeSettings(), name) for name in base}
    started = time.perf_counter()
    for first in range(0, copies, 4):
        for name, table in tables.items():
            table.append(pa.concat_tables([tagged_copy(base, name, c) for c in range(first, min(first + 4, copies))]))
    events = copies * sum(t.num_rows for t in base.values())
    return {"copies": copies, "events": events, "lake_build_s": round(time.perf_counter() - started, 1)}


def child(home: str, spec_json: str) -> None:
    """Build and write one dataset in this process; print timings and peak RSS as JSON."""
    from feedback.config import HomeSettings, LakeSettings
    from feedback.lake.catalog import open_catalog
    from finetune import build, output
    from finetune.spec import parse_spec

    catalog = open_catalog(LakeSettings(), HomeSettings(home=Path(home)))
    spec = parse_spec(json.loads(spec_json))
    started = time.perf_counter()
    built = build.build(catalog, spec)
    built_s = time.perf_counter() - started
    folder = output.write(built, Path(home) / "datasets")
    total = time.perf_counter() - started
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"build_s": round(built_s, 1), "total_s": round(total, 1), "peak_rss_mb": hwm // 1024,
                      "steps": built.report.steps, "splits": built.report.splits, "pii": built.report.pii,
                      "conversations": int(sum(len(set(f["conversation_id"])) for f in built.splits.values())),
                      "bytes_written": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())}))


def run_child(home: Path, spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(home), json.dumps(spec)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def person_rate(texts: int = 500) -> dict:
    """Texts/s of PERSON redaction (spaCy NER) on real oasst1 texts."""
    from feedback.replay.sources import default_data_dir
    from finetune.pii import PiiRedactor

    lines = []
    for path in sorted((default_data_dir() / "oasst1").glob("*.jsonl")):
        lines += [json.loads(line)["text"] for line in path.read_text().splitlines()]
    sample = lines[:texts]
    redactor = PiiRedactor(entities=["PERSON"])
    redactor.redact_many(sample[:10])
    started = time.perf_counter()
    redactor.redact_many(sample)
    return {"texts": len(sample), "texts_per_s": round(len(sample) / (time.perf_counter() - started), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--child", nargs=2)
    opts = parser.parse_args()
    if opts.child:
        child(*opts.child)
        return
    from bench.kpi_bench import base_tables

    base = base_tables()
    results = []
    for copies in opts.copies:
        with tempfile.TemporaryDirectory() as tmp:
            lake = build_lake(Path(tmp), copies, base)
            result = {**lake, **run_child(Path(tmp), SPEC)}
            print(json.dumps({k: v for k, v in result.items() if k not in ("steps",)}), flush=True)
            results.append(result)
    base_run, big = results[0], results[-1]
    summary = {
        "measured_at": datetime.now(UTC).isoformat(), "runs": results, "person_redaction": person_rate(),
        "time_ratio": round(big["total_s"] / base_run["total_s"], 2),
        "size_ratio": round(big["events"] / base_run["events"], 2),
        "rss_ratio": round(big["peak_rss_mb"] / base_run["peak_rss_mb"], 2),
        "conversations_per_s_large": round(big["conversations"] / big["total_s"], 1),
        "target": "1M conversations < 60 s, memory bounded by the batch size",
    }
    summary["projected_1m_conversations_s"] = round(1_000_000 / summary["conversations_per_s_large"])
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"dataset_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
