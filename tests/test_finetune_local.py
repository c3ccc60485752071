"""Local fine-tune jobs on curated real data: SFT and DPO run real optimiser steps on SmolLM2-135M-
Instruct (LoRA, CPU), their status history, metrics and artifacts land in the lake's job registry,
a stopped and a failing job are tracked as such, and base-vs-tuned evaluation is recorded."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from feedback.cli import app
from tests.datasets import build_version, point_at_lake
from finetune import basemodel, evaluate, likelihood
from finetune.jobs import registry

runner = CliRunner()
STEPS = 2


@pytest.fixture(scope="module")
def env(lake, tmp_path_factory):
    """FLYWHEEL_HOME on the replayed real lake, with a Tülu preference and an SFT dataset version."""
    stack, _ = lake
    root = tmp_path_factory.mktemp("ft")
    mp = pytest.MonkeyPatch()
    point_at_lake(mp, stack.home, root)
    catalog = stack.catalog()
    versions = {name: build_version(catalog, root, f"ft-{name}", fmt)["version"]
                for name, fmt in (("pref", "preference"), ("sft", "sft"))}
    yield stack, versions, root
    mp.undo()


def launch(version, method, *extra):
    out = runner.invoke(app, ["finetune", "launch", "--dataset", version, "--method", method, "--max-steps", str(STEPS),
                              "--batch-size", "2", "--max-length", "192", "--wait", *extra])
    # the job id is stdout's first word; stderr may carry progress bars (transformers dequantising the GGUF)
    return out, out.stdout.split()[0] if out.stdout else None


def test_a_local_dpo_job_trains_records_and_evaluates(env):
    stack, versions, _ = env
    out, job_id = launch(versions["pref"], "dpo")
    assert out.exit_code == 0, out.output
    catalog = stack.catalog()
    hist = registry.history(catalog, job_id)
    assert [h.status for h in hist] == ["Created", "InProgress", "Completed"]
    rec = hist[-1]
    assert rec.backend == "local" and rec.dataset_version == versions["pref"] and rec.method == "dpo"
    assert rec.config["max_steps"] == STEPS and rec.config["learning_rate"] == 5e-5
    m = rec.metrics
    losses = [h["loss"] for h in m["log_history"] if "loss" in h]
    assert m["steps"] == STEPS and len(losses) == STEPS and m["device"] == "cpu" and m["peak_rss_mb"] > 0
    assert m["rows"] == pq.ParquetFile(Path(rec.artifacts["job_dir"]) / "input/data/train/train.parquet").metadata.num_rows
    # the adapter was trained: LoRA B matrices start at zero and are non-zero after real steps
    adapter = load_file(str(Path(rec.artifacts["adapter"]) / "adapter_model.safetensors"))
    b = [v for k, v in adapter.items() if "lora_B" in k]
    assert b and any(float(t.abs().sum()) > 0 for t in b)
    merged = load_file(str(Path(rec.artifacts["merged"]) / "model.safetensors"))
    base = load_file(str(Path(basemodel.resolve(basemodel.SMOLLM2)) / "model.safetensors"))
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[key], base[key])
    # the job's own log and the CLI's views agree with the registry
    assert any('"steps": 2' in line for line in runner.invoke(app, ["finetune", "logs", job_id]).output.splitlines())
    listed = runner.invoke(app, ["finetune", "list"]).output
    assert job_id in listed and "Completed" in listed

    result = evaluate.evaluate(catalog, job_id, limit=6, batch_size=6)
    stored = evaluate.evaluations(catalog, job_id)
    assert set(stored["eval_id"]) == {result.eval_id}
    assert len(stored) == len(result.rows) and {"preference_accuracy", "heldout_loss", "perplexity"} <= set(stored["metric"])
    test = pd.read_parquet(_dataset_path(catalog, versions["pref"]) / "data/test.parquet").head(6)
    for model in ("base", "tuned"):
        acc = result.value("preference_accuracy", model)
        assert acc.n == 6 and acc.ci_low <= acc.value <= acc.ci_high
        loss = result.value("heldout_loss", model)
        ppl = result.value("perplexity", model)
        assert ppl.value == pytest.approx(np.exp(loss.value))
    # the dashboard's Models page shows this evaluation, values and intervals as stored
    table = _models_page_table(stack, result.eval_id)
    acc = table.set_index("metric").loc["Preference accuracy"]
    tuned = result.value("preference_accuracy", "tuned")
    assert acc["tuned"] == f"{tuned.value:.4f} [{tuned.ci_low:.4f}, {tuned.ci_high:.4f}]" and acc["n"] == 6
    # the base model's preference accuracy, recomputed with transformers' own loss on the full texts
    model, tok = likelihood.load(basemodel.resolve(basemodel.SMOLLM2), "cpu")
    right = 0
    for _, row in test.iterrows():
        prompt = [dict(m) for m in row["prompt"]]
        lp = [_logp_by_loss(model, tok, prompt, row[side][0]["content"]) for side in ("chosen", "rejected")]
        right += lp[0] > lp[1]
    assert result.value("preference_accuracy", "base").value == pytest.approx(right / 6)


def _models_page_table(stack, eval_id):
    """The fine-tune comparison table of the dashboard's Models page (Streamlit AppTest)."""
    from streamlit.testing.v1 import AppTest

    from dashboards.ui import shared_lake
    from feedback.config import KpiSettings
    from feedback.kpi.maintainer import KpiMaintainer

    KpiMaintainer(stack.catalog(), stack.lake, KpiSettings()).refresh()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**stack.env, "FLYWHEEL_DASHBOARD_LAG_TIMEOUT_S": "1"}.items():
            mp.setenv(key, value)
        shared_lake.clear()
        at = AppTest.from_file(str(Path(__file__).parents[1] / "dashboards" / "app.py"), default_timeout=120)
        at.run()
        at.switch_page("views/models.py")
        at.query_params["eval"] = eval_id
        at.run()
        shared_lake.clear()
    assert not at.exception, [e.value for e in at.exception]
    return next(d.value for d in at.dataframe if "verdict" in d.value.columns)


def _dataset_path(catalog, version):
    from finetune import registry as datasets

    return Path(datasets.get(catalog, version)["path"])


def _logp_by_loss(model, tok, prompt, response):
    """Summed log-probability of the response tokens via the model's own cross-entropy (labels
    masked with -100 over the prompt), an independent check of finetune.likelihood."""
    ids, first = likelihood.encode_pair(tok, prompt, response, 192)
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[0, :first] = -100
    with torch.no_grad():
        loss = model(input_ids=input_ids, labels=labels).loss
    return -float(loss) * (len(ids) - first)


def test_a_local_sft_job_trains_on_answers_and_its_eval_is_recorded(env):
    stack, versions, _ = env
    out, job_id = launch(versions["sft"], "sft", "--lora-r", "8")
    assert out.exit_code == 0, out.output
    catalog = stack.catalog()
    rec = registry.latest(catalog, job_id)
    assert rec.status == "Completed" and rec.config["lora_r"] == 8
    assert rec.metrics["hyperparameters"]["lora_r"] == 8 and rec.metrics["steps"] == STEPS
    assert json.loads((Path(rec.artifacts["adapter"]) / "adapter_config.json").read_text())["r"] == 8
    result = evaluate.evaluate(catalog, job_id, limit=4, batch_size=4)
    metrics = {(r.metric, r.model) for r in result.rows}
    assert ("heldout_loss", "tuned-base") in metrics and not any(m == "preference_accuracy" for m, _ in metrics)
    assert len(evaluate.evaluations(catalog, job_id)) == len(result.rows)


def test_a_dpo_job_on_an_sft_dataset_is_refused(env):
    _, versions, _ = env
    out, _ = launch(versions["sft"], "dpo")
    assert out.exit_code == 1 and "trains on a 'preference' dataset" in out.output


def test_a_failing_job_is_recorded_failed_with_its_error(env):
    stack, versions, _ = env
    out, job_id = launch(versions["pref"], "dpo", "--base-model", "/nonexistent/model")
    assert out.exit_code == 1
    rec = registry.latest(stack.catalog(), job_id)
    assert rec.status == "Failed" and rec.message.startswith("exit 1:")
    assert [h.status for h in registry.history(stack.catalog(), job_id)] == ["Created", "InProgress", "Failed"]


def test_a_running_job_can_be_stopped(env):
    stack, versions, _ = env
    out = runner.invoke(app, ["finetune", "launch", "--dataset", versions["sft"], "--method", "sft",
                              "--max-steps", "10000", "--batch-size", "1"])
    assert out.exit_code == 0, out.output
    job_id = out.stdout.split()[0]
    catalog = stack.catalog()

    deadline = time.monotonic() + 60
    while registry.latest(catalog, job_id).status == "Created" and time.monotonic() < deadline:
        time.sleep(0.5)
    stopped = runner.invoke(app, ["finetune", "stop", job_id])
    assert stopped.exit_code == 0, stopped.output
    assert registry.latest(catalog, job_id).status == "Stopped"
    again = runner.invoke(app, ["finetune", "stop", job_id])
    assert again.exit_code == 1 and "already ended (Stopped)" in again.output
