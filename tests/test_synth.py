"""`flywheel synth` on the replayed real data: a Tülu preference version and a tiny reward model are
built with the real CLIs; the local SmolLM2 grows a small synthetic set from real prompts of the lake,
the reward model filters it, the leakage guard drops a planted near-copy of a real test row, a repeated
run is served from the cache byte for byte, and the OpenAI-compatible generator talks to a real HTTP
server backed by SmolLM2 that throttles its first answer. Bedrock is not tested: moto 5.2.5's
bedrock-runtime implements InvokeModel only, not Converse."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from feedback.cli import app
from tests.datasets import build_version, point_at_lake
from feedback.config import LakeSettings
from feedback.lake.catalog import load_table_if_exists
from feedback.lake.read import lake_connection
from finetune import registry, reward
from finetune.exports import write_export
from finetune.jobs.launch import dataset_dir
from finetune.synth import leakage, seeds
from finetune.synth.cache import CachedGenerator, CompletionCache
from finetune.synth.cli import synth_app
from finetune.synth.errors import SynthError
from finetune.synth.generators import GenParams, LocalGenerator, OpenAICompatibleGenerator
from finetune.synth.job import synthesize
from finetune.synth.pipeline import SynthConfig

runner = CliRunner()
APP = "tulu1_human_eval"
RUN = ["run", "--seed-app", APP, "--n-prompts", "4", "--candidates", "2", "--seeds", "6",
       "--max-new-tokens", "32", "--prompt-max-new-tokens", "32", "--batch-size", "8", "--threads", "1",
       "--name", "syn", "--min-reward-seed-quantile", "0.1"]
# the same recipe as RUN, for the Python API
CONFIG = SynthConfig(n_prompts=4, candidates=2, k_demos=3, prompt_params=GenParams(0.9, 0.95, 32),
                     response_params=GenParams(0.7, 0.9, 32), seed=0, min_reward_seed_quantile=0.1)


@pytest.fixture(scope="module")
def env(lake, tmp_path_factory):
    """(catalog, reference version row, reward id, tmp) with the environment pointing at the lake."""
    stack, _ = lake
    tmp = tmp_path_factory.mktemp("synth")
    with pytest.MonkeyPatch.context() as mp:
        point_at_lake(mp, stack.home, tmp)
        catalog = stack.catalog()
        started = time.perf_counter()
        ref = build_version(catalog, tmp, "syn-ref", "preference", (APP,))
        result = runner.invoke(app, ["reward", "train", "--dataset", ref["version"], "--max-steps", "2",
                                     "--max-length", "64"])
        assert result.exit_code == 0, result.output
        rm = next(r["reward_id"] for r in reward.models(catalog) if r["dataset_version"] == ref["version"])
        print(f"reference version + reward model: {time.perf_counter() - started:.1f}s")  # shown with -s
        yield catalog, ref, rm, tmp


@pytest.fixture(scope="module")
def first(env):
    """The first CLI run: (version row, lineage, data file bytes, CLI output)."""
    catalog, ref, rm, _ = env
    started = time.perf_counter()
    result = runner.invoke(synth_app, RUN + ["--reference-dataset", ref["version"], "--reward-model", rm])
    assert result.exit_code == 0, result.output
    print(f"first synth run, {time.perf_counter() - started:.1f}s:\n{result.output}")  # shown with -s
    row = next(r for r in registry.versions(catalog) if r["name"] == "syn")
    folder = Path(row["path"])
    files = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
             and p.parts[-2] in ("data", "openai", "bedrock", "sagemaker")}
    return row, json.loads((folder / "lineage.json").read_text()), files, result.output


@pytest.fixture(scope="module")
def local_model():
    return LocalGenerator(batch_size=8, threads=1)


def test_synthetic_version_registered_with_lineage(env, first, tmp_path):
    catalog, ref, rm, _ = env
    row, lineage, _, output = first
    assert row["format"] == "sft" and row["version"] in output and "new tokens/s" in output
    rows = pq.read_table(Path(row["path"]) / "data" / "train.parquet").to_pylist()
    assert len(rows) == row["train_rows"] == lineage["splits"]["train"] >= 1 and row["test_rows"] == 0
    assert all(r["synthetic"] is True for r in rows)
    assert all(r["messages"][0]["role"] == "user" and r["messages"][-1]["role"] == "assistant" for r in rows)
    assert all(r["generator"] == "local:smollm2-135m-instruct" and r["seed_message_ids"] for r in rows)
    # lineage: every seed id (rows' and card's) is a real answer of the app in the lake
    seed_ids = {s["message_id"] for s in lineage["seeds"]} | {m for r in rows for m in r["seed_message_ids"]}
    con = lake_connection(catalog, tables=("interactions",))
    found = {m for (m,) in con.execute("SELECT message_id FROM interactions WHERE app = ? AND message_id IN (SELECT "
                                       "unnest(?::VARCHAR[]))", [APP, sorted(seed_ids)]).fetchall()}
    assert found == seed_ids and len(lineage["seeds"]) == 6
    assert lineage["recipe"]["seed_source"] == f"app:{APP}" and lineage["recipe"]["reward_model"] == rm
    # the card's counts add up, step by step
    steps, dropped = dict(lineage["steps"]), lineage["dropped"]
    assert steps["prompt generation calls"] == 4
    assert steps["prompts parsed"] == 4 - dropped["unparseable"]
    assert steps["prompts distinct"] == steps["prompts parsed"] - dropped["duplicate of a seed or another new prompt"]
    assert steps["candidate answers generated"] == 2 * steps["prompts distinct"]
    assert steps["candidate answers scored"] == steps["candidate answers generated"] - dropped["empty answers"]
    kept = steps["kept by the reward filter (best of n)"]
    assert kept == steps["prompts distinct"] - dropped["no candidate at or above the reward floor"]
    assert steps["rows after the leakage guard"] == kept - dropped["leakage (near-duplicate of a validation/test row)"] \
        == len(rows)
    floor = lineage["reward"]["floor"]
    assert floor is not None and all(r["reward"] >= floor for r in rows)
    usage = lineage["usage"]
    assert usage["prompts"]["calls"] == 4 and usage["answers"]["calls"] == steps["candidate answers generated"]
    assert usage["prompts"]["cost_usd"] == 0 and usage["prompts"]["completion_tokens"] > 0
    # the fine-tune launcher takes it, and its sagemaker export has one line a row
    folder = dataset_dir(catalog, row["version"], "sft")
    assert write_export(folder / "data", "sft", "sagemaker", tmp_path)["train"] == len(rows)
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    assert [json.loads(x)["messages"] for x in lines] == [r["messages"] for r in rows]
    assert "Leakage guard" in (folder / "README.md").read_text()


def test_repeated_run_hits_the_cache_byte_for_byte(env, first):
    catalog, ref, rm, _ = env
    row, lineage, files, _ = first
    calls = lineage["usage"]["prompts"]["calls"] + lineage["usage"]["answers"]["calls"]
    result = runner.invoke(synth_app, RUN + ["--reference-dataset", ref["version"], "--reward-model", rm])
    assert result.exit_code == 0, result.output
    assert f"rewritten (already registered) {row['version']}" in result.output
    folder = Path(row["path"])
    again = json.loads((folder / "lineage.json").read_text())["usage"]
    assert again["prompts"]["calls"] + again["answers"]["calls"] == 0
    assert again["prompts"]["cache_hits"] + again["answers"]["cache_hits"] == calls
    assert {p: (folder / p).read_bytes() for p in files} == files


def test_leakage_guard_drops_a_planted_near_duplicate_of_a_test_row(env, first):
    catalog, ref, rm, tmp = env
    _, lineage, _, _ = first
    tests = pq.read_table(Path(ref["path"]) / "data" / "test.parquet").to_pylist()
    real = next(r["chosen"][0]["content"] for r in tests if len(r["chosen"][0]["content"].split()) >= 120)
    words = real.split()
    words[len(words) // 2] = "zebra"  # one word changed: Jaccard of 5-shingles ≈ 0.93
    copied = " ".join(words)
    assert copied != real

    def plant(rows):
        fake = dict(rows[0]) if rows else {"messages": None}
        fake["messages"] = [{"role": "user", "content": "Tell me something."}, {"role": "assistant", "content": copied}]
        return rows + [fake]

    # direct: real held-out rows of the reference version against the planted row
    guard = leakage.LeakageGuard([t for r in leakage.reference_rows([ref]) for t in leakage.row_texts(r)],
                                 leakage.spec_threshold([ref]))
    kept, report = leakage.filter_rows(plant([]), guard)
    assert kept == [] and report.dropped == report.near == 1 and report.by_part == {"prompt": 0, "response": 1}

    # through the pipeline's hook, same recipe as the CLI run (all cache hits)
    seed_set = seeds.from_app(catalog, APP, 6, 0)
    out = synthesize(catalog, seed_set, [ref["version"]], rm, CONFIG, name="syn-planted", planted=plant,
                     generator=None)
    base = lineage["dropped"]["leakage (near-duplicate of a validation/test row)"]
    assert out.result.leakage.dropped == base + 1
    assert out.result.dropped["leakage (near-duplicate of a validation/test row)"] == base + 1
    assert all(copied not in json.dumps(r) for r in out.result.rows)
    assert out.result.usage["prompts"].calls == out.result.usage["answers"].calls == 0


def test_seed_sources(env):
    catalog, ref, _, _ = env
    got = seeds.from_dataset(catalog, ref["version"], 5, seed=1)
    assert len(got.seeds) == 5 and got.source == f"dataset:{ref['version']}"
    assert got.seeds == seeds.from_dataset(catalog, ref["version"], 5, seed=1).seeds
    with pytest.raises(SynthError):
        seeds.from_app(catalog, "no-such-app", 5)
    if load_table_if_exists(catalog, LakeSettings(), "topic_assignments") is None:
        with pytest.raises(SynthError, match="topics"):
            seeds.from_topic(catalog, "confusion", 5)


class _Server:
    """A real /v1/chat/completions endpoint answering with the local SmolLM2; answers 429 ``throttle``
    times first."""

    def __init__(self, model: LocalGenerator, throttle: int) -> None:
        self.requests, self.throttle = 0, throttle
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # no request logging
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                if self.path != "/v1/chat/completions":
                    self.send_response(404), self.end_headers()
                    return
                if outer.requests <= outer.throttle:
                    self.send_response(429)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                c = model.complete(body["messages"], GenParams(body["temperature"], body["top_p"], body["max_tokens"]),
                                   body["seed"])
                data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": c.text}}],
                                   "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_openai_compatible_generator_retries_throttling_and_caches(local_model, tmp_path):
    server = _Server(local_model, throttle=1)
    try:
        chat = [{"role": "user", "content": "Give one tip for writing clear emails."}]
        params = GenParams(0.7, 0.9, 24)
        gen = CachedGenerator(OpenAICompatibleGenerator("smollm2", server.url, api_key="k"),
                              CompletionCache(tmp_path / "c.sqlite"), {"smollm2": {"input": 0.5, "output": 1.5}},
                              max_attempts=3, retry_base_s=0.0)
        (got,) = gen.complete_many([chat], params, [7])
        direct = local_model.complete(chat, params, 7)
        assert got == direct and got.text  # the server's model, not a canned reply
        assert gen.usage.retries == 1 and gen.usage.calls == 1 and server.requests == 2
        assert gen.usage.cost_usd == pytest.approx(direct.prompt_tokens / 1000 * 0.5 + direct.completion_tokens / 1000 * 1.5)
        assert gen.complete_many([chat], params, [7]) == [got] and server.requests == 2 and gen.usage.cache_hits == 1
        server.throttle = 10**9  # throttled for good: bounded attempts, then a clear error
        with pytest.raises(SynthError, match="throttled 3 times"):
            gen.complete_many([chat], params, [8])
        assert server.requests == 5
    finally:
        server.close()
