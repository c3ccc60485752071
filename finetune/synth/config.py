"""Settings of synthetic data generation (``FLYWHEEL_SYNTH_*``), from the environment.

=========================== ================================================================
``GENERATOR``               ``local`` (SmolLM2 via transformers), ``openai`` (any OpenAI-compatible
                            ``/v1/chat/completions``) or ``bedrock`` (Amazon Bedrock Converse)
``MODEL``                   local: a base-model alias or folder (``smollm2-135m-instruct``);
                            openai: the ``model`` field; bedrock: the ``modelId``
``BASE_URL``, ``API_KEY``   OpenAI-compatible endpoint (``http://host:port`` or ``…/v1``) and bearer key
``REGION``, ``ENDPOINT_URL`` Bedrock region and an endpoint override (VPC endpoint, emulator)
``PRICES_USD_PER_1K_TOKENS`` ``{"model": {"input": usd, "output": usd}}`` per 1,000 tokens, as the KPI
                            layer's setting; a model not listed costs 0 (the local model always does)
``CACHE_PATH``              SQLite cache of generator calls (default ``<FLYWHEEL_HOME>/synth/cache.sqlite``)
``REWARD_MODEL``            reward model id (``flywheel reward list``) or folder that scores candidates
``MIN_REWARD``              absolute floor on the kept answer's reward (unitless logit; None: none)
``MIN_REWARD_SEED_QUANTILE`` floor = this quantile of the rewards of the seeds' own real answers
                            (default 0.25; None: none); the larger of both floors applies
``LEAKAGE_THRESHOLD``       MinHash Jaccard at which a synthetic text leaks a held-out one
                            (None: the reference versions' ``cleaning.dedup_threshold``, lowest wins)
``BATCH_SIZE``              local generation batch (prompts per ``generate`` call)
``THREADS``                 torch CPU threads of the local generator (None: torch's default; 1 on a
                            busy shared CPU, see :class:`~finetune.synth.generators.LocalGenerator`)
``MAX_ATTEMPTS``, ``RETRY_BASE_S``, ``RETRY_MAX_S`` retries on throttling (exponential backoff, full jitter)
``TIMEOUT_S``               HTTP / Bedrock read timeout per call, seconds
=========================== ================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.config import flywheel_home
from finetune.basemodel import SMOLLM2

GeneratorKind = Literal["local", "openai", "bedrock"]


class SynthSettings(BaseSettings):
    """See the module doc for each field."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_SYNTH_")
    generator: GeneratorKind = "local"
    model: str = SMOLLM2
    base_url: str | None = None
    api_key: SecretStr | None = None
    region: str = "us-east-1"
    endpoint_url: str | None = None
    prices_usd_per_1k_tokens: dict[str, dict[str, float]] = Field(default_factory=dict)
    cache_path: Path = Field(default_factory=lambda: flywheel_home() / "synth" / "cache.sqlite")
    reward_model: str | None = None
    min_reward: float | None = None
    min_reward_seed_quantile: float | None = Field(0.25, ge=0.0, le=1.0)
    leakage_threshold: float | None = Field(None, gt=0.0, le=1.0)
    batch_size: int = Field(8, ge=1)
    threads: int | None = Field(None, ge=1)
    max_attempts: int = Field(6, ge=1)
    retry_base_s: float = Field(0.5, ge=0.0)
    retry_max_s: float = Field(30.0, ge=0.0)
    timeout_s: float = Field(120.0, gt=0.0)
