"""``flywheel reward train | list``: reward models trained from our own preference pairs.

Registered in ``feedback/cli.py`` as ``app.add_typer(reward_app, name="reward")``.
"""

from __future__ import annotations

import typer

from feedback.errors import FlywheelError
from feedback.cli_errors import fail as _fail

reward_app = typer.Typer(help="Reward models (MiniLM, Bradley–Terry) trained on curated preference pairs.",
                         no_args_is_help=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


@reward_app.command("train")
def reward_train(dataset: str = typer.Option(..., "--dataset", help="A preference dataset version."),
                 epochs: float | None = typer.Option(None, help="Passes over the train split (default 1)."),
                 max_steps: int | None = typer.Option(None, help="Stop after this many steps (> 0)."),
                 learning_rate: float | None = typer.Option(None, help="AdamW learning rate (default 1e-4)."),
                 batch_size: int | None = typer.Option(None, help="Pairs per step (default 16)."),
                 max_length: int | None = typer.Option(None, help="Tokens per sequence, ≤ 256 (default 256)."),
                 seed: int | None = typer.Option(None, help="Head initialisation and data order (default 42).")) -> None:
    """Fine-tune MiniLM on a version's train split; report held-out accuracy; register it in the lake."""
    from pydantic import ValidationError

    from feedback.lake.catalog import open_catalog
    from finetune import reward
    from finetune.errors import RewardError

    values = {"epochs": epochs, "max_steps": max_steps, "learning_rate": learning_rate, "batch_size": batch_size,
              "max_length": max_length, "seed": seed}
    try:
        try:
            config = reward.RewardConfig(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise RewardError(f"invalid reward config: {exc}") from exc
        row = reward.train(open_catalog(), dataset, config)
    except FlywheelError as exc:
        _fail(exc)
    typer.echo(f"test accuracy {_pct(row['test_accuracy'])} (95% CI {_pct(row['test_ci_low'])}–"
               f"{_pct(row['test_ci_high'])}, n={row['test_n']:,} pairs; ties count as errors); "
               f"validation {_pct(row['validation_accuracy'])}")
    rate = row["steps"] / row["seconds"] if row["seconds"] else 0.0
    typer.echo(f"{row['steps']} steps in {row['seconds']:.1f}s ({rate:.2f} steps/s)")
    typer.echo(f"trained {row['reward_id']} on {dataset} -> {row['path']}")


@reward_app.command("list")
def reward_list() -> None:
    """Registered reward models, newest first."""
    from feedback.lake.catalog import open_catalog
    from feedback.report import format_table
    from finetune import reward

    rows = [(r["reward_id"], r["dataset_version"], r["created_at"].isoformat(timespec="seconds"),
             _pct(r["test_accuracy"]), f"{_pct(r['test_ci_low'])}–{_pct(r['test_ci_high'])}", r["test_n"],
             _pct(r["validation_accuracy"]), r["steps"], r["path"]) for r in reward.models(open_catalog())]
    typer.echo(format_table(["reward_id", "dataset", "created_at", "test_acc", "95% CI", "n", "val_acc", "steps",
                             "path"], rows) if rows else "no reward models yet: flywheel reward train --dataset VERSION")
