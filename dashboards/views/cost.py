"""Cost & latency: latency and time-to-first-token percentiles over time, tokens, cost per model
and cost per positively rated answer. Empty where no event reports them (never made up)."""

import pandas as pd
import streamlit as st

from dashboards import charts, queries
from dashboards.ui import cached, page_context

ctx = page_context()
f = ctx.filters
st.title("Cost & latency")
p = cached(ctx, "provenance", lambda: queries.token_provenance(ctx.lake, f))
st.caption(f"{f.describe()} · {p['answers']:,} answers: {p['with_latency']:,} report a latency, {p['with_cost']:,} a cost, "
           f"{p['with_tokens']:,} token counts ({p['tokens_derived']:,} derived by a tokenizer, not reported by the app)")

st.subheader("Latency percentiles")
parts = []
for name, label in (("latency_p50_ms", "p50"), ("latency_p95_ms", "p95"), ("latency_p99_ms", "p99"),
                    ("ttft_p50_ms", "TTFT p50"), ("ttft_p95_ms", "TTFT p95")):
    frame = cached(ctx, "series", lambda n=name: queries.series(ctx.lake, n, f, ctx.kpi), name, None)
    parts.append(frame.assign(percentile=label))
latency = pd.concat(parts, ignore_index=True)
if latency.empty:
    st.info("No answer in this range reports a latency. (The replayed public data sets have none, and Flywheel "
            "does not invent them.)")
else:
    st.altair_chart(charts.trend(latency, "Latency (ms)", "ms", color="percentile"), key="chart_latency")

left, right = st.columns(2)
tokens = pd.concat([cached(ctx, "series", lambda n=n: queries.series(ctx.lake, n, f, ctx.kpi), n, None).assign(kind=n)
                    for n in ("tokens_in", "tokens_out")], ignore_index=True)
with left:
    if tokens.empty:
        st.info("No token counts in this range.")
    else:
        st.altair_chart(charts.volume(tokens, "Tokens per window", "kind").encode(
            y=charts.alt.Y("sum(value):Q", title="tokens")), key="chart_tokens")
cost = cached(ctx, "by_group", lambda: queries.by_group(ctx.lake, "cost_usd", f, ctx.kpi, "model"), "cost_usd", "model")
per_positive = cached(ctx, "by_group", lambda: queries.by_group(ctx.lake, "cost_per_positive_answer_usd", f, ctx.kpi, "model"),
                      "cost_per_positive_answer_usd", "model")
with right:
    if cost.empty or not cost["value"].fillna(0).any():
        st.info("No costs in this range: no event carries cost_usd and no price table is configured "
                "(FLYWHEEL_KPI_PRICES_USD_PER_1K_TOKENS).")
    else:
        table = cost[["model", "value"]].rename(columns={"value": "cost_usd"}).merge(
            per_positive[["model", "value", "n"]].rename(columns={"value": "cost_per_positive_answer_usd",
                                                                   "n": "positive_answers"}), on="model", how="left")
        st.dataframe(table, hide_index=True, key="cost_table")
