"""Synthetic training data for chosen topics: ``flywheel synth run`` (issue 7, part 3).

Modules: :mod:`~finetune.synth.seeds` real seed prompts (topic adapter, dataset version, app);
:mod:`~finetune.synth.generators` the pluggable generators (local SmolLM2, OpenAI-compatible HTTP,
Bedrock Converse); :mod:`~finetune.synth.cache` the SQLite call cache + retries + counting;
:mod:`~finetune.synth.retry` backoff on throttling; :mod:`~finetune.synth.costs` tokens and cost;
:mod:`~finetune.synth.pipeline` self-instruct / evol-instruct prompts, candidates, reward filter (and why
not distilabel); :mod:`~finetune.synth.leakage` the held-out leakage guard; :mod:`~finetune.synth.version`
the dataset version; :mod:`~finetune.synth.job` one run; :mod:`~finetune.synth.cli` the commands;
:mod:`~finetune.synth.config` ``FLYWHEEL_SYNTH_*``. Nothing here logs prompt or answer text.
"""

from finetune.synth.errors import SynthError

__all__ = ["SynthError"]
