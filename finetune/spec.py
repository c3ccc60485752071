"""The dataset spec: what to select from the lake, in which format, how to clean and split it.

A spec is YAML (``flywheel dataset build spec.yaml``), validated by :class:`DatasetSpec`; unknown
keys are errors. Example::

    name: support-sft
    format: sft                      # sft | preference | kto
    selection:
      since: 2023-01-01              # the answer's event time, UTC, inclusive
      apps: [tulu1_human_eval]       # empty: all
      exclude_apps: [hh_rlhf/harmless-base]
      min_rating: 0.75               # normalised 0-1, over rating_criteria
    cleaning:
      pii: true
      dedup_threshold: 0.85
    split: {train: 0.8, validation: 0.1, test: 0.1, seed: 0}

Formats use TRL's column names, so TRL trainers take them as they are
(https://huggingface.co/docs/trl/dataset_formats): ``sft`` → ``messages``; ``preference`` →
``prompt`` / ``chosen`` / ``rejected`` (conversational: lists of messages); ``kto`` → ``prompt`` /
``completion`` / ``label``.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from finetune.errors import DatasetError

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selection(_Strict):
    """Which answers and feedback a build reads. Empty lists mean "all"."""

    since: date | None = None
    until: date | None = None
    projects: list[str] = Field(default_factory=list)
    apps: list[str] = Field(default_factory=list)
    exclude_apps: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    prompt_versions: list[str] = Field(default_factory=list)
    feedback_sources: list[Literal["end_user", "annotator", "model_judge"]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    rating_criteria: list[str] = Field(default_factory=lambda: ["overall", "quality"])
    min_rating: float = Field(0.75, ge=0.0, le=1.0)
    """sft: an answer qualifies when its mean rating (criteria above, 0-1) is at least this."""
    use_thumbs: bool = True
    """sft: thumbs-up answers (more ups than downs) qualify; preference: up vs down on siblings."""
    use_preferences: bool = True
    """sft: the chosen side of a non-tie preference qualifies; preference: explicit pairs."""
    use_corrections: bool = True
    """sft: a user's correction replaces the answer; preference: correction ≻ original."""


class Cleaning(_Strict):
    """Cleaning steps, each counted in the dataset card."""

    pii: bool = True
    pii_entities: list[str] = Field(default_factory=lambda: ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD",
                                                             "IP_ADDRESS", "PERSON"])
    dedup_threshold: float = Field(0.85, gt=0.0, le=1.0)
    """Estimated Jaccard similarity (word 5-shingles, MinHash) at which rows are near-duplicates."""
    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(32_000, gt=0)
    """Bounds on each response (chosen/rejected/completion) and on the whole row's text."""
    safety_labels: dict[str, float] = Field(default_factory=lambda: {"toxicity": 0.5, "hate_speech": 0.5})
    """Drop answers whose mean rating under this name (0-1, where the source labels it) is at least the value."""


class Split(_Strict):
    """Fractions of conversations per split, and the seed of the assignment."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    seed: int = 0

    @model_validator(mode="after")
    def _sum_to_one(self) -> "Split":
        if abs(self.train + self.validation + self.test - 1.0) > 1e-9:
            raise ValueError("train + validation + test must be 1")
        return self

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


class DatasetSpec(_Strict):
    """A whole spec (see the module doc). ``name``: letters, digits, ``-``, ``_``, ``.``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    format: Literal["sft", "preference", "kto"]
    description: str = ""
    selection: Selection = Field(default_factory=Selection)
    cleaning: Cleaning = Field(default_factory=Cleaning)
    split: Split = Field(default_factory=Split)

    def canonical_yaml(self) -> str:
        """The spec with every default filled in, keys sorted: what the hash and the card record."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=True, allow_unicode=True)

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_yaml().encode()).hexdigest()


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a YAML spec. Raises DatasetError with every problem found."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"cannot read spec {path}: {exc}") from exc
    return parse_spec(raw, str(path))


def parse_spec(raw: object, where: str = "spec") -> DatasetSpec:
    """Validate a spec given as a mapping. Raises DatasetError listing each invalid field."""
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: a spec is a mapping with at least name and format")
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise DatasetError(f"{where}: {problems}") from None
