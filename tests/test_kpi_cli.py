"""``flywheel kpi`` through CliRunner on the replayed real data."""

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from feedback.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def env(lake):
    stack, _ = lake
    env = dict(stack.env)
    assert runner.invoke(app, ["kpi", "refresh"], env=env).exit_code == 0
    return env


def test_list_names_every_kpi_with_unit_and_version(env):
    out = runner.invoke(app, ["kpi", "list", "--format", "json"], env=env)
    kpis = {k["kpi"]: k for k in json.loads(out.output)}
    assert {"thumbs_up_rate", "mean_rating", "win_rate", "latency_p95_ms", "cost_per_positive_answer_usd"} <= set(kpis)
    assert kpis["thumbs_up_rate"]["unit"] == "share" and kpis["thumbs_up_rate"]["version"] == 1


def test_show_as_csv_with_filters(env):
    out = runner.invoke(app, ["kpi", "show", "thumbs_up_rate", "--grain", "total", "--by", "model",
                              "--app", "tulu1_human_eval", "--format", "csv"], env=env)
    assert out.exit_code == 0, out.output
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(out.output))}
    assert set(rows) == {"chatgpt", "tulu_65B", "tulu_7B", "tulu_human_only_65B"}
    assert float(rows["chatgpt"]["ci_low"]) < float(rows["chatgpt"]["value"]) < float(rows["chatgpt"]["ci_high"])


def test_compare_prints_difference_interval_and_p_value(env):
    out = runner.invoke(app, ["kpi", "compare", "win_rate", "tulu_7B", "tulu_65B", "--by", "model"], env=env)
    assert out.exit_code == 0, out.output
    assert "B - A" in out.output and "p-value:" in out.output and "Newcombe" in out.output


def test_bad_dimension_and_unknown_kpi_are_clear_errors(env):
    bad_dim = runner.invoke(app, ["kpi", "show", "interactions", "--by", "feedback_source"], env=env)
    assert bad_dim.exit_code == 1 and "cannot be split" in bad_dim.output
    unknown = runner.invoke(app, ["kpi", "show", "happiness"], env=env)
    assert unknown.exit_code == 1 and "unknown KPI" in unknown.output


def test_status_and_rebuild(env):
    assert "watermark" in runner.invoke(app, ["kpi", "status"], env=env).output
    out = runner.invoke(app, ["kpi", "rebuild"], env=env)
    assert out.exit_code == 0 and "rebuilt" in out.output
