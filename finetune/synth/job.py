"""One synthetic-data run end to end: seeds → pipeline → write → register (what ``flywheel synth run`` does)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from finetune.synth import leakage, seeds as seeds_mod, version
from finetune.synth.cache import CachedGenerator, CompletionCache
from finetune.synth.config import SynthSettings
from finetune.synth.errors import SynthError
from finetune.synth.generators import Generator, make
from finetune.synth.pipeline import SynthConfig, SynthResult, run


@dataclass
class Outcome:
    """``version`` id, ``folder``, ``registered`` (False: already there), the pipeline ``result``, the
    ``seeds`` and ``seconds`` of the whole run."""

    version: str
    folder: Path
    registered: bool
    result: SynthResult
    seeds: seeds_mod.SeedSet
    seconds: float


def pick_seeds(catalog, k: int, seed: int, topic: str | None = None, seed_dataset: str | None = None,
               seed_app: str | None = None, lake=None) -> seeds_mod.SeedSet:
    """Seeds from exactly one source (``topic`` is the default: ``"confusion"``). Raises SynthError."""
    given = [x for x in (seed_dataset, seed_app) if x]
    if len(given) > 1 or (given and topic):
        raise SynthError("give one seed source: --topic, --seed-dataset or --seed-app")
    if seed_dataset:
        return seeds_mod.from_dataset(catalog, seed_dataset, k, seed, lake)
    if seed_app:
        return seeds_mod.from_app(catalog, seed_app, k, seed, lake)
    return seeds_mod.from_topic(catalog, topic or "confusion", k, seed, lake)


def synthesize(catalog, seeds: seeds_mod.SeedSet, reference_versions: list[str], reward_model: str,
               config: SynthConfig, settings: SynthSettings | None = None, root: Path | None = None,
               name: str = "synth", generator: Generator | None = None, lake=None, planted=None) -> Outcome:
    """Run the pipeline with ``settings``' generator (or ``generator``) behind the cache, write the version
    under ``root`` (default ``FLYWHEEL_DATASET_ROOT``) and register it. ``reference_versions``: dataset
    versions whose validation/test rows the leakage guard protects (at least one). ``planted``: see
    :func:`finetune.synth.pipeline.run`. Raises SynthError."""
    from feedback.errors import FlywheelError
    from finetune import registry
    from finetune.errors import RewardError
    from finetune.reward import RewardModel

    started = time.perf_counter()
    settings = settings or SynthSettings()
    if not reference_versions:
        raise SynthError("give at least one --reference-dataset: the leakage guard protects its validation/test rows")
    try:
        refs = [registry.get(catalog, v, lake) for v in reference_versions]
    except FlywheelError as exc:
        raise SynthError(str(exc)) from exc
    threshold = settings.leakage_threshold or leakage.spec_threshold(refs)
    texts = [t for row in leakage.reference_rows(refs) for t in leakage.row_texts(row)]
    guard = leakage.LeakageGuard(texts, threshold)
    try:
        scorer = RewardModel.load(reward_model, catalog, lake)
    except RewardError as exc:
        raise SynthError(str(exc)) from exc
    gen = generator or make(settings)
    cache = CompletionCache(settings.cache_path)
    try:
        cached = CachedGenerator(gen, cache, settings.prices_usd_per_1k_tokens, settings.max_attempts,
                                 settings.retry_base_s, settings.retry_max_s)
        result = run(seeds, cached, scorer, guard, config, planted)
    finally:
        cache.close()
        if generator is None and hasattr(gen, "close"):  # an HTTP generator made here holds a connection pool
            gen.close()
    recipe = {"seed_source": seeds.source, "seed_message_ids": sorted(s.message_id for s in seeds.seeds),
              "generator": cached.id, "config": config.as_dict(), "reward_model": reward_model,
              "reference_versions": sorted(reference_versions), "leakage_threshold": threshold,
              "planted": planted is not None}
    if root is None:
        from finetune.config import DatasetSettings

        root = DatasetSettings().root
    vid, folder, new = version.write_and_register(catalog, Path(root), name, recipe, result, seeds, lake)
    return Outcome(vid, folder, new, result, seeds, round(time.perf_counter() - started, 2))
