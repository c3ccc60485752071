"""Feedback: thumbs and rating distributions, free-text comments with sentiment (searchable,
filterable by the author's rating), and the terms that stand out in complaints."""

import streamlit as st

from dashboards import charts, queries
from dashboards.ui import cached, page_context, sentiment_scorer
from feedback.kpi.sentiment import NEGATIVE_THRESHOLD

ctx = page_context()
f = ctx.filters
st.title("Feedback")
st.caption(f"{f.describe()} · feedback is counted with the answer it is about")

left, right = st.columns(2)
thumbs = cached(ctx, "thumbs", lambda: queries.thumbs(ctx.lake, f, ctx.kpi))
with left:
    if thumbs.empty:
        st.info("No thumbs in this range.")
    else:
        st.altair_chart(charts.stacked(thumbs, "model", "count", "thumb", "Thumbs by model"), key="chart_thumbs")
ratings = cached(ctx, "ratings", lambda: queries.rating_distribution(ctx.lake, f))
with right:
    if ratings.empty:
        st.info("No ratings in this range.")
    else:
        st.altair_chart(charts.distribution(ratings, "Ratings by value"), key="chart_ratings")

st.subheader("Comments")
c1, c2, c3 = st.columns([3, 2, 1])
search = c1.text_input("Search comments", key="comment_search", placeholder="a word or phrase")
lo, hi = c2.slider("Author's rating of the answer (0–1)", 0.0, 1.0, (0.0, 1.0), step=0.05, key="comment_rating")
unrated = c3.checkbox("Include unrated", value=True, key="comment_unrated")
frame, total = cached(ctx, "comments", lambda: queries.comments(ctx.lake, f, search, lo, hi, unrated, ctx.settings.page_rows),
                      search, lo, hi, unrated, ctx.settings.page_rows)
scorer = sentiment_scorer(ctx.kpi.sentiment_scorer)
frame.insert(0, "sentiment", scorer.score(frame["comment"].fillna("").tolist()) if len(frame) else [])
st.caption(f"{total:,} comments match; the newest {len(frame):,} shown. Sentiment: {scorer.name} compound score "
           f"(−1 to 1; negative at or below {NEGATIVE_THRESHOLD}).")
st.dataframe(frame, hide_index=True, key="comments_table", column_config={
    "sentiment": st.column_config.ProgressColumn("sentiment", min_value=-1.0, max_value=1.0, format="%.2f"),
    "author_rating": st.column_config.NumberColumn("author rating", format="%.2f"),
    "comment": st.column_config.TextColumn("comment", width="large")})

st.subheader("Most frequent complaint terms")
terms = cached(ctx, "terms", lambda: queries.complaint_terms(ctx.lake, f, ctx.kpi, ctx.settings.complaint_terms))
st.caption(f"Complaints: comments whose author rated the answer below {ctx.kpi.positive_rating_threshold:g} (0–1), "
           "or comments on an answer with a thumbs-down. Terms occurring more often in complaints than in all "
           "comments (lift ≥ 1.2), counted once per comment.")
if terms.empty:
    st.info("No complaints in this range.")
else:
    st.altair_chart(charts.terms(terms, "Complaint terms"), key="chart_terms")
