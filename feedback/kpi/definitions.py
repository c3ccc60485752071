"""Every KPI, in one place: a name, a version, a description, a unit and its DuckDB SQL.

Additive KPIs are formulas over the materialised tables ``kpi_interactions`` / ``kpi_feedback``
(see ``sql/``), so a query sums the stored statistics over windows and dimensions, then derives the
value and its 95 % interval (:mod:`feedback.kpi.stats`). Percentile KPIs are not additive and are
computed from the ``interactions`` lake table at query time.

Kinds: ``count``/``sum`` (no interval), ``proportion`` (Wilson), ``mean`` (t interval),
``ratio`` (no interval), ``percentile`` (no interval).
"""

from __future__ import annotations

from dataclasses import dataclass

INTERACTION_DIMS = ("project", "app", "model", "prompt_version")
FEEDBACK_DIMS = INTERACTION_DIMS + ("feedback_source",)


@dataclass(frozen=True)
class KpiDefinition:
    """One KPI. ``exprs`` are SQL aggregates over ``table``; their meaning depends on ``kind``:
    proportion → (successes, trials); mean → (n, sum, sum of squares); ratio → (numerator,
    denominator); count/sum → (total,); percentile → (column, quantile)."""

    name: str
    version: int
    kind: str
    unit: str
    table: str
    exprs: tuple[str, ...]
    description: str

    @property
    def dimensions(self) -> tuple[str, ...]:
        return FEEDBACK_DIMS if self.table == "kpi_feedback" else INTERACTION_DIMS


def _p(name, successes, trials, table, description, unit="share"):
    return KpiDefinition(name, 1, "proportion", unit, table, (successes, trials), description)


KPIS: dict[str, KpiDefinition] = {k.name: k for k in [
    KpiDefinition("interactions", 1, "count", "interactions", "kpi_interactions", ("sum(interactions)",),
                  "Model responses logged."),
    KpiDefinition("conversations", 1, "count", "conversations", "kpi_interactions", ("sum(conversations)",),
                  "Distinct conversations with a response in the window (summed over windows and dimensions)."),
    KpiDefinition("users", 1, "count", "users", "kpi_interactions", ("sum(users)",),
                  "Distinct pseudonymous users in the window (summed over windows and dimensions)."),
    _p("error_rate", "sum(errors)", "sum(interactions)", "kpi_interactions", "Share of responses with status error."),
    _p("feedback_coverage", "sum(with_feedback)", "sum(interactions)", "kpi_interactions",
       "Share of responses with any feedback (thumb, rating, comment, correction, category or preference)."),
    _p("thumb_coverage", "sum(with_thumb)", "sum(interactions)", "kpi_interactions", "Share of responses with a thumb."),
    _p("rating_coverage", "sum(with_rating)", "sum(interactions)", "kpi_interactions", "Share of responses with a rating."),
    _p("comment_coverage", "sum(with_comment)", "sum(interactions)", "kpi_interactions", "Share of responses with a comment."),
    _p("correction_coverage", "sum(with_correction)", "sum(interactions)", "kpi_interactions",
       "Share of responses a user corrected."),
    _p("preference_coverage", "sum(with_preference)", "sum(interactions)", "kpi_interactions",
       "Share of responses compared in a preference."),
    _p("positive_rate", "sum(positive_answers)", "sum(interactions)", "kpi_interactions",
       "Share of responses positively rated (a thumbs-up or a satisfaction rating >= threshold, and no thumbs-down)."),
    _p("thumbs_up_rate", "sum(thumbs_up)", "sum(thumbs_up + thumbs_down)", "kpi_feedback", "Thumbs up / all thumbs."),
    KpiDefinition("mean_rating", 1, "mean", "0-1 score", "kpi_feedback", ("sum(rating_n)", "sum(rating_sum)", "sum(rating_sumsq)"),
                  "Mean satisfaction rating, each normalised to 0-1 by its own scale (criteria: KPI settings)."),
    _p("negative_comment_share", "sum(negative_comments)", "sum(comments)", "kpi_feedback",
       "Share of free-text comments whose sentiment is negative (VADER compound <= -0.05 by default)."),
    _p("win_rate", "sum(pref_wins)", "sum(pref_wins + pref_losses)", "kpi_feedback",
       "Pairwise preferences won / (won + lost) against another model or prompt version; ties counted apart."),
    KpiDefinition("preference_ties", 1, "count", "pairs", "kpi_feedback", ("sum(pref_ties)",), "Preference pairs judged a tie."),
    KpiDefinition("tokens_in", 1, "sum", "tokens", "kpi_interactions", ("sum(tokens_in)",), "Prompt tokens."),
    KpiDefinition("tokens_out", 1, "sum", "tokens", "kpi_interactions", ("sum(tokens_out)",), "Response tokens."),
    KpiDefinition("cost_usd", 1, "sum", "USD", "kpi_interactions", ("sum(cost_usd)",),
                  "Cost: the event's own, else tokens x the configured price table."),
    KpiDefinition("cost_per_positive_answer_usd", 1, "ratio", "USD", "kpi_interactions",
                  ("sum(cost_usd)", "sum(positive_answers)"), "All cost / positively rated responses."),
    KpiDefinition("mean_latency_ms", 1, "ratio", "ms", "kpi_interactions", ("sum(latency_ms_sum)", "sum(latency_n)"),
                  "Mean response latency over responses that report one."),
    KpiDefinition("latency_p50_ms", 1, "percentile", "ms", "interactions", ("latency_ms", "0.5"), "Median latency."),
    KpiDefinition("latency_p95_ms", 1, "percentile", "ms", "interactions", ("latency_ms", "0.95"), "95th percentile latency."),
    KpiDefinition("latency_p99_ms", 1, "percentile", "ms", "interactions", ("latency_ms", "0.99"), "99th percentile latency."),
    KpiDefinition("ttft_p50_ms", 1, "percentile", "ms", "interactions", ("time_to_first_token_ms", "0.5"),
                  "Median time to first token."),
    KpiDefinition("ttft_p95_ms", 1, "percentile", "ms", "interactions", ("time_to_first_token_ms", "0.95"),
                  "95th percentile time to first token."),
]}
