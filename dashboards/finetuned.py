"""The Models page's "Fine-tuned models" section: each evaluated fine-tune, base vs tuned.

Reads the lake tables ``finetune_evals`` (:mod:`finetune.evaluate`) and ``finetune_jobs``
(:mod:`finetune.jobs.registry`) with pyiceberg; cached for ``ttl_s`` seconds, since these tables
change only when a job or an evaluation is recorded.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import charts

TTL_S = 10
LOWER_IS_BETTER = {"heldout_loss", "perplexity"}
TITLES = {"heldout_loss": "Held-out loss (nats/token)", "perplexity": "Perplexity",
          "preference_accuracy": "Preference accuracy", "preference_accuracy_per_token": "Preference accuracy (per token)",
          "implicit_reward_accuracy": "DPO implicit reward accuracy (vs 50%)", "reward_win_rate": "Reward-model win rate (tuned vs base)",
          "mean_reward": "Mean reward-model score"}


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _evaluations(_catalog, key: str) -> pd.DataFrame:
    from finetune.evaluate import evaluations

    return evaluations(_catalog)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _jobs(_catalog, key: str) -> pd.DataFrame:
    from finetune.jobs import registry

    return pd.DataFrame([{"job_id": r.job_id, "backend": r.backend, "method": r.method, "dataset": r.dataset_version,
                          "status": r.status, "since": r.status_at, "steps": r.metrics.get("steps"),
                          "train_loss": r.metrics.get("train_loss"), "steps_per_s": r.metrics.get("steps_per_s"),
                          "device": r.metrics.get("device"),
                          "loss_curve": [h["loss"] for h in r.metrics.get("log_history", []) if "loss" in h]}
                         for r in registry.jobs(_catalog)])


def verdict(metric: str, diff: pd.Series) -> str:
    """"better" / "worse" when the tuned − base interval excludes 0 (direction per metric), else "no clear difference"."""
    low, high = diff["ci_low"], diff["ci_high"]
    if pd.isna(low) or pd.isna(high) or low <= 0 <= high:
        return "no clear difference"
    up = low > 0
    return "tuned better" if up != (metric in LOWER_IS_BETTER) else "tuned worse"


def comparison_table(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per metric: base, tuned and tuned − base, each ``value [low, high]``, n and the verdict.
    The win rate has no base row (0.5 by definition) and compares tuned against 0.5."""
    rows = []
    for metric in [m for m in TITLES if m in set(evals["metric"])]:
        part = evals[evals["metric"] == metric].set_index("model")
        cell = lambda m: (f"{part.at[m, 'value']:.4f} [{part.at[m, 'ci_low']:.4f}, {part.at[m, 'ci_high']:.4f}]"  # noqa: E731
                          if m in part.index and pd.notna(part.at[m, "ci_low"]) else "—")
        if metric in ("reward_win_rate", "implicit_reward_accuracy"):  # tuned against 0.5, no base row
            t = part.loc["tuned"]
            judged = "tuned better" if t["ci_low"] > 0.5 else "tuned worse" if t["ci_high"] < 0.5 else "no clear difference"
            rows.append({"metric": TITLES[metric], "base": "0.5 (by definition)", "tuned": cell("tuned"),
                         "tuned − base": f"{t['value'] - 0.5:+.4f}", "n": int(t["n"]), "verdict": judged})
            continue
        paired = "tuned-base" in part.index  # perplexity has none: its verdict is the held-out loss's
        rows.append({"metric": TITLES[metric], "base": cell("base"), "tuned": cell("tuned"),
                     "tuned − base": cell("tuned-base"), "n": int(part.at["tuned", "n"]),
                     "verdict": verdict(metric, part.loc["tuned-base"]) if paired else "as held-out loss"})
    return pd.DataFrame(rows)


def render(catalog, key: str) -> None:
    """Draw the section (``key``: anything that changes when the lake does, for the cache)."""
    st.subheader("Fine-tuned models: base vs tuned")
    evals = _evaluations(catalog, key)
    jobs = _jobs(catalog, key)
    if evals.empty:
        st.info("No evaluated fine-tune yet: `flywheel finetune launch`, then `flywheel finetune eval <job>`.")
        if not jobs.empty:
            st.dataframe(jobs.drop(columns="loss_curve"), hide_index=True, key="ft_jobs")
        return
    latest = evals.sort_values("created_at", ascending=False).drop_duplicates("job_id")
    labels = {r.eval_id: f"{r.job_id} · {r.dataset_version} · {r.split} · {r.created_at:%Y-%m-%d %H:%M}"
              for r in latest.itertuples()}
    wanted = st.query_params.get("eval")
    ids = list(labels)
    chosen = st.selectbox("Evaluation", ids, index=ids.index(wanted) if wanted in ids else 0,
                          format_func=labels.get, key="ft_eval")
    one = evals[evals["eval_id"] == chosen]
    job_id = one["job_id"].iloc[0]
    st.caption("95% intervals; tuned − base is paired over the same held-out examples. Preference accuracy: the "
               "model gives the chosen answer a higher summed log-likelihood than the rejected one. Win rate: a "
               "reward model trained on our own preference pairs judges tuned vs base answers (ties left out).")
    st.dataframe(comparison_table(one), hide_index=True, key="ft_table")
    plot = one[one["model"].isin(["base", "tuned"]) & one["metric"].isin(["preference_accuracy", "heldout_loss"])]
    for metric, part in plot.groupby("metric"):
        st.altair_chart(charts.intervals(part, "model", TITLES[metric], "fraction" if "accuracy" in metric else "nats"),
                        key=f"ft_chart_{metric}")
    job = jobs[jobs["job_id"] == job_id]
    if not job.empty:
        j = job.iloc[0]
        st.caption(f"Job {job_id}: {j['backend']} {j['method']} on {j['dataset']}, {j['status']}, "
                   f"{j['steps']} steps, {j['steps_per_s']} steps/s on {j['device']}")
        if j["loss_curve"]:
            st.line_chart(pd.DataFrame({"training loss": j["loss_curve"]}), height=180)
