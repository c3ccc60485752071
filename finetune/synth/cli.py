"""``flywheel synth run``: synthetic SFT data grown from real prompts, filtered, registered.

Register in ``feedback/cli.py`` as ``app.add_typer(synth_app, name="synth")`` (``from finetune.synth.cli
import synth_app``).
"""

from __future__ import annotations

from typing import Optional

import typer

from feedback.errors import FlywheelError
from feedback.cli_errors import fail as _fail

synth_app = typer.Typer(help="Synthetic training data (self-instruct / evol-instruct) for chosen topics.",
                        no_args_is_help=True)


@synth_app.callback()
def _main() -> None:
    """Synthetic training data (self-instruct / evol-instruct) for chosen topics."""


@synth_app.command("run")
def synth_run(
        topic: Optional[str] = typer.Option(None, help="Seed from this topic id ('confusion': the topics of confusion; the default)."),
        seed_dataset: Optional[str] = typer.Option(None, help="Seed from a dataset version's train split."),
        seed_app: Optional[str] = typer.Option(None, help="Seed from the lake's interactions of this app."),
        reference_dataset: list[str] = typer.Option([], "--reference-dataset",
                                                    help="Version whose validation/test rows must not leak (repeatable; "
                                                         "default: --seed-dataset)."),
        reward_model: Optional[str] = typer.Option(None, help="Reward model id or folder (default FLYWHEEL_SYNTH_REWARD_MODEL)."),
        n_prompts: int = typer.Option(8, min=1, help="Prompt-generation calls."),
        candidates: int = typer.Option(2, min=1, help="Candidate answers per new prompt."),
        seeds: int = typer.Option(16, min=1, help="Real seed prompts to draw."),
        k_demos: int = typer.Option(3, min=1, help="Seed examples per self-instruct call."),
        max_new_tokens: int = typer.Option(128, min=1, help="Tokens per answer at most."),
        prompt_max_new_tokens: int = typer.Option(64, min=1, help="Tokens per generated prompt at most."),
        temperature: float = typer.Option(0.7, min=0.0, help="Answer sampling temperature."),
        top_p: float = typer.Option(0.9, min=0.0, max=1.0, help="Answer nucleus mass."),
        seed: int = typer.Option(0, help="Seed of seed draws and call seeds."),
        min_reward: Optional[float] = typer.Option(None, help="Absolute reward floor (default FLYWHEEL_SYNTH_MIN_REWARD)."),
        min_reward_seed_quantile: Optional[float] = typer.Option(None, help="Floor = this quantile of real seed answers' rewards (default 0.25)."),
        generator: Optional[str] = typer.Option(None, help="local | openai | bedrock (default FLYWHEEL_SYNTH_GENERATOR)."),
        model: Optional[str] = typer.Option(None, help="Generator model (default FLYWHEEL_SYNTH_MODEL)."),
        base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL."),
        batch_size: Optional[int] = typer.Option(None, min=1, help="Local generation batch size."),
        threads: Optional[int] = typer.Option(None, min=1, help="Local generator's torch CPU threads."),
        name: str = typer.Option("synth", help="Version name prefix."),
) -> None:
    """Generate prompts and answers from real seeds, keep the best answers the reward model likes, drop
    rows that leak held-out data, write and register an `sft` dataset version."""
    from pydantic import ValidationError

    from feedback.lake.catalog import open_catalog
    from finetune.synth.config import SynthSettings
    from finetune.synth.errors import SynthError
    from finetune.synth.generators import GenParams
    from finetune.synth.job import pick_seeds, synthesize
    from finetune.synth.pipeline import SynthConfig

    try:
        overrides = {k: v for k, v in {"generator": generator, "model": model, "base_url": base_url,
                                       "batch_size": batch_size, "threads": threads}.items() if v is not None}
        try:
            settings = SynthSettings(**overrides)
        except ValidationError as exc:
            raise SynthError(f"invalid synth settings: {exc}") from exc
        rm = reward_model or settings.reward_model
        if not rm:
            raise SynthError("no reward model: pass --reward-model or set FLYWHEEL_SYNTH_REWARD_MODEL "
                             "(`flywheel reward train --dataset <preference version>` makes one)")
        refs = list(reference_dataset) or ([seed_dataset] if seed_dataset else [])
        quantile = min_reward_seed_quantile if min_reward_seed_quantile is not None else settings.min_reward_seed_quantile
        config = SynthConfig(n_prompts=n_prompts, candidates=candidates, k_demos=k_demos,
                             prompt_params=GenParams(0.9, 0.95, prompt_max_new_tokens),
                             response_params=GenParams(temperature, top_p, max_new_tokens), seed=seed,
                             min_reward=min_reward if min_reward is not None else settings.min_reward,
                             min_reward_seed_quantile=quantile)
        catalog = open_catalog()
        seed_set = pick_seeds(catalog, seeds, seed, topic, seed_dataset, seed_app)
        out = synthesize(catalog, seed_set, refs, rm, config, settings, name=name)
    except FlywheelError as exc:
        _fail(exc)
    r = out.result
    typer.echo(f"seeds: {len(out.seeds.seeds)} from {out.seeds.source}")
    for step, n in r.steps:
        typer.echo(f"{step:44s} {n:7,d}")
    for why, n in r.dropped.items():
        typer.echo(f"  dropped: {why:52s} {n:5,d}")
    typer.echo(f"reward floor {r.reward['floor']}; kept rewards {r.reward['kept']}")
    for stage, u in r.usage.items():
        rate = f"{u.tokens_per_s:.1f} new tokens/s" if u.tokens_per_s else "n/a"
        per_call = f"{u.calls / u.seconds:.2f} calls/s" if u.calls and u.seconds else "n/a"
        typer.echo(f"{stage}: {u.calls} calls, {u.cache_hits} cache hits, {u.retries} retries, tokens "
                   f"{u.prompt_tokens:,} in / {u.completion_tokens:,} out, cost ${u.cost_usd:.6f}, {rate}, {per_call}")
    typer.echo(f"{'registered' if out.registered else 'rewritten (already registered)'} {out.version} "
               f"({len(r.rows)} rows) in {out.seconds}s -> {out.folder}")
