"""Models & prompts: A vs B on any KPI (difference, 95 % interval, p-value, method, small-n
warnings), and every value of the dimension with its interval."""

import streamlit as st

from dashboards import charts, finetuned, queries
from dashboards.ui import cached, fmt_delta, fmt_interval, fmt_value, page_context, set_page_param
from feedback.kpi.definitions import KPIS

COMPARABLE = [k for k, d in KPIS.items() if d.kind in ("proportion", "mean", "ratio", "count", "sum")]
DIMS = ["model", "prompt_version", "app", "project"]

ctx = page_context()
f = ctx.filters
st.title("Models & prompts")
st.caption(f"{f.describe()} · B − A with a 95% interval; proportions: Newcombe hybrid score interval and "
           "two-proportion z-test; means: Welch's t-test")
values = cached(ctx, "dimension_values", lambda: queries.dimension_values(ctx.lake))
q = st.query_params


def _index(options: list[str], wanted: str | None, default: int = 0) -> int:
    return options.index(wanted) if wanted in options else min(default, max(len(options) - 1, 0))


c1, c2 = st.columns(2)
kpi = c1.selectbox("KPI", COMPARABLE, index=_index(COMPARABLE, q.get("kpi"), COMPARABLE.index("win_rate")),
                   format_func=lambda k: f"{k} ({KPIS[k].unit})", key="cmp_kpi")
dim = c2.radio("Compare", DIMS, index=_index(DIMS, q.get("by")), horizontal=True, key="cmp_by",
               format_func=lambda d: d.replace("_", " "))
board = cached(ctx, "by_group", lambda: queries.by_group(ctx.lake, kpi, f, ctx.kpi, dim), kpi, dim)
options = values[dim]
if len(options) < 2:
    st.info(f"Only {len(options)} value(s) of {dim} in the lake: nothing to compare.")
    finetuned.render(ctx.lake.catalog, repr(ctx.version))
    st.stop()
# default A/B: the two values with the most observations of this KPI
ranked = [v for v in board.assign(_n=board["n"].fillna(0)).sort_values("_n", ascending=False)[dim] if v in options] if not board.empty else []
ranked += [v for v in options if v not in ranked]
c3, c4 = st.columns(2)
a = c3.selectbox("A", options, index=options.index(q.get("a") if q.get("a") in options else ranked[0]), key=f"cmp_a_{kpi}_{dim}")
b = c4.selectbox("B", options, index=options.index(q.get("b") if q.get("b") in options else ranked[1]), key=f"cmp_b_{kpi}_{dim}")
for key, value in (("kpi", kpi), ("by", dim), ("a", a), ("b", b)):
    set_page_param(key, value)

c = cached(ctx, "compare", lambda: queries.compare(ctx.lake, kpi, dim, a, b, f, ctx.kpi), kpi, dim, a, b)
m1, m2, m3 = st.columns(3)
with m1:
    st.metric(f"A · {a}", fmt_value(kpi, c.a.value), border=True)
    st.caption(fmt_interval(kpi, c.a))
with m2:
    st.metric(f"B · {b}", fmt_value(kpi, c.b.value), border=True)
    st.caption(fmt_interval(kpi, c.b))
with m3:
    st.metric("Difference B − A", fmt_delta(kpi, c.difference) or "—", border=True)
    ci = (f"95% CI [{fmt_delta(kpi, c.ci_low)}, {fmt_delta(kpi, c.ci_high)}]" if c.ci_low is not None else "no interval")
    st.caption(f"{ci} · p = {c.p_value:.3g}" if c.p_value is not None else ci)
st.caption(f"Method: {c.method}")
if c.a.low_n or c.b.low_n:
    small = [s for s, row in (("A", c.a), ("B", c.b)) if row.low_n]
    st.warning(f"Too few observations on {' and '.join(small)} (fewer than {ctx.kpi.min_observations}): "
               "the difference is not reliable.", icon=":material/warning:")
elif c.ci_low is not None and c.ci_low <= 0 <= c.ci_high:
    st.info("The 95% interval of the difference includes 0: no clear difference at this sample size.")
elif c.ci_low is not None:
    st.success(f"{b if c.difference > 0 else a} is {'higher' if c.difference > 0 else 'lower'} with 95% confidence.")

st.subheader(f"{kpi} by {dim.replace('_', ' ')}")
if board.empty:
    st.info("No observations in this range.")
else:
    st.altair_chart(charts.intervals(board, dim, f"{kpi} with 95% interval", KPIS[kpi].unit), key="chart_board")
    st.dataframe(board, hide_index=True, key="board_table",
                 column_config={"value": st.column_config.NumberColumn(format="%.4f"),
                                "ci_low": st.column_config.NumberColumn("95% low", format="%.4f"),
                                "ci_high": st.column_config.NumberColumn("95% high", format="%.4f")})

finetuned.render(ctx.lake.catalog, repr(ctx.version))
