"""Data health: events per topic, quarantined records by reason with an example, the ingestion
rate, consumer lag per partition and the KPI tables' state. Not filtered (the pipeline as a whole)."""

import streamlit as st

from dashboards import charts, queries
from feedback.ingest.lag import consumer_lag
from dashboards.ui import cached, page_context
from feedback.config import kafka_settings
from feedback.config import IngestSettings
from feedback.errors import FlywheelError

ctx = page_context()
st.title("Data health")
st.caption("The whole pipeline, not filtered by the sidebar.")

st.subheader("Events in the lake per topic")
st.dataframe(cached(ctx, "topics", lambda: queries.events_per_topic(ctx.lake)), hide_index=True, key="topics_table")

st.subheader("Quarantine")
quarantine = cached(ctx, "quarantine", lambda: queries.quarantine_by_reason(ctx.lake))
if quarantine.empty:
    st.success("No record has been quarantined.")
else:
    st.caption(f"{int(quarantine['records'].sum()):,} records rejected; each also went to the dead-letter topic.")
    st.dataframe(quarantine, hide_index=True, key="quarantine_table")

st.subheader("Ingestion rate")
rate = cached(ctx, "rate", lambda: queries.ingestion_rate(ctx.lake))
if rate.empty:
    st.info("Nothing ingested yet.")
else:
    st.caption(f"Events landed per minute over the last hour of ingestion: {int(rate['events'].sum()):,} events.")
    st.altair_chart(charts.rate(rate, "Events landed per minute"), key="chart_rate")

st.subheader("Consumer lag")
try:
    lag = consumer_lag(kafka_settings(), IngestSettings().group_id, ctx.settings.lag_timeout_s)
    st.dataframe([{"partition": k, "lag": v} for k, v in sorted(lag.items())], hide_index=True, key="lag_table")
    st.caption("End offset − committed offset of the ingestion consumer group. The embedded Tansu broker "
               "under-reports end offsets, so there this can read low.")
except FlywheelError as exc:
    st.warning(f"The bus did not answer: {exc}")

st.subheader("KPI tables")
states = ctx.lake.states()
st.dataframe([{"table": name, "snapshot": s.snapshot_id, "committed": s.committed_at,
               "watermark": (s.kpi_state or {}).get("watermark"), "refreshed": (s.kpi_state or {}).get("refreshed_at"),
               "sql_version": (s.kpi_state or {}).get("sql_version")} for name, s in states.items()],
             hide_index=True, key="tables_table")
