"""Every dashboard page, opened with Streamlit's AppTest on the replayed real data: the numbers shown
equal the KPI tables' (read through the KPI layer) or an independent count from the source files."""

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from dashboards.ui import KPI_TITLES as TITLES, fmt_delta, fmt_value
from feedback.config import KpiSettings
from feedback.kpi.maintainer import KpiMaintainer
from feedback.kpi.query import KpiFilter, compare, kpi_connection, query

APP = Path(__file__).resolve().parents[1] / "dashboards" / "app.py"
MARCH = {"range": "custom", "from": "2023-03-01", "to": "2023-03-31"}


@pytest.fixture(scope="module")
def dash(lake):
    """The real-data lake with current KPI tables, and the dashboard's environment pointing at it."""
    stack, _ = lake
    KpiMaintainer(stack.catalog(), stack.lake, KpiSettings()).refresh()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**stack.env, "FLYWHEEL_DASHBOARD_LAG_TIMEOUT_S": "1"}.items():
            mp.setenv(key, value)
        from dashboards.ui import shared_lake

        shared_lake.clear()
        yield stack, kpi_connection(stack.catalog(), stack.lake)
        shared_lake.clear()


def open_page(page: str | None = None, **params: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update(params)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py")
        at.query_params.update(params)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_rows(element) -> list[dict]:
    """The data plotted by an Altair chart element (Arrow IPC in the proto)."""
    raw = element.proto.datasets[0].data.data
    return pa.ipc.open_stream(raw).read_all().to_pylist()


def caption(at: AppTest, prefix: str) -> str:
    """The first caption starting with ``prefix`` (fails if none)."""
    found = [c.value for c in at.caption if c.value.startswith(prefix)]
    assert found, (prefix, [c.value for c in at.caption])
    return found[0]


def metrics(at: AppTest) -> dict[str, tuple[str, str | None]]:
    return {m.label: (m.value, m.delta) for m in at.metric}


def test_overview_tiles_equal_the_kpi_tables_with_change_vs_previous_period(dash):
    _, con = dash
    at = open_page(**MARCH)
    from dashboards.filters import GlobalFilters

    f = GlobalFilters.from_query(MARCH)
    prev = f.previous()
    assert prev.start.isoformat()[:10] == "2023-01-29"  # 31 days before 2023-03-01
    shown = metrics(at)
    for name in ("interactions", "thumbs_up_rate", "mean_rating", "feedback_coverage", "thumb_coverage"):
        now = query(con, name, "total", [], KpiFilter(f.start, f.end))[0]
        before = query(con, name, "total", [], KpiFilter(prev.start, prev.end))[0]
        value, delta = shown[TITLES[name]]
        assert value == fmt_value(name, now.value)
        assert delta == fmt_delta(name, now.value - before.value)
    thumbs = query(con, "thumbs_up_rate", "total", [], KpiFilter(f.start, f.end))[0]
    assert f"n={thumbs.n:,}" in " ".join(c.value for c in at.caption)


def test_overview_trend_charts_plot_the_kpi_series(dash):
    _, con = dash
    at = open_page(**MARCH)
    charts = {json.loads(c.proto.spec)["title"]: c for c in at.get("vega_lite_chart")}
    plotted = chart_rows(charts["Thumbs-up rate with 95% interval"])
    f = KpiFilter(*_march())
    expected = query(con, "thumbs_up_rate", "day", [], f)
    assert len(plotted) == len([r for r in expected if r.n]) > 20
    for got, want in zip(plotted, [r for r in expected if r.n]):
        assert got["value"] == pytest.approx(want.value) and got["n"] == want.n
        assert got["ci_low"] == pytest.approx(want.ci_low)
    volume = chart_rows(charts["Answers by app"])
    assert sum(r["value"] for r in volume) == query(con, "interactions", "total", [], f)[0].value


def _march():
    from dashboards.filters import GlobalFilters

    f = GlobalFilters.from_query(MARCH)
    return f.start, f.end


def test_model_filter_round_trips_through_the_url(dash):
    _, con = dash
    at = open_page(model="tulu_65B")
    assert at.selectbox(key="f_model").value == "tulu_65B"
    want = query(con, "thumbs_up_rate", "total", [], KpiFilter(dims={"model": "tulu_65B"}))[0]
    assert metrics(at)["Thumbs-up rate"][0] == fmt_value("thumbs_up_rate", want.value)
    at.selectbox(key="f_model").set_value("tulu_7B").run()
    assert at.query_params["model"] in ("tulu_7B", ["tulu_7B"])
    want = query(con, "thumbs_up_rate", "total", [], KpiFilter(dims={"model": "tulu_7B"}))[0]
    assert metrics(at)["Thumbs-up rate"][0] == fmt_value("thumbs_up_rate", want.value)
    assert metrics(at)["Answers"][0] == "262"  # Tülu: 262 instances, one completion each per model


def test_models_page_compares_a_and_b_like_the_kpi_layer(dash):
    _, con = dash
    at = open_page("models", kpi="win_rate", by="model", a="tulu_7B", b="tulu_65B")
    c = compare(con, "win_rate", "model", "tulu_7B", "tulu_65B")
    shown = metrics(at)
    assert shown["A · tulu_7B"][0] == fmt_value("win_rate", c.a.value)
    assert shown["B · tulu_65B"][0] == fmt_value("win_rate", c.b.value)
    assert shown["Difference B − A"][0] == fmt_delta("win_rate", c.difference) == "+31.1 pp"
    captions = " ".join(x.value for x in at.caption)
    assert f"p = {c.p_value:.3g}" in captions and c.method in captions
    assert any("higher with 95% confidence" in s.value for s in at.success)
    board = chart_rows(at.get("vega_lite_chart")[0])
    assert {r["model"]: r["n"] for r in board} == {r.group["model"]: r.n for r in query(con, "win_rate", "total", ["model"]) if r.n}


def test_models_page_warns_on_small_samples(dash):
    at = open_page("models", kpi="thumbs_up_rate", by="model", a="tulu_7B", b="tulu_65B", range="custom",
                   **{"from": "2023-05-21", "to": "2023-05-21"})
    assert any("Too few observations" in w.value for w in at.warning)


def _feedbackqa(data_dir):
    for path in sorted((data_dir / "feedbackqa").glob("*/feedback_*.json")):
        for item in json.loads(path.read_text()):
            for i, label in enumerate(item["rating"]):
                text = item["feedback"][i] if i < len(item["feedback"]) else None
                yield path.parent.name, label, text


def test_feedback_page_comments_search_and_rating_filter_match_the_source(dash, data_dir):
    comments = [(app, label, t) for app, label, t in _feedbackqa(data_dir) if isinstance(t, str) and t.strip()]
    at = open_page("feedback")
    caption(at, f"{len(comments):,} comments match")
    at.text_input(key="comment_search").set_value("irrelevant").run()
    hits = [c for c in comments if "irrelevant" in c[2].lower()]
    caption(at, f"{len(hits):,} comments match")
    assert all("irrelevant" in text.lower() for text in at.dataframe[0].value["comment"])
    at.text_input(key="comment_search").set_value("").run()
    at.slider(key="comment_rating").set_value((0.0, 0.4)).run()
    at.checkbox(key="comment_unrated").uncheck().run()
    low = [c for c in comments if c[1] in ("Bad", "Could be Improved")]
    caption(at, f"{len(low):,} comments match")
    terms = chart_rows(at.get("vega_lite_chart")[-1])
    assert terms and all(t["lift"] >= 1.2 for t in terms)


def test_feedback_page_thumbs_and_ratings_equal_kpis_and_source(dash, data_dir):
    _, con = dash
    at = open_page("feedback")
    charts = {json.loads(c.proto.spec)["title"]: c for c in at.get("vega_lite_chart")}
    thumbs = Counter()
    for r in chart_rows(charts["Thumbs by model"]):
        thumbs[(r["model"], r["thumb"])] += r["count"]
    for row in [r for r in query(con, "thumbs_up_rate", "total", ["model"]) if r.n]:
        model = row.group["model"] or "(none)"
        assert thumbs[(model, "up")] + thumbs[(model, "down")] == row.n
        assert thumbs[(model, "up")] == round(row.value * row.n)
    ratings = {(r["scale"], r["label"]): r["ratings"] for r in chart_rows(charts["Ratings by value"])}
    source = Counter(label for _, label, _ in _feedbackqa(data_dir))
    for label, n in source.items():
        assert ratings[("1–4", label)] == n


def test_drill_down_from_a_kpi_slice_to_the_answers_and_a_transcript(dash, data_dir):
    at = open_page()
    at.selectbox(key="drill_kpi").set_value("thumbs_up_rate").run()
    link = next(p.proto for p in at.get("page_link") if "model=tulu_7B" in p.proto.query_string and "thumb_down" in p.proto.query_string)
    params = dict(kv.split("=", 1) for kv in link.query_string.split("&"))
    assert link.page == "conversations" and params["signal"] == "thumb_down"
    conv = open_page("conversations", **params)
    # independent: Tülu (instance, tulu_7B) answers that any annotator found not acceptable
    with open(data_dir / "tulu1_human_eval" / "eval_annotations_tulu_1.jsonl") as fh:
        annotations = [json.loads(line) for line in fh]
    down = {a["instance_id"] for a in annotations for s in "ab"
            if a[f"model_{s}"] == "tulu_7B" and a[f"completion_{s}_is_acceptable"] == "no"}
    table = conv.dataframe[0].value
    assert any(c.value.endswith(f"{len(down):,} answers match; the newest {min(len(down), 200):,} shown. "
                                "Select a row to read its conversation.") for c in conv.caption)
    assert set(table["model"]) == {"tulu_7B"} and (table["thumbs_down"] > 0).all()
    conversation = table["conversation_id"].iloc[0]
    conv.text_input(key="conv_open").set_value(conversation).run()
    assert not conv.exception
    assert conv.query_params["conversation"] in (conversation, [conversation])
    assert any(h.value == f"Conversation {conversation}" for h in conv.subheader)
    shown = [m for m in conv.get("chat_message")]
    assert len(shown) >= 2  # the prompt and at least one answer
    feedback = [d.value for d in conv.dataframe[1:]]
    assert sum(int((f["thumb"] == "down").sum()) for f in feedback if "thumb" in f) >= 1


def test_cost_and_health_pages_report_what_the_lake_has(dash):
    stack, con = dash
    at = open_page("cost")
    total = con.execute("SELECT count(*) FROM interactions").fetchone()[0]
    assert caption(at, "All time").startswith(f"All time · {total:,} answers: 0 report a latency, 0 a cost, {total:,} token counts "
                                          f"({total:,} derived by a tokenizer")
    assert any("reports a latency" in i.value for i in at.info)  # the public data has no latencies: none invented
    health = open_page("health")
    topics = health.dataframe[0].value
    lake = stack.sql()
    assert int(topics["events"].sum()) == lake.execute(
        "SELECT (SELECT count(*) FROM interactions) + (SELECT count(*) FROM feedback) + (SELECT count(*) FROM metrics)").fetchone()[0]
    assert any("No record has been quarantined" in s.value for s in health.success)
    lag = health.dataframe[1].value
    assert set(lag["partition"]) == {f"{stack.kafka.topic(t)}:{p}" for t in ("interaction", "feedback", "metric") for p in range(3)}
