"""Job configuration: what to train (:class:`JobConfig`) and, for SageMaker, where (:class:`SageMakerSettings`).

:class:`JobConfig` is backend-neutral; it becomes the training script's hyperparameters
(``finetune/entrypoint/train.py`` flags), the same for the local and the SageMaker backend. It can be
read from YAML (``flywheel finetune launch --config job.yaml``) and overridden by flags.

:class:`SageMakerSettings` comes from the environment (``FLYWHEEL_SAGEMAKER_*``) and flags: instance,
spot, stopping condition, role, S3 output, region and endpoint (a moto server or a VPC endpoint).
The Hugging Face training image is resolved from ``transformers_version``/``pytorch_version``/
``py_version`` with the SageMaker SDK's image URI table unless ``image_uri`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.config import flywheel_home
from finetune.basemodel import SMOLLM2
from finetune.errors import JobError

Method = Literal["sft", "dpo"]
DATASET_FORMAT = {"sft": "sft", "dpo": "preference"}
"""The dataset format each method trains on."""
DEFAULT_LEARNING_RATE = {"sft": 2e-4, "dpo": 5e-5}


class JobConfig(BaseModel):
    """A fine-tune: method, base model, LoRA and optimiser settings.

    ``learning_rate`` defaults per method (SFT+LoRA 2e-4, DPO+LoRA 5e-5); ``max_steps`` > 0 stops
    after that many optimiser steps (``epochs`` otherwise); ``max_length`` is in tokens (prompt +
    answer, truncated); ``beta`` is DPO's KL weight (ignored by SFT)."""

    model_config = ConfigDict(extra="forbid")
    method: Method
    base_model: str = SMOLLM2
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    learning_rate: float | None = Field(None, gt=0)
    max_length: int = Field(512, ge=16)
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    beta: float = Field(0.1, gt=0)
    seed: int = 42

    @model_validator(mode="after")
    def _defaults(self) -> JobConfig:
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LEARNING_RATE[self.method]
        return self

    def hyperparameters(self, model_name_or_path: str) -> dict[str, str]:
        """The training script's flags (``--key value``), as the strings SageMaker passes."""
        return {"method": self.method, "model_name_or_path": model_name_or_path, "epochs": str(self.epochs),
                "max_steps": str(self.max_steps), "learning_rate": str(self.learning_rate),
                "per_device_train_batch_size": str(self.batch_size),
                "gradient_accumulation_steps": str(self.gradient_accumulation_steps),
                "max_length": str(self.max_length), "lora_r": str(self.lora_r), "lora_alpha": str(self.lora_alpha),
                "lora_dropout": str(self.lora_dropout), "beta": str(self.beta), "seed": str(self.seed)}


def load_job_config(path: Path | None, **overrides) -> JobConfig:
    """A JobConfig from YAML ``path`` (optional) with ``overrides`` (None values ignored) on top.
    Raises JobError on an unreadable file or invalid values."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise JobError(f"cannot read job config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise JobError(f"{path}: a job config is a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return JobConfig(**data)
    except ValidationError as exc:
        raise JobError(f"invalid job config: {exc}") from exc


class FinetuneSettings(BaseSettings):
    """Where local jobs keep their folders (``<FLYWHEEL_HOME>/jobs``) and reward models."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_FINETUNE_")
    root: Path = Field(default_factory=lambda: flywheel_home() / "jobs")
    reward_root: Path = Field(default_factory=lambda: flywheel_home() / "reward_models")


class SageMakerSettings(BaseSettings):
    """The SageMaker backend (``FLYWHEEL_SAGEMAKER_*``).

    ``s3_output`` is ``s3://bucket/prefix``: datasets, code and model artifacts go under it.
    ``endpoint_url`` points boto3 at another endpoint for S3 and SageMaker (a moto server in tests).
    ``max_runtime_s`` is the stopping condition; with ``use_spot``, ``max_wait_s`` (≥ max_runtime_s)
    bounds waiting for spot capacity plus running."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_SAGEMAKER_")
    role_arn: str | None = None
    s3_output: str | None = None
    region: str = "us-east-1"
    endpoint_url: str | None = None
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = 1
    volume_size_gb: int = 30
    use_spot: bool = False
    max_runtime_s: int = 24 * 3600
    max_wait_s: int | None = None
    image_uri: str | None = None
    transformers_version: str = "4.56.2"
    pytorch_version: str = "2.8.0"
    py_version: str = "py312"
