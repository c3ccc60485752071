"""Errors of the finetune package (dataset curation, jobs, evaluation)."""

from feedback.errors import FlywheelError


class FinetuneError(FlywheelError):
    """Root of the finetune package's errors."""


class DatasetError(FinetuneError):
    """A dataset spec is invalid, a build cannot proceed, or a dataset version is unknown."""
