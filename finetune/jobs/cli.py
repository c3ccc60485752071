"""``flywheel finetune launch | status | list | stop | logs | eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from feedback.errors import FlywheelError
from feedback.cli_errors import fail as _fail

finetune_app = typer.Typer(help="Fine-tune jobs (TRL SFT/DPO + LoRA) on dataset versions, locally or on SageMaker.",
                           no_args_is_help=True)
BACKENDS = ("local", "sagemaker")


def backend_for(catalog, name: str, sagemaker: dict | None = None):
    """The backend named ``name``; SageMaker settings from the environment, with ``sagemaker`` on top."""
    if name == "local":
        from finetune.jobs.local import LocalBackend

        return LocalBackend(catalog)
    if name == "sagemaker":
        from finetune.jobs.config import SageMakerSettings
        from finetune.jobs.sagemaker import SageMakerBackend

        given = {k: v for k, v in (sagemaker or {}).items() if v is not None and k in SageMakerSettings.model_fields}
        return SageMakerBackend(catalog, SageMakerSettings(**given))
    raise typer.BadParameter(f"--backend is one of {', '.join(BACKENDS)}")


def _job_backend(catalog, job_id: str):
    from finetune.jobs import registry

    rec = registry.latest(catalog, job_id)
    return rec, backend_for(catalog, rec.backend, rec.config.get("sagemaker"))


def _print_record(rec) -> None:
    typer.echo(f"{rec.job_id}  {rec.status}  backend={rec.backend}  dataset={rec.dataset_version}  method={rec.method}")
    sm = rec.config.get("sagemaker") or {}
    if sm.get("training_job_name"):
        typer.echo(f"  SageMaker training job: {sm['training_job_name']} ({sm.get('region')}, {sm.get('instance_type')})")
    if rec.message:
        typer.echo(f"  {rec.message}")
    m = rec.metrics
    if m.get("steps") is not None:
        typer.echo(f"  steps={m['steps']} train_loss={m.get('train_loss'):.4f} seconds={m.get('seconds')} "
                   f"steps/s={m.get('steps_per_s')} peak_rss_mb={m.get('peak_rss_mb')} device={m.get('device')}")
    for k, v in sorted(rec.artifacts.items()):
        typer.echo(f"  {k}: {v}")


@finetune_app.command("launch")
def launch(dataset: str = typer.Option(..., "--dataset", help="Dataset version (`flywheel dataset list`)."),
           method: str = typer.Option(..., "--method", help="sft | dpo"),
           backend: str = typer.Option("local", "--backend", help="local | sagemaker"),
           config: Optional[Path] = typer.Option(None, "--config", help="YAML job config (finetune/jobs/config.py)."),
           base_model: Optional[str] = typer.Option(None, help="Base model alias, folder or hub id."),
           lora_r: Optional[int] = typer.Option(None), lora_alpha: Optional[int] = typer.Option(None),
           lora_dropout: Optional[float] = typer.Option(None), epochs: Optional[float] = typer.Option(None),
           max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimiser steps."),
           learning_rate: Optional[float] = typer.Option(None), max_length: Optional[int] = typer.Option(None),
           batch_size: Optional[int] = typer.Option(None), gradient_accumulation_steps: Optional[int] = typer.Option(None),
           beta: Optional[float] = typer.Option(None, help="DPO beta."), seed: Optional[int] = typer.Option(None),
           wait: bool = typer.Option(False, "--wait", help="Block until the job ends."),
           instance_type: Optional[str] = typer.Option(None, help="SageMaker instance type."),
           spot: Optional[bool] = typer.Option(None, "--spot/--no-spot", help="SageMaker managed spot training."),
           max_runtime_s: Optional[int] = typer.Option(None, help="SageMaker stopping condition (seconds)."),
           max_wait_s: Optional[int] = typer.Option(None, help="SageMaker spot: max wait + run (seconds)."),
           role_arn: Optional[str] = typer.Option(None, help="SageMaker execution role ARN."),
           s3_output: Optional[str] = typer.Option(None, help="s3://bucket/prefix for data, code and models."),
           region: Optional[str] = typer.Option(None), endpoint_url: Optional[str] = typer.Option(None),
           image_uri: Optional[str] = typer.Option(None, help="Training image (default: the HF PyTorch image).")) -> None:
    """Launch a fine-tune of a dataset version on a backend; prints the job id."""
    from feedback.lake.catalog import open_catalog
    from finetune.jobs import launch as launching
    from finetune.jobs.config import load_job_config

    try:
        job = load_job_config(config, method=method, base_model=base_model, lora_r=lora_r, lora_alpha=lora_alpha,
                              lora_dropout=lora_dropout, epochs=epochs, max_steps=max_steps,
                              learning_rate=learning_rate, max_length=max_length, batch_size=batch_size,
                              gradient_accumulation_steps=gradient_accumulation_steps, beta=beta, seed=seed)
        catalog = open_catalog()
        sm = {"instance_type": instance_type, "use_spot": spot, "max_runtime_s": max_runtime_s,
              "max_wait_s": max_wait_s, "role_arn": role_arn, "s3_output": s3_output, "region": region,
              "endpoint_url": endpoint_url, "image_uri": image_uri}
        chosen = backend_for(catalog, backend, sm)
        rec = launching.launch(catalog, chosen, dataset, job, wait=wait)
    except FlywheelError as exc:
        _fail(exc)
    _print_record(rec)
    if wait and rec.status != "Completed":
        raise typer.Exit(1)


@finetune_app.command("status")
def status(job_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """A job's current status (asked of its backend) and its status history."""
    from feedback.lake.catalog import open_catalog
    from finetune.jobs import registry

    try:
        catalog = open_catalog()
        rec, backend = _job_backend(catalog, job_id)
        rec = backend.refresh(rec)
        hist = registry.history(catalog, job_id)
    except FlywheelError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps({"job": rec.row(), "history": [(h.status, h.status_at.isoformat(), h.message)
                                                              for h in hist]}, default=str))
        return
    _print_record(rec)
    for h in hist:
        typer.echo(f"  {h.status_at.isoformat(timespec='seconds')}  {h.status}" + (f"  {h.message}" if h.message else ""))


@finetune_app.command("list")
def list_jobs() -> None:
    """Every job, newest first, with its current status."""
    from feedback.lake.catalog import open_catalog
    from feedback.report import format_table
    from finetune.jobs import registry

    rows = [(r.job_id, r.backend, r.method, r.dataset_version, r.status, r.status_at.isoformat(timespec="seconds"),
             r.metrics.get("steps", ""), r.metrics.get("train_loss", ""))
            for r in registry.jobs(open_catalog())]
    typer.echo(format_table(["job", "backend", "method", "dataset", "status", "since", "steps", "train_loss"], rows))


@finetune_app.command("stop")
def stop(job_id: str) -> None:
    """Stop a running job."""
    from feedback.lake.catalog import open_catalog

    try:
        catalog = open_catalog()
        rec, backend = _job_backend(catalog, job_id)
        rec = backend.stop(rec)
    except FlywheelError as exc:
        _fail(exc)
    _print_record(rec)


@finetune_app.command("logs")
def logs(job_id: str, tail: int = typer.Option(0, help="Only the last N lines (0: all).")) -> None:
    """The training script's output."""
    from feedback.lake.catalog import open_catalog

    try:
        catalog = open_catalog()
        rec, backend = _job_backend(catalog, job_id)
        lines = list(backend.logs(rec))
    except FlywheelError as exc:
        _fail(exc)
    for line in lines[-tail:] if tail else lines:
        typer.echo(line)


@finetune_app.command("eval")
def evaluate(job_id: str, reward_model: Optional[str] = typer.Option(None, "--reward-model",
                                                                      help="Reward model id for the win rate."),
             split: str = typer.Option("test"), limit: Optional[int] = typer.Option(None, help="Held-out rows scored."),
             win_prompts: int = typer.Option(100, help="Prompts both models answer for the win rate."),
             max_new_tokens: int = typer.Option(128), batch_size: int = typer.Option(16)) -> None:
    """Base vs tuned on the held-out split: loss/perplexity, preference accuracy, reward-model win rate."""
    from feedback.lake.catalog import open_catalog
    from finetune import evaluate as ev

    try:
        result = ev.evaluate(open_catalog(), job_id, reward_id=reward_model, split=split, limit=limit,
                             win_prompts=win_prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    except FlywheelError as exc:
        _fail(exc)
    typer.echo(f"{result.eval_id}: {job_id} on {result.dataset_version} [{split}]")
    for r in result.rows:
        ci = f"[{r.ci_low:.4f}, {r.ci_high:.4f}]" if r.ci_low is not None else "[n/a]"
        typer.echo(f"  {r.metric:20s} {r.model:11s} {r.value:9.4f} {ci:22s} n={r.n}")
    typer.echo(f"  seconds: {result.seconds}")
