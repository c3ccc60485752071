"""``flywheel finetune eval <job>``: is the tuned model better than its base on what our users asked?

On the dataset version's held-out split (``test`` by default; never trained on), for the base model
and the job's tuned (merged) model:

* **held-out loss** — mean over examples of the per-token negative log-likelihood of the preferred
  answer (the ``chosen`` response; for SFT data the last assistant turn), nats/token, Student-t 95 %
  interval (:func:`feedback.kpi.stats.mean`); **perplexity** = exp(held-out loss), interval
  exp(bounds) (exp is monotone);
* **preference accuracy** (pairs only) — share of pairs where the model gives the chosen response a
  higher summed log-likelihood than the rejected one (ties count as misses), Wilson 95 % interval
  (:func:`feedback.kpi.stats.proportion`);
* **preference accuracy per token** (pairs only) — the same with each answer's log-likelihood divided
  by its token count (length-normalised, as ``acc_norm``-style multiple-choice scoring does), since
  summed log-likelihoods favour the shorter answer whatever its quality;
* **implicit reward accuracy** (pairs only, tuned) — DPO's own held-out measure (Rafailov et al.
  2023, "Direct Preference Optimization", NeurIPS, eq. 5 up to β): share of pairs where
  ``[log π_tuned(chosen) − log π_base(chosen)] − [log π_tuned(rejected) − log π_base(rejected)] > 0``,
  Wilson 95 % interval (50 % is no preference learnt);
* **reward-model win rate** (with ``reward_id``) — both models answer the first ``win_prompts``
  held-out prompts greedily; the reward model (:mod:`finetune.reward`) scores both answers; the
  tuned model's win rate is wins / (wins + losses), ties (equal scores, e.g. identical answers)
  left out and counted, Wilson 95 % interval. The base's win rate against itself is 0.5 by
  definition; "better" means the interval lies above 0.5.

Tuned − base differences are paired (the same examples): the mean of per-example differences with a
Student-t interval (for accuracy the per-pair difference is −1, 0 or 1).

Every value is stored in the lake table ``finetune_evals`` (one row per metric and model: ``base``,
``tuned``, ``tuned-base``) with its interval, n and method, so the dashboard and any engine read them.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from feedback.kpi import stats
from finetune import basemodel, likelihood
from finetune.errors import DatasetError, EvalError
from finetune.heldout import held_out

if TYPE_CHECKING:  # the lake is imported where it is used, so measuring runs where it is not installed
    from pyiceberg.catalog import Catalog

    from feedback.config import LakeSettings
    from finetune.jobs.registry import JobRecord

TABLE = "finetune_evals"
SCHEMA = pa.schema([
    pa.field("eval_id", pa.string()), pa.field("job_id", pa.string()), pa.field("dataset_version", pa.string()),
    pa.field("split", pa.string()), pa.field("reward_id", pa.string()), pa.field("created_at", pa.timestamp("us", tz="UTC")),
    pa.field("metric", pa.string()), pa.field("model", pa.string()), pa.field("value", pa.float64()),
    pa.field("ci_low", pa.float64()), pa.field("ci_high", pa.float64()), pa.field("n", pa.int64()),
    pa.field("method", pa.string()), pa.field("details_json", pa.string()),
])
T_METHOD = "mean with Student-t 95% interval"
WILSON = "proportion with Wilson 95% interval"
PAIRED = "paired difference (tuned - base): mean of per-example differences, Student-t 95% interval"


@dataclass
class Row:
    """One stored value: ``metric`` of ``model`` (base | tuned | tuned-base) with its interval."""

    metric: str
    model: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    method: str
    details: dict = field(default_factory=dict)


@dataclass
class EvalResult:
    """An evaluation: its id, what it read, the rows stored, and seconds taken per phase."""

    eval_id: str
    job_id: str
    dataset_version: str
    split: str
    reward_id: str | None
    rows: list[Row]
    seconds: dict[str, float]

    def value(self, metric: str, model: str) -> Row:
        """The row of ``metric`` for ``model``. Raises KeyError when absent."""
        for r in self.rows:
            if r.metric == metric and r.model == model:
                return r
        raise KeyError((metric, model))


def _estimate_row(metric: str, model: str, est: stats.Estimate, method: str, **details) -> Row:
    return Row(metric, model, est.value, est.ci_low, est.ci_high, est.n, method, details)


def _mean(values: np.ndarray) -> stats.Estimate:
    v = np.asarray(values, dtype=float)
    return stats.mean(len(v), float(v.sum()), float((v * v).sum()))


def tuned_model_path(rec: JobRecord) -> str:
    """The job's merged model folder. Raises EvalError when the job has not completed or has no
    local merged model (a SageMaker job's ``model.tar.gz`` must be downloaded and unpacked first)."""
    if rec.status != "Completed":
        raise EvalError(f"{rec.job_id} is {rec.status}, not Completed")
    merged = rec.artifacts.get("merged")
    if not merged or not Path(merged, "config.json").exists():
        raise EvalError(f"{rec.job_id} has no local merged model (artifacts: {sorted(rec.artifacts)})")
    return merged


def summarise(measured: dict, rewards: dict[str, np.ndarray] | None = None, max_new_tokens: int | None = None
              ) -> list[Row]:
    """The stored rows from :func:`finetune.likelihood.measure`'s output (``base`` and ``tuned``) and,
    optionally, the reward model's scores of each model's answers (``{"base": (k,), "tuned": (k,)}``)."""
    def arr(model: str, key: str) -> np.ndarray:
        return np.asarray(measured[model][key], dtype=float)

    rows: list[Row] = []
    nll = {m: -arr(m, "chosen_logp") / np.maximum(arr(m, "chosen_tokens"), 1) for m in ("base", "tuned")}
    for m in ("base", "tuned"):
        est = _mean(nll[m])
        rows.append(_estimate_row("heldout_loss", m, est, T_METHOD, unit="nats/token"))
        rows.append(Row("perplexity", m, math.exp(est.value), math.exp(est.ci_low), math.exp(est.ci_high), est.n,
                        "exp(held-out loss), interval exp(bounds)"))
    rows.append(_estimate_row("heldout_loss", "tuned-base", _mean(nll["tuned"] - nll["base"]), PAIRED,
                              unit="nats/token"))
    if measured["base"].get("rejected_logp") is not None:
        right = {m: arr(m, "chosen_logp") > arr(m, "rejected_logp") for m in ("base", "tuned")}
        for m in ("base", "tuned"):
            rows.append(_estimate_row("preference_accuracy", m,
                                      stats.proportion(int(right[m].sum()), len(right[m])), WILSON))
        rows.append(_estimate_row("preference_accuracy", "tuned-base",
                                  _mean(right["tuned"].astype(float) - right["base"].astype(float)), PAIRED))
        norm = {m: arr(m, "chosen_logp") / np.maximum(arr(m, "chosen_tokens"), 1)
                > arr(m, "rejected_logp") / np.maximum(arr(m, "rejected_tokens"), 1) for m in ("base", "tuned")}
        for m in ("base", "tuned"):
            rows.append(_estimate_row("preference_accuracy_per_token", m,
                                      stats.proportion(int(norm[m].sum()), len(norm[m])), WILSON))
        rows.append(_estimate_row("preference_accuracy_per_token", "tuned-base",
                                  _mean(norm["tuned"].astype(float) - norm["base"].astype(float)), PAIRED))
        shift = ((arr("tuned", "chosen_logp") - arr("base", "chosen_logp"))
                 - (arr("tuned", "rejected_logp") - arr("base", "rejected_logp")))
        rows.append(_estimate_row("implicit_reward_accuracy", "tuned", stats.proportion(int((shift > 0).sum()), len(shift)),
                                  WILSON + "; DPO's implicit reward: tuned/base log-ratio of chosen > of rejected",
                                  mean_margin_nats=float(shift.mean())))
    if rewards is not None:
        r_base, r_tuned = np.asarray(rewards["base"], float), np.asarray(rewards["tuned"], float)
        wins, losses = int((r_tuned > r_base).sum()), int((r_tuned < r_base).sum())
        rows.append(_estimate_row("reward_win_rate", "tuned", stats.proportion(wins, wins + losses),
                                  WILSON + " over decided prompts (ties left out)", wins=wins, losses=losses,
                                  ties=len(r_base) - wins - losses, max_new_tokens=max_new_tokens))
        for m, r in (("base", r_base), ("tuned", r_tuned)):
            rows.append(_estimate_row("mean_reward", m, _mean(r), T_METHOD, unit="reward-model score"))
        rows.append(_estimate_row("mean_reward", "tuned-base", _mean(r_tuned - r_base), PAIRED))
    return rows


def reward_scores(reward, measured: dict) -> dict[str, np.ndarray]:
    """The reward model's score of each model's answers to the same prompts: ``{"base", "tuned"}`` → (k,)."""
    prompts = measured["prompts"][: len(measured["base"]["answers"])]
    return {m: reward.score(prompts, measured[m]["answers"]) for m in ("base", "tuned")}


def measure_held_out(base: str, tuned: str, folder: Path, split: str = "test", limit: int | None = None,
                     answer_prompts: int = 0, max_new_tokens: int = 128, max_length: int = 512,
                     batch_size: int = 16) -> dict:
    """:func:`finetune.likelihood.measure` of the models at ``base`` and ``tuned`` on the dataset folder's
    held-out ``split`` (pairs where every row has a rejected answer), with ``"prompts"`` added — what
    :func:`summarise` and :func:`reward_scores` take. Needs no lake (it also runs on a bare GPU machine)."""
    data = held_out(folder, split, limit)
    prompts = list(data["prompt"])
    rejected = list(data["rejected"]) if data["rejected"].notna().all() else None
    measured = likelihood.measure({"base": base, "tuned": tuned}, prompts, list(data["chosen"]), rejected,
                                  answer_prompts, max_new_tokens, max_length, batch_size)
    measured["prompts"] = prompts
    return measured


def evaluate(catalog: Catalog, job_id: str, reward_id: str | None = None, split: str = "test",
             limit: int | None = None, win_prompts: int = 100, max_new_tokens: int = 128,
             max_length: int | None = None, batch_size: int = 16, lake: LakeSettings | None = None) -> EvalResult:
    """Evaluate base vs tuned for ``job_id`` (see module doc), store and return the rows.

    ``limit`` caps the held-out examples scored (None: all); ``win_prompts`` how many of them both
    models answer for the reward-model win rate (generation is the slow part); ``max_length``
    defaults to the job's. Raises EvalError (job not completed, split missing) or RewardError."""
    from finetune import registry as datasets
    from finetune.jobs import registry

    rec = registry.latest(catalog, job_id, lake)
    tuned_path = tuned_model_path(rec)
    try:
        folder = Path(datasets.get(catalog, rec.dataset_version, lake)["path"])
    except DatasetError as exc:
        raise EvalError(str(exc)) from exc
    reward = None
    if reward_id:
        from finetune.reward import RewardModel

        reward = RewardModel.load(reward_id, catalog=catalog)
    measured = measure_held_out(basemodel.resolve(rec.base_model), tuned_path, folder, split, limit,
                                win_prompts if reward else 0, max_new_tokens,
                                max_length or int(rec.config.get("max_length", 512)), batch_size)
    seconds = {f"{k}_{m}": v for m in ("base", "tuned") for k, v in measured[m]["seconds"].items()}
    rewards = None
    if reward is not None:
        started = time.perf_counter()
        rewards = reward_scores(reward, measured)
        seconds["reward"] = round(time.perf_counter() - started, 2)
    rows = summarise(measured, rewards, max_new_tokens)
    result = EvalResult(f"ev-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}", job_id, rec.dataset_version,
                        split, reward_id, rows, seconds)
    store(catalog, result, lake)
    return result


def store(catalog: Catalog, result: EvalResult, lake: LakeSettings | None = None) -> None:
    """Append ``result``'s rows to ``finetune_evals`` (one commit)."""
    from feedback.config import LakeSettings
    from feedback.lake.catalog import create_table

    now = datetime.now(UTC)
    rows = [{"eval_id": result.eval_id, "job_id": result.job_id, "dataset_version": result.dataset_version,
             "split": result.split, "reward_id": result.reward_id, "created_at": now, "metric": r.metric,
             "model": r.model, "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n, "method": r.method,
             "details_json": json.dumps({**r.details, "seconds": result.seconds}, sort_keys=True)} for r in result.rows]
    create_table(catalog, lake or LakeSettings(), TABLE, SCHEMA).append(pa.Table.from_pylist(rows, schema=SCHEMA))


def evaluations(catalog: Catalog, job_id: str | None = None, lake: LakeSettings | None = None) -> pd.DataFrame:
    """Stored evaluation rows (all, or one job's), newest first; empty frame with the columns when none."""
    from pyiceberg.expressions import EqualTo

    from feedback.config import LakeSettings
    from feedback.lake.catalog import read_table

    row_filter = EqualTo("job_id", job_id) if job_id is not None else None
    frame = read_table(catalog, lake or LakeSettings(), TABLE, SCHEMA, row_filter).to_pandas()
    return frame.sort_values(["created_at", "metric", "model"], ascending=[False, True, True]).reset_index(drop=True)

