"""Topics: what users ask about (MiniLM embeddings of the last user message, k-means, c-TF-IDF
labels), each topic's size and satisfaction with its 95 % interval, the topics of confusion, a
topic's trend and its conversations, and the drift of the prompt distribution over time (MMD).

Reads the lake tables ``topics`` and ``topic_assignments`` written by ``flywheel topics build`` /
``assign`` (:mod:`feedback.topics`) on its own DuckDB connection (the shared dashboard connection
does not know these tables); every query is cached on the lake version, the filters and the topic
tables' metadata locations.
"""

import threading

import pandas as pd
import streamlit as st

from dashboards import charts
from dashboards.queries import answer_where
from dashboards.ui import cached, link_params, page_context, set_page_param
from feedback.errors import FlywheelError
from feedback.topics import kpis, store
from feedback.topics.config import TopicsSettings

ctx = page_context()
f = ctx.filters
q = st.query_params
settings = TopicsSettings()
min_n = settings.min_observations
st.title("Topics")


@st.cache_resource(show_spinner=False)
def _embedder():
    """One embedder (and its lock) per server process; it loads the encoder only for uncached prompts."""
    from feedback.topics.embed import Embedder

    return Embedder(TopicsSettings()), threading.Lock()


def _pct(v) -> str:
    return "—" if v is None or pd.isna(v) else f"{v:.1%}"


catalog, lake_settings = ctx.lake.catalog, ctx.lake.lake
locs = store.locations(catalog, lake_settings)
where, params = answer_where(f, "i")


def _connect():
    return store.connect(catalog, lake_settings, ctx.kpi)


table = cached(ctx, "topics_table", lambda: kpis.topic_table(_connect(), where, params, min_n), locs, min_n)
if table.empty:
    st.info("No topic model yet. Build one from the lake with `flywheel topics build` "
            "(then `flywheel topics assign` adds new conversations to it).")
    st.stop()

confusing = kpis.confusion(table, min_n, limit=10)
rank = {t: i + 1 for i, t in enumerate(confusing["topic_id"])}
assigned = int(table["size"].sum())
st.caption(f"{f.describe()} · {len(table)} topics · {assigned:,} answers assigned · satisfaction = share of answers "
           f"with a thumb or a satisfaction rating that are positively rated (95 % Wilson interval); topics of confusion: "
           f"n ≥ {min_n}, ranked by the interval's upper bound, lowest first.")

shown = pd.DataFrame({
    "topic": table["topic_id"], "label": table["label"], "terms": table["terms"].map(", ".join),
    "size": table["size"], "satisfaction": table["satisfaction"],
    "95% CI": [f"[{_pct(lo)}, {_pct(hi)}]" if lo is not None and not pd.isna(lo) else "—"
               for lo, hi in zip(table["ci_low"], table["ci_high"])],
    "n": table["n"],
    "confusion": [f"⚠ #{rank[t]}" if t in rank else "" for t in table["topic_id"]],
})
picked = st.dataframe(shown, hide_index=True, key="topics_table", on_select="rerun", selection_mode="single-row",
                      column_config={"satisfaction": st.column_config.NumberColumn(format="percent"),
                                     "terms": st.column_config.TextColumn(width="large")})

st.subheader("Topics of confusion")
if confusing.empty:
    st.caption(f"No topic has {min_n} or more rated answers in this range.")
else:
    st.dataframe(pd.DataFrame({"rank": range(1, len(confusing) + 1), "topic": confusing["topic_id"],
                               "label": confusing["label"], "satisfaction": confusing["satisfaction"],
                               "95% CI": [f"[{_pct(lo)}, {_pct(hi)}]" for lo, hi in zip(confusing["ci_low"], confusing["ci_high"])],
                               "n": confusing["n"], "size": confusing["size"]}),
                 hide_index=True, key="confusion_table",
                 column_config={"satisfaction": st.column_config.NumberColumn(format="percent")})

rated = table[table["n"] > 0]
if not rated.empty:
    frame = pd.DataFrame({"topic": [f"{t}: {lab}" for t, lab in zip(rated["topic_id"], rated["label"])],
                          "value": rated["satisfaction"], "ci_low": rated["ci_low"], "ci_high": rated["ci_high"],
                          "n": rated["n"]})
    st.altair_chart(charts.intervals(frame, "topic", "Satisfaction by topic (95% interval)", "share"),
                    width="stretch")

# --- one topic: trend and conversations ------------------------------------------------------------
st.divider()
ids = [int(t) for t in table["topic_id"]]
rows = picked.selection.rows if picked is not None else []
wanted = q.get("topic")
if rows:
    wanted = str(int(shown.iloc[rows[0]]["topic"]))
default = int(wanted) if wanted and wanted.isdigit() and int(wanted) in ids else (
    int(confusing["topic_id"].iloc[0]) if not confusing.empty else ids[0])
labels = dict(zip(ids, table["label"]))
c1, c2, c3 = st.columns([3, 1, 1])
topic = c1.selectbox("Topic", ids, index=ids.index(default), format_func=lambda t: f"{t}: {labels[t]}", key="topic_pick")
grain = c2.selectbox("Trend by", ["week", "day"], index=0 if q.get("grain") != "day" else 1, key="topic_grain")
only = c3.selectbox("Answers", ["all", "unsatisfied", "rated"], key="topic_only")
set_page_param("topic", str(topic))
set_page_param("grain", grain)

row = table[table["topic_id"] == topic].iloc[0]
st.subheader(f"Topic {topic}: {row['label']}")
st.caption(f"Terms: {', '.join(row['terms'])} · size {row['size']:,} · satisfaction {_pct(row['satisfaction'])} "
           f"[{_pct(row['ci_low'])}, {_pct(row['ci_high'])}] · n={row['n']:,}")
trend = cached(ctx, "topic_trend", lambda: kpis.trend(_connect(), topic, grain, where, params, min_n), locs, topic, grain)
if trend["n"].sum() > 0:
    st.altair_chart(charts.trend(trend[trend["n"] > 0], f"Satisfaction of topic {topic} per {grain}", "share"),
                    width="stretch")
else:
    st.caption("No answer of this topic has a thumb or a satisfaction rating in this range.")

answers, total = cached(ctx, "topic_answers",
                        lambda: kpis.answers(_connect(), topic, where, params, ctx.settings.page_rows, only),
                        locs, topic, only, ctx.settings.page_rows)
st.caption(f"{total:,} answers in this topic ({only}); the newest {len(answers):,} shown. Select a row to open its conversation.")
sel = st.dataframe(answers[["conversation_id", "occurred_at", "model", "app", "prompt_text", "response", "rated", "positive"]],
                   hide_index=True, key="topic_answers", on_select="rerun", selection_mode="single-row",
                   column_config={"prompt_text": st.column_config.TextColumn("prompt (last user message)", width="medium"),
                                  "response": st.column_config.TextColumn(width="medium")})
chosen = sel.selection.rows if sel is not None else []
for cid in ([answers.iloc[chosen[0]]["conversation_id"]] if chosen else list(answers["conversation_id"].head(5))):
    st.page_link(ctx.pages["conversations"], label=f"Open conversation {cid}", icon=":material/forum:",
                 query_params=link_params(ctx, conversation=cid))

# --- drift ------------------------------------------------------------------------------------------
st.divider()
st.subheader("Prompt drift")
d1, d2 = st.columns([1, 3])
drift_grain = d1.selectbox("Window", ["week", "day"], key="drift_grain")
st.caption("MMD² between each window's distinct prompt embeddings and those of the first window with 20 or more (the reference), RBF kernel with "
           "median-heuristic bandwidth, permutation p-value moving whole conversations (Gretton et al. 2012); at most "
           f"{settings.drift_max_per_window:,} prompts per window; windows with fewer than 20 distinct prompts are skipped.")


def _drift():
    from feedback.topics.drift import drift_series

    embedder, lock = _embedder()
    with lock:
        return drift_series(_connect(), None, drift_grain, embedder, settings, where, params)


try:
    with st.spinner("Computing drift…"):
        series = cached(ctx, "topic_drift", _drift, locs, drift_grain)
except FlywheelError as exc:
    series = pd.DataFrame()
    st.caption(f"Drift not computed: {exc}")
if not series.empty:
    latest = series.iloc[-1]
    d2.metric("Latest window vs reference", f"MMD² {latest['mmd2']:.4f}", f"p = {latest['p_value']:.3f}",
              delta_color="off")
    import altair as alt

    base = alt.Chart(series).encode(x=alt.X("window_start:T", title=None), y=alt.Y("mmd2:Q", title="MMD² vs reference"))
    tooltip = [alt.Tooltip("window_start:T", format="%Y-%m-%d"), alt.Tooltip("prompts:Q", format=","),
               alt.Tooltip("mmd2:Q", format=".5f"), alt.Tooltip("p_value:Q", format=".3f"), alt.Tooltip("sigma:Q", format=".3f")]
    chart = alt.layer(base.mark_line(color="#1f77b4"),
                      base.mark_point(filled=True, size=70).encode(
                          color=alt.Color("drifted:N", title="p < 0.05", scale=alt.Scale(domain=[False, True], range=["#1f77b4", "#d62728"])),
                          tooltip=tooltip)
                      ).properties(title=f"Prompt drift per {drift_grain} vs the first {drift_grain}", height=240)
    st.altair_chart(chart, width="stretch")
