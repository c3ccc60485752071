"""Entrypoint of the Flywheel dashboard: ``flywheel dashboard`` runs ``streamlit run`` on this file.

It syncs the shared lake connection, draws the global filters and the freshness banner, and runs
the page the URL names (``/overview``, ``/models``, ``/feedback``, ``/conversations``,
``/cost``, ``/health``, ``/topics``). The pages read the lake and the KPI tables only.
"""

from pathlib import Path

import streamlit as st

from dashboards.config import DashboardSettings
from dashboards.ui import CONTEXT_KEY, PageContext, freshness, shared_lake, sidebar_filters
from feedback.config import KpiSettings

PAGES = {  # url path: (title, icon)
    "overview": ("Overview", ":material/dashboard:"),
    "models": ("Models & prompts", ":material/compare_arrows:"),
    "feedback": ("Feedback", ":material/reviews:"),
    "conversations": ("Conversations", ":material/forum:"),
    "cost": ("Cost & latency", ":material/speed:"),
    "health": ("Data health", ":material/monitor_heart:"),
    "topics": ("Topics", ":material/category:"),
}

st.set_page_config(page_title="Flywheel", page_icon=":material/cycle:", layout="wide")
settings = DashboardSettings()
lake = shared_lake()
version = lake.sync()
pages = {key: st.Page(Path(__file__).parent / "views" / f"{key}.py", title=title, icon=icon, url_path=key,
                      default=key == "overview") for key, (title, icon) in PAGES.items()}
current = st.navigation(list(pages.values()))
filters = sidebar_filters(lake, version, settings)
st.session_state[CONTEXT_KEY] = PageContext(lake, version, filters, settings, KpiSettings(), pages)
freshness(st.session_state[CONTEXT_KEY])
current.run()
