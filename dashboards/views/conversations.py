"""Conversations: the answers behind a KPI slice (filters + signal + day), then one conversation's
full transcript with every feedback event on it."""

import pandas as pd
import streamlit as st

from dashboards import queries
from dashboards.errors import DashboardError
from dashboards.ui import cached, page_context, set_page_param

ctx = page_context()
f = ctx.filters
q = st.query_params
st.title("Conversations")

signals = list(queries.SIGNALS)
c1, c2, c3 = st.columns([2, 1, 2])
signal = c1.selectbox("Answers", signals, index=signals.index(q.get("signal")) if q.get("signal") in signals else 0,
                      format_func=lambda s: queries.SIGNALS[s][0], key="conv_signal")
day = c2.text_input("Day (UTC, YYYY-MM-DD)", value=q.get("day") or "", key="conv_day").strip() or None
wanted = c3.text_input("Open a conversation by id", value=q.get("conversation") or "", key="conv_open").strip() or None
set_page_param("signal", signal)
set_page_param("day", day)
if q.get("kpi"):
    st.caption(f"Drilled down from KPI **{q.get('kpi')}**")
try:
    if day:
        pd.Timestamp(day)
    frame, total = cached(ctx, "answers", lambda: queries.answers(ctx.lake, f, ctx.kpi, signal, day, ctx.settings.page_rows),
                          signal, day, ctx.settings.page_rows)
except (DashboardError, ValueError) as exc:
    st.error(str(exc))
    st.stop()
st.caption(f"{f.describe()}{' · ' + day if day else ''} · {total:,} answers match; the newest {len(frame):,} shown. "
           "Select a row to read its conversation.")
picked = st.dataframe(frame, hide_index=True, key="answers_table", on_select="rerun", selection_mode="single-row",
                      column_config={"question": st.column_config.TextColumn(width="medium"),
                                     "response": st.column_config.TextColumn(width="medium"),
                                     "rating_mean": st.column_config.NumberColumn("rating (0–1)", format="%.2f")})
rows = picked.selection.rows if picked is not None else []
if rows:
    wanted = frame.iloc[rows[0]]["conversation_id"]
set_page_param("conversation", wanted)
if not wanted:
    st.stop()

t = cached(ctx, "transcript", lambda: queries.transcript(ctx.lake, wanted), wanted)
st.divider()
st.subheader(f"Conversation {wanted}")
if t.interactions.empty:
    st.warning("No answer of this conversation is in the lake.")
by_message = t.feedback.groupby("message_id", dropna=False) if not t.feedback.empty else None
shown_feedback = set()
for rec in t.interactions.itertuples():
    earlier = list(rec.prompt)[:-1]
    if earlier:
        with st.expander(f"Earlier turns ({len(earlier)})"):
            for m in earlier:
                st.markdown(f"**{m['role']}:** {m['content']}")
    last = list(rec.prompt)[-1] if len(rec.prompt) else None
    if last is not None:
        with st.chat_message("user" if last["role"] == "user" else "assistant"):
            st.markdown(last["content"])
    with st.chat_message("assistant"):
        st.markdown(rec.response)
        st.caption(f"{rec.model} · {rec.app or 'no app'} · prompt {rec.prompt_version or '—'} · "
                   f"{rec.occurred_at:%Y-%m-%d %H:%M:%S} UTC · message {rec.message_id}")
    on_it = t.feedback[(t.feedback["message_id"] == rec.message_id) | (t.feedback["chosen_message_id"] == rec.message_id)
                       | (t.feedback["rejected_message_id"] == rec.message_id)]
    if not on_it.empty:
        shown_feedback.update(on_it.index)
        st.dataframe(on_it.dropna(axis="columns", how="all"), hide_index=True, key=f"fb_{rec.message_id}")
rest = t.feedback.drop(index=list(shown_feedback))
if not rest.empty:
    st.markdown("**Feedback on the conversation**")
    st.dataframe(rest.dropna(axis="columns", how="all"), hide_index=True, key="fb_conversation")
