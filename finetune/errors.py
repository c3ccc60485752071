"""Errors of the finetune package (dataset curation, jobs, evaluation)."""

from feedback.errors import FlywheelError


class FinetuneError(FlywheelError):
    """Root of the finetune package's errors."""


class DatasetError(FinetuneError):
    """A dataset spec is invalid, a build cannot proceed, or a dataset version is unknown."""


class JobError(FinetuneError):
    """A fine-tune job cannot be configured, launched, tracked or found."""


class EvalError(FinetuneError):
    """An evaluation cannot run (no artifacts, no held-out split, unknown job)."""


class RewardError(FinetuneError):
    """A reward model cannot be trained, found or loaded."""
