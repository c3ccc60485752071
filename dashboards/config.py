"""Settings of the dashboard (``FLYWHEEL_DASHBOARD_*``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    """The Streamlit dashboard.

    ``refresh_interval_s``: how often an open page checks the lake for new snapshots and reruns
    when there are some (seconds; 0 turns it off). ``sync_min_interval_s``: the least time between
    two reads of the catalog (each reads 6 table metadata files). ``default_range``: the time range
    a page opens with when the URL names none (see :data:`dashboards.filters.RANGES`).
    ``lag_timeout_s``: how long the freshness banner waits for the bus to answer.
    """

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_DASHBOARD_")
    host: str = "127.0.0.1"
    port: int = 8501
    refresh_interval_s: float = 10.0
    sync_min_interval_s: float = 1.0
    default_range: str = "all"
    page_rows: int = 200
    complaint_terms: int = 20
    lag_timeout_s: float = 2.0
