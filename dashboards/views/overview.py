"""Overview: headline KPIs with change vs the previous period and 95 % intervals, trends, and
links from each model's value to the answers behind it."""

import pandas as pd
import streamlit as st

from dashboards import charts, queries
from dashboards.ui import KPI_TITLES as TITLES, cached, fmt_delta, fmt_interval, fmt_value, link_params, page_context
from feedback.kpi.definitions import KPIS

TILES = ["interactions", "feedback_coverage", "positive_rate", "thumbs_up_rate", "mean_rating",
         "negative_comment_share", "thumb_coverage", "rating_coverage"]
# Win rate is not a tile: over all models every win is another's loss (always 50 %). It is compared
# per model on the Models & prompts page and in the drill-down below.
LOWER_IS_BETTER = {"negative_comment_share"}

ctx = page_context()
f = ctx.filters
st.title("Overview")
prev = f.previous()
st.caption(f"{f.describe()}" + (f" · change vs the {f.span.days or 1}-day period before" if prev else
                                  " · pick a bounded time range to see the change vs the previous period"))

tiles = cached(ctx, "tiles", lambda: queries.tiles(ctx.lake, TILES, f, ctx.kpi), tuple(TILES))
for row_start in range(0, len(tiles), 4):
    for col, tile in zip(st.columns(4), tiles[row_start:row_start + 4]):
        with col:
            st.metric(TITLES[tile.kpi], fmt_value(tile.kpi, tile.current.value), fmt_delta(tile.kpi, tile.delta),
                      delta_color="inverse" if tile.kpi in LOWER_IS_BETTER else "normal",
                      help=KPIS[tile.kpi].description, border=True)
            st.caption(fmt_interval(tile.kpi, tile.current) or " ")

st.subheader(f"Trends per {f.grain}")
left, right = st.columns(2)
volume = cached(ctx, "series", lambda: queries.series(ctx.lake, "interactions", f, ctx.kpi, by="app"), "interactions", "app")
with left:
    st.altair_chart(charts.volume(volume, "Answers by app", "app"), key="chart_volume")
for col, name in ((right, "thumbs_up_rate"), (left, "mean_rating"), (right, "feedback_coverage")):
    frame = cached(ctx, "series", lambda n=name: queries.series(ctx.lake, n, f, ctx.kpi), name, None)
    with col:
        if frame.empty:
            st.info(f"No {TITLES[name].lower()} observations in this range.")
        else:
            st.altair_chart(charts.trend(frame, f"{TITLES[name]} with 95% interval", KPIS[name].unit), key=f"chart_{name}")

st.subheader("Drill down")
drill_kpi = st.selectbox("KPI", list(queries.KPI_SIGNALS), format_func=lambda k: TITLES.get(k, k), key="drill_kpi")
by_model = cached(ctx, "by_group", lambda: queries.by_group(ctx.lake, drill_kpi, f, ctx.kpi, "model"), drill_kpi, "model")
all_signal, bad_signal = queries.KPI_SIGNALS[drill_kpi]
if by_model.empty:
    st.info("No observations of this KPI in this range.")
for rec in by_model.sort_values("n", ascending=False).head(12).itertuples():
    c1, c2, c3 = st.columns([3, 2, 2])
    c1.markdown(f"**{rec.model}** — {fmt_value(drill_kpi, rec.value)}"
                + (f" [{fmt_value(drill_kpi, rec.ci_low)}, {fmt_value(drill_kpi, rec.ci_high)}]" if pd.notna(rec.ci_low) else "")
                + f" · n={rec.n:,}" + (" · ⚠ low n" if rec.low_n else ""))
    if rec.model == "(none)":
        continue
    c2.page_link(ctx.pages["conversations"], label=f"{queries.SIGNALS[all_signal][0]}",
                 query_params=link_params(ctx, model=rec.model, signal=all_signal, kpi=drill_kpi))
    c3.page_link(ctx.pages["conversations"], label=f"{queries.SIGNALS[bad_signal][0]}",
                 query_params=link_params(ctx, model=rec.model, signal=bad_signal, kpi=drill_kpi))
