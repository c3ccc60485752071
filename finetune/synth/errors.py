"""Errors of :mod:`finetune.synth`."""

from finetune.errors import FinetuneError


class SynthError(FinetuneError):
    """Synthetic data cannot be generated: no seeds, topics not built, a generator that fails or is
    throttled past its retries, no reward model, an unknown reference dataset."""
