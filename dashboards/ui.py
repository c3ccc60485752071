"""What every page shares: the lake connection, the cache, the global filters in the sidebar (kept
in the URL query string), the freshness banner, and number formatting.

Caching: :func:`cached` memoises a page query on (query name, lake version, filters, arguments).
The lake version is the tuple of current snapshot ids, so an answer is reused exactly until a
table gets a new snapshot. The freshness banner is a fragment that re-syncs every
``refresh_interval_s`` and reruns the page when the lake moved on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

import streamlit as st

from dashboards.config import DashboardSettings
from dashboards.errors import DashboardError
from dashboards.filters import DIMENSIONS, RANGE_LABELS, GlobalFilters
from dashboards.lake import DashboardLake, LakeVersion
from feedback.config import KpiSettings, LakeSettings
from feedback.kpi.definitions import KPIS
from feedback.kpi.query import KpiRow

CONTEXT_KEY = "flywheel_context"
KPI_TITLES = {"interactions": "Answers", "feedback_coverage": "Feedback coverage", "positive_rate": "Positively rated",
              "thumbs_up_rate": "Thumbs-up rate", "mean_rating": "Mean rating (0–1)", "win_rate": "Preference win rate",
              "negative_comment_share": "Negative comments", "thumb_coverage": "Answers with a thumb",
              "rating_coverage": "Answers with a rating", "comment_coverage": "Answers with a comment",
              "preference_coverage": "Answers in a preference", "correction_coverage": "Answers corrected"}
"""Short titles of the KPIs the pages show as tiles or menu entries."""


@dataclass
class PageContext:
    """Handed from the entrypoint to the page script of one run."""

    lake: DashboardLake
    version: LakeVersion
    filters: GlobalFilters
    settings: DashboardSettings
    kpi: KpiSettings
    pages: dict[str, Any]


@st.cache_resource(show_spinner=False)
def shared_lake() -> DashboardLake:
    """One :class:`DashboardLake` per server process (all sessions share it)."""
    from feedback.lake.catalog import open_catalog

    settings = DashboardSettings()
    return DashboardLake(open_catalog(), LakeSettings(), KpiSettings(), settings.sync_min_interval_s)


@st.cache_resource(show_spinner=False)
def sentiment_scorer(spec: str | None):
    """The comment sentiment scorer of the KPI settings (one per server process)."""
    from feedback.kpi.sentiment import load_scorer

    return load_scorer(spec)


@st.cache_data(show_spinner=False, max_entries=512, ttl=timedelta(hours=1))
def _memo(name: str, version: LakeVersion, filters_key: tuple, args: tuple, _call: Callable[[], Any]) -> Any:
    return _call()


def cached(ctx: PageContext, name: str, call: Callable[[], Any], *args: Any, filters: GlobalFilters | None = None) -> Any:
    """``call()``, memoised on (``name``, lake version, ``filters`` (default the page's), ``args``)."""
    return _memo(name, ctx.version, (filters or ctx.filters).key(), args, call)


def page_context() -> PageContext:
    """The context the entrypoint built for this run (a page script's first call)."""
    ctx = st.session_state.get(CONTEXT_KEY)
    if ctx is None:
        raise DashboardError("run the dashboard through its entrypoint: flywheel dashboard")
    return ctx


# --- global filters -------------------------------------------------------------------------------


def _query_dict() -> dict[str, str]:
    return {k: st.query_params.get(k) for k in st.query_params.keys()}


FILTER_KEYS = ("range", "from", "to", *DIMENSIONS)
_WRITTEN = "_flywheel_filters_written"


def _seed_widgets(current: GlobalFilters) -> None:
    """Put the URL's filters into the filter widgets' state (before the widgets are drawn)."""
    st.session_state["f_range"] = current.range
    if current.range == "custom":
        today = datetime.now(UTC).date()
        start = current.start.date() if current.start else today - timedelta(days=30)
        end = (current.end - timedelta(days=1)).date() if current.end else today
        st.session_state["f_dates"] = (start, end)
    for dim in DIMENSIONS:
        st.session_state[f"f_{dim}"] = current.dims.get(dim, "(all)")


def sidebar_filters(lake: DashboardLake, version: LakeVersion, settings: DashboardSettings) -> GlobalFilters:
    """Draw the global filters in the sidebar and keep them in the URL.

    The URL wins when it carries filters other than the ones this session last wrote (a shared link,
    a drill-down); otherwise the widgets win (the user changed one, or page navigation dropped the
    query string) and the URL is rewritten from them."""
    params = _query_dict()
    from_url = {k: v for k, v in params.items() if k in FILTER_KEYS}
    if from_url and from_url != st.session_state.get(_WRITTEN) or "f_range" not in st.session_state:
        try:
            _seed_widgets(GlobalFilters.from_query(from_url, settings.default_range))
        except DashboardError as exc:
            st.sidebar.error(str(exc))
            _seed_widgets(GlobalFilters.from_query({}, settings.default_range))
    from dashboards import queries

    values = _memo("dimension_values", version, (), (), lambda: queries.dimension_values(lake))
    sb = st.sidebar
    sb.header("Filters")
    choice = sb.selectbox("Time range", list(RANGE_LABELS), format_func=RANGE_LABELS.get, key="f_range")
    query: dict[str, str] = {"range": choice}
    if choice == "custom":
        if "f_dates" not in st.session_state:
            today = datetime.now(UTC).date()
            st.session_state["f_dates"] = (today - timedelta(days=30), today)
        picked = sb.date_input("From – to (UTC)", key="f_dates")
        if isinstance(picked, (tuple, list)) and len(picked) == 2:
            query.update({"from": picked[0].isoformat(), "to": picked[1].isoformat()})
        elif isinstance(picked, (tuple, list)) and len(picked) == 1:
            query.update({"from": picked[0].isoformat()})
    for dim in DIMENSIONS:
        options = ["(all)"] + values[dim]
        if st.session_state.get(f"f_{dim}") not in options:
            options.append(st.session_state[f"f_{dim}"])
        value = sb.selectbox(dim.replace("_", " ").capitalize(), options, key=f"f_{dim}")
        if value != "(all)":
            query[dim] = value
    st.session_state[_WRITTEN] = query
    wanted = {**{k: v for k, v in params.items() if k not in FILTER_KEYS}, **query}
    if wanted != params:
        st.query_params.from_dict(wanted)
    return GlobalFilters.from_query(query, settings.default_range)


def set_page_param(key: str, value: str | None) -> None:
    """Set (or with None, remove) a page-specific query-string key, keeping the filters."""
    if value is None:
        if key in st.query_params:
            del st.query_params[key]
    elif st.query_params.get(key) != value:
        st.query_params[key] = value


def link_params(ctx: PageContext, **extra: str) -> dict[str, str]:
    """Query params of the current filters plus ``extra`` (for links to another page)."""
    return {**ctx.filters.to_query(), **{k: v for k, v in extra.items() if v is not None}}


# --- freshness ------------------------------------------------------------------------------------


def _ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    seconds = max(0.0, (datetime.now(UTC) - when).total_seconds())
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


@st.cache_data(ttl=timedelta(seconds=5), show_spinner=False)
def lag_now(timeout_s: float) -> tuple[int | None, str | None]:
    """(total consumer lag, None) or (None, why it is unknown); asked of the bus at most every 5 s."""
    from feedback.ingest.lag import consumer_lag
    from feedback.config import IngestSettings, kafka_settings
    from feedback.errors import FlywheelError

    try:
        return sum(consumer_lag(kafka_settings(), IngestSettings().group_id, timeout_s).values()), None
    except FlywheelError as exc:
        return None, str(exc).split(":")[0]


def freshness(ctx: PageContext) -> None:
    """The banner: last lake commit, KPI watermark and refresh, consumer lag. As a fragment it
    re-syncs every ``refresh_interval_s`` and reruns the whole page when new snapshots arrived."""
    interval = ctx.settings.refresh_interval_s or None

    @st.fragment(run_every=interval)
    def banner() -> None:
        version = ctx.lake.sync()
        if version != ctx.version:
            st.rerun(scope="app")
        states = ctx.lake.states()
        commits = [s.committed_at for n, s in states.items() if n in ("interactions", "feedback", "metrics") and s.committed_at]
        kpi_state = (states.get("kpi_feedback").kpi_state or {}) if states.get("kpi_feedback") else {}
        watermark, refreshed = kpi_state.get("watermark"), kpi_state.get("refreshed_at")
        lag, why = lag_now(ctx.settings.lag_timeout_s)
        parts = [f"**Lake** last commit {_ago(max(commits) if commits else None)}",
                 f"**KPI watermark** {watermark[:19].replace('T', ' ') + ' UTC' if watermark else 'none yet'}"
                 f" (refreshed {_ago(datetime.fromisoformat(refreshed) if refreshed else None)})",
                 f"**Consumer lag** {lag:,} records" if lag is not None else f"**Consumer lag** unknown ({why})"]
        behind = kpi_state.get("sources") != {n: states[n].snapshot_id for n in ("interactions", "feedback")
                                               if states.get(n) and states[n].snapshot_id is not None}
        if behind and watermark:
            parts.append("KPI tables are catching up with the lake")
        text = ":material/schedule: " + " · ".join(parts)
        st.warning(text) if lag or behind else st.caption(text)

    banner()


# --- formatting -----------------------------------------------------------------------------------


def fmt_value(name: str, value: float | None) -> str:
    """A KPI value in its unit: shares as percentages, counts with separators, USD with $."""
    if value is None:
        return "—"
    unit = KPIS[name].unit
    if unit == "share":
        return f"{value:.1%}"
    if unit == "USD":
        return f"${value:,.4f}"
    if KPIS[name].kind in ("count", "sum"):
        return f"{value:,.0f}"
    return f"{value:,.3f}"


def fmt_delta(name: str, delta: float | None) -> str | None:
    """The change vs the previous period in the KPI's unit (percentage points for shares)."""
    if delta is None:
        return None
    unit = KPIS[name].unit
    if unit == "share":
        return f"{delta * 100:+.1f} pp"
    if KPIS[name].kind in ("count", "sum"):
        return f"{delta:+,.0f}"
    return f"{delta:+,.3f}"


def fmt_interval(name: str, row: KpiRow) -> str:
    """``95% CI [lo, hi] · n=…`` (or just n), with a low-n warning."""
    parts = []
    if row.ci_low is not None and row.ci_high is not None:
        parts.append(f"95% CI [{fmt_value(name, row.ci_low)}, {fmt_value(name, row.ci_high)}]")
    if row.n is not None:
        parts.append(f"n={row.n:,}")
    if row.low_n and row.n is not None:
        parts.append("⚠ too few observations")
    return " · ".join(parts)
