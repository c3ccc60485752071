"""Dataset curation on the replayed real data: pairs agree with the source annotations, cleaning
counts match the source, no conversation or near-duplicate crosses splits, rebuilds are
byte-identical, planted PII never reaches a file, and TRL trainers take the outputs as they are."""

import gzip
import hashlib
import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from feedback.cli import app
from finetune import build, dedup, output
from finetune.exports import EXPORT_FORMATS, write_export
from finetune.splits import SPLITS
from finetune.spec import parse_spec

runner = CliRunner()


@pytest.fixture(scope="module")
def catalog(lake):
    stack, _ = lake
    return stack.catalog()


def spec(**kw):
    base = {"name": "t", "format": "preference", "cleaning": {"pii": False}}
    for key, value in kw.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return parse_spec(base)


def all_rows(built):
    return [r for name in SPLITS for r in built.splits[name].to_dict("records")]


def test_tulu_pairs_agree_with_the_annotators_exactly(catalog, data_dir):
    built = build.build(catalog, spec(selection={"apps": ["tulu1_human_eval"], "use_thumbs": False,
                                                 "use_corrections": False}))
    with open(data_dir / "tulu1_human_eval" / "eval_annotations_tulu_1.jsonl") as fh:
        annotations = [json.loads(line) for line in fh]
    directed = set()
    for a in annotations:
        if a["preference"] == "tie":
            continue
        win, lose = ("a", "b") if a["preference"].startswith("a-") else ("b", "a")
        directed.add((f"tulu:{a['instance_id']}:{a[f'model_{win}']}", f"tulu:{a['instance_id']}:{a[f'model_{lose}']}"))
    conflicting = {p for p in directed if (p[1], p[0]) in directed}
    text = {f"tulu:{a['instance_id']}:{a[f'model_{s}']}": dedup.normalise(a[f"completion_{s}"] or "")
            for a in annotations for s in "ab"}
    got = [(r["chosen_message_id"], r["rejected_message_id"]) for r in all_rows(built)]
    assert len(got) == len(set(got))  # agreeing annotators give one pair, not two
    assert set(got) <= directed - conflicting  # every pair is an annotator's preference
    kept_texts = {(c.split(":")[1], text[c], text[r]) for c, r in got}
    for c, r in (directed - conflicting) - set(got):  # the rest were removed by cleaning, for a reason
        same_sides = text[c] == text[r]
        same_as_kept = (c.split(":")[1], text[c], text[r]) in kept_texts
        assert same_sides or same_as_kept, (c, r)
    assert built.report.dropped["conflicting pairs dropped"] > 0 and conflicting


def test_oasst1_rank0_replies_beat_their_siblings(catalog, data_dir):
    built = build.build(catalog, spec(selection={"apps": ["oasst1"], "use_thumbs": False, "use_corrections": False}))
    rank = {}
    for path in (data_dir / "oasst1").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            m = json.loads(line)
            if m.get("rank") is not None:
                rank[m["message_id"]] = m["rank"]
    rows = all_rows(built)
    assert len(rows) > 300
    assert all(rank[r["chosen_message_id"]] < rank[r["rejected_message_id"]] for r in rows)
    rank0 = [r for r in rows if rank[r["chosen_message_id"]] == 0]
    assert rank0 and not any(rank[r["rejected_message_id"]] == 0 for r in rows)


def test_hh_rlhf_chosen_equal_to_rejected_pairs_are_gone(catalog, data_dir):
    built = build.build(catalog, spec(selection={"apps": ["hh_rlhf/harmless-base", "hh_rlhf/helpful-base",
                                                          "hh_rlhf/helpful-online", "hh_rlhf/helpful-rejection-sampled"]}))
    same = 0
    for path in (data_dir / "hh_rlhf").glob("*.jsonl.gz"):
        with gzip.open(path, "rt") as fh:
            same += sum(1 for line in fh if (p := json.loads(line))["chosen"] == p["rejected"])
    assert same > 0
    assert built.report.dropped["chosen == rejected dropped"] == same
    rows = all_rows(built)
    assert all(dedup.normalise(r["chosen"][0]["content"]) != dedup.normalise(r["rejected"][0]["content"]) for r in rows)


def test_no_conversation_and_no_near_duplicate_crosses_splits(catalog):
    built = build.build(catalog, spec(format="sft", selection={"exclude_apps": ["hh_rlhf/harmless-base"]}))
    rows = [(name, r) for name in SPLITS for r in built.splits[name].to_dict("records")]
    assert all(built.report.splits[n] > 0 for n in SPLITS)
    split_of_conversation = {}
    for name, r in rows:
        assert split_of_conversation.setdefault(r["conversation_id"], name) == name
    prompts = ["\n".join(f"{m['role']}: {m['content']}" for m in r["messages"][:-1]) for _, r in rows]
    clusters = dedup.deduplicate(prompts, dedup.DedupConfig(threshold=0.85)).cluster
    split_of_cluster = {}
    for (name, _), cluster in zip(rows, clusters):
        assert split_of_cluster.setdefault(cluster, name) == name


def built_rows(folder, split):
    """Rows of a written version's ``data/<split>.parquet``."""
    return pq.ParquetFile(folder / "data" / f"{split}.parquet").metadata.num_rows


def test_a_rebuild_is_byte_identical_and_registered_once(lake, tmp_path, monkeypatch):
    stack, _ = lake
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("name: tulu-prefs\nformat: preference\nselection:\n  apps: [tulu1_human_eval]\n")
    monkeypatch.setenv("FLYWHEEL_HOME", str(stack.home))
    digests = []
    for attempt in range(2):
        monkeypatch.setenv("FLYWHEEL_DATASET_ROOT", str(tmp_path / f"root{attempt}"))
        result = runner.invoke(app, ["dataset", "build", str(spec_file)])
        assert result.exit_code == 0, result.output
        folder = next((tmp_path / f"root{attempt}").iterdir())
        digests.append({p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(folder.rglob("*")) if p.is_file()})
    assert "rebuilt (already registered)" in result.output and "time: select " in result.output
    assert digests[0] == digests[1] and "data/train.parquet" in digests[0]
    listed = runner.invoke(app, ["dataset", "list"])
    assert sum(line.startswith("tulu-prefs-") for line in listed.output.splitlines()) == 1
    version = folder.name
    shown = runner.invoke(app, ["dataset", "show", version])
    assert "lake snapshots read" in shown.output and "conflicting pairs dropped" in shown.output
    exported = runner.invoke(app, ["dataset", "export", version, "--to", "openai", "--out", str(tmp_path / "oa")])
    assert exported.exit_code == 0, exported.output
    lines = (tmp_path / "oa" / "train.jsonl").read_text().splitlines()
    assert f"train.jsonl\t{len(lines)} rows" in exported.output and len(lines) == built_rows(folder, "train")
    assert set(json.loads(lines[0])) == {"input", "preferred_output", "non_preferred_output"}
    # an export is as reproducible as the build: the other build's Parquet gives the same bytes
    write_export(tmp_path / "root0" / version / "data", "preference", "openai", tmp_path / "oa0")
    for split in ("train", "validation", "test"):
        assert (tmp_path / "oa0" / f"{split}.jsonl").read_bytes() == (tmp_path / "oa" / f"{split}.jsonl").read_bytes()
    refused = runner.invoke(app, ["dataset", "export", version, "--to", "bedrock", "--out", str(tmp_path / "br")])
    assert refused.exit_code == 1 and "bedrock takes no 'preference' datasets" in refused.output
    assert not (tmp_path / "br").exists()
    assert runner.invoke(app, ["dataset", "show", "nope-000"]).exit_code == 1


PLANTED = ["jane.doe@example.com", "+1 (415) 555-0199", "4111 1111 1111 1111", "192.168.14.27", "Margaret Thatcher"]


def test_dataset_commands_have_arrow_allocate_from_the_system_allocator_unless_told_otherwise(lake, monkeypatch):
    stack, _ = lake
    # this process has pyarrow loaded: it (and the workers it would start) keeps its allocator
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    monkeypatch.setenv("FLYWHEEL_HOME", str(stack.home))
    assert runner.invoke(app, ["dataset", "list"]).exit_code == 0
    assert "ARROW_DEFAULT_MEMORY_POOL" not in os.environ
    # a fresh process, as `flywheel dataset ...` is: the command sets Arrow's pool before pyarrow is loaded
    script = ("import sys; from typer.testing import CliRunner; from feedback.cli import app; "
              "assert 'pyarrow' not in sys.modules; r = CliRunner().invoke(app, ['dataset', 'list']); "
              "assert r.exit_code == 0, r.output; import pyarrow; print(pyarrow.default_memory_pool().backend_name)")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    env["FLYWHEEL_HOME"] = str(stack.home)
    for chosen, expected in ((None, "system"), ("mimalloc", "mimalloc")):
        run_env = env if chosen is None else {**env, "ARROW_DEFAULT_MEMORY_POOL": chosen}
        out = subprocess.run([sys.executable, "-c", script], env=run_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split()[-1] == expected


def test_planted_pii_never_reaches_an_output_file(stack, tmp_path):
    consumer, thread = stack.consumer_thread()
    texts = [f"My e-mail is {PLANTED[0]} and my phone {PLANTED[1]}.", f"Charge card {PLANTED[2]} please.",
             f"The server at {PLANTED[3]} is down.", f"{PLANTED[4]} asked me to write this letter."]
    with stack.client() as fw:
        for i, text in enumerate(texts):
            msg = fw.log_interaction(conversation_id=f"pii-{i}", prompt=[{"role": "user", "content": text}],
                                     response=f"Noted: {text}", model="m", app="support")
            fw.log_feedback(conversation_id=f"pii-{i}", message_id=msg, kind="thumb", thumb="up")
            fw.log_feedback(conversation_id=f"pii-{i}", message_id=msg, kind="correction",
                            correction=f"Corrected: {text} Reach me at {PLANTED[0]}.")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        con = stack.sql()
        if con.execute("SELECT count(*) FROM feedback").fetchone()[0] >= 8:
            break
        time.sleep(0.5)
    consumer.stop()
    thread.join(30)
    for fmt in ("sft", "preference", "kto"):
        built = build.build(stack.catalog(), parse_spec({"name": f"pii-{fmt}", "format": fmt,
                                                         "split": {"train": 1.0, "validation": 0.0, "test": 0.0}}))
        folder = output.write(built, tmp_path / "out")
        assert built.report.pii["texts_changed"] > 0
        exported = tmp_path / "exports" / fmt
        for target in (t for t, fmts in EXPORT_FORMATS.items() if fmt in fmts):
            assert write_export(folder / "data", fmt, target, exported / target)["train"] > 0
        for path in [*folder.rglob("*"), *exported.rglob("*")]:
            if path.is_file():
                body = path.read_bytes()
                if path.suffix == ".parquet":
                    body = json.dumps(pq.read_table(path).to_pylist()).encode()
                for value in PLANTED:
                    assert value.encode() not in body, (fmt, path.name, value)


def _tokenizer():
    from feedback.config import cache_root
    from feedback.replay.tokens import tokenizer
    from transformers import AutoTokenizer

    tokenizer()  # writes the SmolLM2 tokenizer (from its GGUF) to the cache once
    tok = AutoTokenizer.from_pretrained(str(cache_root() / "tokenizers" / "smollm2"))
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


def _tiny_model(tok):
    """A 2-layer Llama with SmolLM2's vocabulary: the test is about the data format, not the model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    return LlamaForCausalLM(config)


def test_trl_trainers_take_the_sft_and_preference_outputs_as_they_are(catalog, tmp_path):
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    tok = _tokenizer()
    for fmt, trainer_cls, config_cls in (("sft", SFTTrainer, SFTConfig), ("preference", DPOTrainer, DPOConfig)):
        built = build.build(catalog, spec(format=fmt, name=f"trl-{fmt}", selection={"apps": ["tulu1_human_eval"]}))
        folder = output.write(built, tmp_path)
        ds = load_dataset("parquet", data_files={"train": str(folder / "data" / "train.parquet")})["train"]
        ds = ds.select(range(8))
        args = config_cls(output_dir=str(tmp_path / f"run-{fmt}"), max_steps=1, per_device_train_batch_size=2,
                          use_cpu=True, report_to=[], max_length=128, logging_steps=1, save_strategy="no",
                          bf16=False, gradient_checkpointing=False)
        extra = {"ref_model": _tiny_model(tok)} if trainer_cls is DPOTrainer else {}  # no hub to load it from
        trainer = trainer_cls(model=_tiny_model(tok), args=args, train_dataset=ds, processing_class=tok, **extra)
        result = trainer.train()
        assert result.global_step == 1 and result.training_loss > 0
