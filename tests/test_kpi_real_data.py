"""KPIs on the replayed real data equal an independent computation from the source files
(plain json + the textbook formulas, and VADER called directly for comment sentiment)."""

import json
import math
from collections import Counter, defaultdict

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from feedback.config import KpiSettings
from feedback.kpi.maintainer import KpiMaintainer
from feedback.kpi.query import KpiFilter, compare, kpi_connection, query

RATING_VALUE = {"Bad": 1, "Could be Improved": 2, "Acceptable": 3, "Excellent": 4}


def wilson(successes, n, z=1.959963984540054):
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.fixture(scope="module")
def kpis(lake):
    stack, _ = lake
    maintainer = KpiMaintainer(stack.catalog(), stack.lake, KpiSettings())
    first = maintainer.refresh()
    return stack, maintainer, first, kpi_connection(stack.catalog(), stack.lake)


@pytest.fixture(scope="module")
def tulu(data_dir):
    with open(data_dir / "tulu1_human_eval" / "eval_annotations_tulu_1.jsonl") as f:
        return [json.loads(line) for line in f]


def by_group(rows, key="model"):
    return {r.group[key]: r for r in rows}


def test_thumbs_up_rate_per_model_with_wilson_interval(kpis, tulu):
    _, _, _, con = kpis
    up, n = Counter(), Counter()
    for a in tulu:
        for side in "ab":
            verdict = a[f"completion_{side}_is_acceptable"]
            if verdict is not None:
                n[a[f"model_{side}"]] += 1
                up[a[f"model_{side}"]] += verdict == "yes"
    rows = by_group(query(con, "thumbs_up_rate", "total", ["model"]))
    for model in n:
        lo, hi = wilson(up[model], n[model])
        got = rows[model]
        assert got.n == n[model] and got.value == pytest.approx(up[model] / n[model])
        assert (got.ci_low, got.ci_high) == (pytest.approx(lo), pytest.approx(hi))


def test_win_rate_per_model_and_comparison(kpis, tulu):
    _, _, _, con = kpis
    wins, losses = Counter(), Counter()
    for a in tulu:
        if a["preference"] == "tie":
            continue
        winner, loser = ("a", "b") if a["preference"].startswith("a-") else ("b", "a")
        wins[a[f"model_{winner}"]] += 1
        losses[a[f"model_{loser}"]] += 1
    rows = by_group(query(con, "win_rate", "total", ["model"]))
    for model in wins:
        assert rows[model].n == wins[model] + losses[model]
        assert rows[model].value == pytest.approx(wins[model] / (wins[model] + losses[model]))
    c = compare(con, "win_rate", "model", "tulu_7B", "tulu_65B")
    assert c.difference == pytest.approx(wins["tulu_65B"] / (wins["tulu_65B"] + losses["tulu_65B"])
                                         - wins["tulu_7B"] / (wins["tulu_7B"] + losses["tulu_7B"]))
    assert c.ci_low > 0 and c.p_value < 1e-6  # tulu_65B is preferred, clearly


def test_mean_rating_per_deployment(kpis, data_dir):
    _, _, _, con = kpis
    values = defaultdict(list)
    for path in (data_dir / "feedbackqa").glob("*/feedback_*.json"):
        for item in json.loads(path.read_text()):
            values[path.parent.name] += [(RATING_VALUE[r] - 1) / 3 for r in item["rating"]]
    rows = by_group(query(con, "mean_rating", "total", ["app"]), "app")
    for app, vals in values.items():
        assert rows[app].n == len(vals)
        assert rows[app].value == pytest.approx(sum(vals) / len(vals))
        assert rows[app].ci_low < rows[app].value < rows[app].ci_high


def test_negative_comment_share_per_deployment(kpis, data_dir):
    _, _, _, con = kpis
    analyzer = SentimentIntensityAnalyzer()
    negative, total = Counter(), Counter()
    for path in (data_dir / "feedbackqa").glob("*/feedback_*.json"):
        for item in json.loads(path.read_text()):
            for text in item["feedback"]:
                if text and text.strip():
                    total[path.parent.name] += 1
                    negative[path.parent.name] += analyzer.polarity_scores(text)["compound"] <= -0.05
    rows = by_group(query(con, "negative_comment_share", "total", ["app"]), "app")
    for app in total:
        assert rows[app].n == total[app]
        assert rows[app].value == pytest.approx(negative[app] / total[app])


def test_volume_and_coverage_per_model(kpis, data_dir, tulu):
    _, _, _, con = kpis
    rows = by_group(query(con, "interactions", "total", ["model"]))
    assert rows["tulu_65B"].value == 262 and rows["unknown"].value == 13618
    thumbed = {(a["instance_id"], a[f"model_{s}"]) for a in tulu for s in "ab" if a[f"completion_{s}_is_acceptable"]}
    coverage = by_group(query(con, "thumb_coverage", "total", ["model"]))
    for model in ("chatgpt", "tulu_7B"):
        assert coverage[model].value == pytest.approx(sum(1 for _, m in thumbed if m == model) / 262)


def test_hours_and_days_add_up_to_the_total(kpis):
    _, _, _, con = kpis
    total = query(con, "thumbs_up_rate", "total")[0]
    days = query(con, "thumbs_up_rate", "day")
    hours = query(con, "thumbs_up_rate", "hour")
    assert sum(r.n for r in days) == sum(r.n for r in hours) == total.n
    assert len(days) > 50  # oasst1 and Tülu feedback spread over months of 2023


def test_filters_and_low_n_flag(kpis):
    _, _, _, con = kpis
    only = query(con, "thumbs_up_rate", "total", ["model"], KpiFilter(dims={"app": "tulu1_human_eval"}))
    assert {r.group["model"] for r in only} == {"chatgpt", "tulu_65B", "tulu_7B", "tulu_human_only_65B"}
    few = query(con, "thumbs_up_rate", "hour", ["model"], settings=KpiSettings(min_observations=30))
    assert any(r.low_n for r in few) and all(r.low_n == (r.n < 30) for r in few)


def test_refresh_is_incremental_and_records_a_watermark(kpis):
    stack, maintainer, first, con = kpis
    assert all(first.rows.values())
    assert maintainer.refresh().days == {}  # nothing new: nothing recomputed
    table = stack.catalog().load_table("flywheel.kpi_feedback")
    state = KpiMaintainer.state(table)
    latest = con.execute("SELECT max(occurred_at) FROM interactions").fetchone()[0]
    assert state["sql_version"] == 1 and state["watermark"] >= latest.isoformat()[:19]
