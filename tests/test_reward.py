"""`flywheel reward train` on the replayed real data: a Tülu preference version is built with the
dataset CLI, a MiniLM reward model is trained on it for a few steps through the reward CLI, and its
reported held-out accuracy, interval and registry row are checked against an independent recount."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from statsmodels.stats.proportion import proportion_confint
from typer.testing import CliRunner

from tests.datasets import build_version, point_at_lake
from finetune import registry, reward
from finetune.errors import RewardError
from finetune.reward_cli import reward_app

runner = CliRunner()
TRAIN_ARGS = ["--max-steps", "3", "--batch-size", "4", "--max-length", "64", "--seed", "7"]


@pytest.fixture(scope="module")
def trained(lake, tmp_path_factory):
    """(catalog, preference version row, reward registry row, sft version) with the env pointing at the lake."""
    stack, _ = lake
    tmp = tmp_path_factory.mktemp("reward")
    with pytest.MonkeyPatch.context() as mp:
        point_at_lake(mp, stack.home, tmp)
        catalog = stack.catalog()
        pref = build_version(catalog, tmp, "rm-pref", "preference")["version"]
        sft = build_version(catalog, tmp, "rm-sft", "sft")["version"]
        result = runner.invoke(reward_app, ["train", "--dataset", pref, *TRAIN_ARGS])
        assert result.exit_code == 0, result.output
        assert "test accuracy" in result.output and "95% CI" in result.output
        row = next(r for r in reward.models(catalog) if r["dataset_version"] == pref)
        assert row["reward_id"] in result.output and row["path"] in result.output
        yield catalog, registry.get(catalog, pref), row, sft


def _test_pairs(version_row):
    return pq.read_table(Path(version_row["path"]) / "data" / "test.parquet").to_pylist()


def test_registry_row_and_saved_model(trained):
    catalog, version, row, _ = trained
    assert reward.get(catalog, row["reward_id"]) == row
    assert row["encoder"] == reward.ENCODER and row["steps"] == 3 and row["seconds"] > 0
    assert json.loads(row["config_json"])["max_length"] == 64
    meta = json.loads((Path(row["path"]) / reward.META_FILE).read_text())
    assert meta["dataset_version"] == version["version"] and meta["steps"] == 3
    assert meta["test"]["n"] == row["test_n"] == version["test_rows"] > 0
    assert meta["validation"]["n"] == version["validation_rows"]
    assert meta["device"] in ("cpu", "cuda")
    listed = runner.invoke(reward_app, ["list"])
    assert listed.exit_code == 0 and row["reward_id"] in listed.output


def test_reported_accuracy_matches_a_recount_with_wilson_interval(trained):
    catalog, version, row, _ = trained
    model = reward.RewardModel.load(row["reward_id"], catalog)
    pairs = _test_pairs(version)
    prompts = [p["prompt"] for p in pairs]
    chosen = model.score(prompts, [p["chosen"][0]["content"] for p in pairs])
    rejected = model.score(prompts, [p["rejected"][0]["content"] for p in pairs])
    correct = int(np.sum(chosen > rejected))  # ties are errors
    n = len(pairs)
    assert row["test_n"] == n
    assert row["test_accuracy"] == correct / n
    low, high = proportion_confint(correct, n, alpha=0.05, method="wilson")
    assert row["test_ci_low"] == pytest.approx(low) and row["test_ci_high"] == pytest.approx(high)
    assert row["test_ci_low"] <= row["test_accuracy"] <= row["test_ci_high"]
    assert 0.0 <= row["validation_accuracy"] <= 1.0


def test_score_is_deterministic_one_float_per_pair(trained):
    _, version, row, _ = trained
    model = reward.RewardModel.load(row["path"])
    pairs = _test_pairs(version)[:12]
    prompts = [p["prompt"] for p in pairs]
    responses = [p["chosen"][0]["content"] for p in pairs]
    first = model.score(prompts, responses, batch_size=5)
    assert first.shape == (12,) and first.dtype == np.float64 and np.isfinite(first).all()
    np.testing.assert_array_equal(first, model.score(prompts, responses, batch_size=5))
    assert len(np.unique(first)) > 1  # the model tells responses apart
    assert model.score([], []).shape == (0,)
    with pytest.raises(RewardError):
        model.score(prompts, responses[:3])


def test_clear_errors(trained):
    catalog, _, _, sft = trained
    unknown = runner.invoke(reward_app, ["train", "--dataset", "nope-000", *TRAIN_ARGS])
    assert unknown.exit_code == 1 and "unknown dataset version 'nope-000'" in unknown.output
    wrong = runner.invoke(reward_app, ["train", "--dataset", sft, *TRAIN_ARGS])
    assert wrong.exit_code == 1 and "'sft'" in wrong.output and "preference" in wrong.output
    too_long = runner.invoke(reward_app, ["train", "--dataset", sft, "--max-length", "1000"])
    assert too_long.exit_code == 1 and "max_length" in too_long.output
    with pytest.raises(RewardError, match="unknown reward model"):
        reward.RewardModel.load("rm-00000000-000000-000000", catalog)
