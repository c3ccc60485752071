"""One full local fine-tune on the real data, and its base-vs-tuned evaluation.

Two parts, so the training can run on a GPU machine that has torch/transformers/TRL but not the lake:

1. ``--train``: runs Flywheel's training script (``finetune/entrypoint/train.py``, the one the local
   and SageMaker backends run) on a dataset version's ``data/train.parquet`` with the given flags,
   then measures base and tuned on ``data/test.parquet`` with :func:`finetune.likelihood.measure`
   (summed log-likelihoods of chosen and rejected answers; greedy answers to the first
   ``--answer-prompts`` test prompts). Writes ``metrics.json`` (the script's: loss curve, steps/s,
   seconds, peak memory) and ``measured.json`` to ``--out``.
2. ``--summarise DIR``: on a machine with the lake, scores both models' answers with a reward model
   (``--reward-model``, :mod:`finetune.reward`), computes every metric with its 95 % interval with
   :func:`finetune.evaluate.summarise` (the code ``flywheel finetune eval`` uses), prints them and
   writes ``bench/results/finetune_full_run.json``.

    python bench/finetune_full_run.py --train --data <dataset folder> --model <base folder> --out run/ -- --method dpo ...
    python bench/finetune_full_run.py --summarise run/ --reward-model rm-...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_and_measure(data: Path, model: Path, out: Path, answer_prompts: int, max_new_tokens: int,
                      batch_size: int, flags: list[str], limit: int | None = None,
                      reward_encoder: Path | None = None) -> None:
    from finetune import evaluate

    out.mkdir(parents=True, exist_ok=True)
    channel = out / "train_channel"
    channel.mkdir(exist_ok=True)
    link = channel / "train.parquet"
    if not link.exists():
        link.symlink_to((data / "data" / "train.parquet").resolve())
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "finetune" / "entrypoint" / "train.py"), "--model_name_or_path",
                    str(model), "--train_dir", str(channel), "--model_dir", str(out / "model"), *flags], check=True,
                   env=os.environ | {"PYTHONUNBUFFERED": "1"})
    train_wall_s = time.perf_counter() - started
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    metrics["wall_s_including_load"] = round(train_wall_s, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    started = time.perf_counter()
    measured = evaluate.measure_held_out(str(model), str(out / "model" / "merged"), data, "test", limit, answer_prompts,
                                         max_new_tokens, int(metrics["hyperparameters"]["max_length"]), batch_size)
    measured["measure_s"] = round(time.perf_counter() - started, 1)
    (out / "measured.json").write_text(json.dumps(measured))
    if reward_encoder:
        reward_on_answers(data, reward_encoder, out, measured)
    print(json.dumps({"train_s": metrics["seconds"], "steps": metrics["steps"], "steps_per_s": metrics["steps_per_s"],
                      "peak_gpu_mb": metrics.get("peak_gpu_mb"), "measure_s": measured["measure_s"]}), flush=True)


def reward_on_answers(data: Path, encoder: Path, out: Path, measured: dict) -> None:
    """Train a reward model on the same dataset's train split (:func:`finetune.reward.train_version`,
    default RewardConfig) and score both models' answers with it; writes ``rewards.json``."""
    from finetune import evaluate
    from finetune.reward import RewardModel, train_version

    row = train_version({"version": data.name, "format": "preference", "path": str(data)}, root=out / "reward",
                        encoder=str(encoder))
    model = RewardModel.load(row["path"])
    scores = evaluate.reward_scores(model, measured)
    meta = model.meta
    (out / "rewards.json").write_text(json.dumps({"reward_model": meta, **{m: s.tolist() for m, s in scores.items()}},
                                                 default=str))
    print(json.dumps({"reward_test": meta["test"], "reward_seconds": meta["seconds"]}), flush=True)


def summarise(run: Path, reward_model: str | None, max_new_tokens: int) -> None:
    from feedback.lake.catalog import open_catalog
    from finetune import evaluate

    metrics = json.loads((run / "metrics.json").read_text())
    measured = json.loads((run / "measured.json").read_text())
    rewards, reward_meta = None, None
    if (run / "rewards.json").exists() and not reward_model:
        saved = json.loads((run / "rewards.json").read_text())
        rewards, reward_meta = {m: saved[m] for m in ("base", "tuned")}, saved["reward_model"]
    if reward_model:
        from finetune.reward import RewardModel

        rewards = evaluate.reward_scores(RewardModel.load(reward_model, catalog=open_catalog()), measured)
    rows = evaluate.summarise(measured, rewards, max_new_tokens)
    for r in rows:
        ci = f"[{r.ci_low:.4f}, {r.ci_high:.4f}]" if r.ci_low is not None else ""
        print(f"{r.metric:20s} {r.model:11s} {r.value:9.4f} {ci:22s} n={r.n} {r.details or ''}")
    losses = [h["loss"] for h in metrics["log_history"] if "loss" in h]
    result = {"training": {k: metrics.get(k) for k in ("method", "rows", "steps", "train_loss", "seconds", "steps_per_s",
                                                       "device", "bf16", "peak_rss_mb", "peak_gpu_mb",
                                                       "wall_s_including_load", "hyperparameters", "versions")},
              "loss_curve": {"first": losses[:5], "last": losses[-5:], "points": len(losses)},
              "measure_seconds": {m: measured[m]["seconds"] for m in ("base", "tuned")},
              "reward_model": reward_model or reward_meta, "rows": [r.__dict__ for r in rows]}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "finetune_full_run.json").write_text(json.dumps(result, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--answer-prompts", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, help="score only the first N test rows")
    parser.add_argument("--reward-encoder", type=Path, help="train a reward model from this encoder and score answers")
    parser.add_argument("--summarise", type=Path)
    parser.add_argument("--reward-model")
    opts, flags = parser.parse_known_args()
    flags = [f for f in flags if f != "--"]
    if opts.train:
        train_and_measure(opts.data, opts.model, opts.out, opts.answer_prompts, opts.max_new_tokens, opts.batch_size,
                          flags, opts.limit, opts.reward_encoder)
    elif opts.summarise:
        summarise(opts.summarise, opts.reward_model, opts.max_new_tokens)
    else:
        parser.error("--train or --summarise")


if __name__ == "__main__":
    main()
