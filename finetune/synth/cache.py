"""A persistent cache of generator calls (SQLite), and the caching, retrying, counting call path.

Key: SHA-256 of the canonical JSON (sorted keys, UTF-8) of ``{"generator": kind, "model": model,
"messages": messages, "params": {temperature, top_p, max_new_tokens}, "seed": seed}``. The same chat
with the same parameters and seed is answered from the cache: no generator call, counted as a hit, its
tokens counted as cached (free). Values: the completion's text and token counts. One row per key;
SQLite's WAL journal lets several processes share the file (a race stores the same key twice: the
later ``INSERT OR REPLACE`` wins, harmless). The text is stored as is in a local file: treat the
cache like the dataset it feeds (it holds generated text, never logged).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from finetune.synth import retry
from finetune.synth.costs import Usage, price
from finetune.synth.generators import Completion, GenParams, Generator, Message

_SCHEMA = """CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY, generator TEXT NOT NULL, model TEXT NOT NULL, text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, created_at REAL NOT NULL)"""


def cache_key(kind: str, model: str, messages: list[Message], params: GenParams, seed: int) -> str:
    """64 hex chars identifying one call (see the module doc)."""
    payload = {"generator": kind, "model": model, "messages": [{"role": m["role"], "content": m["content"]}
                                                                 for m in messages],
               "params": params.as_dict(), "seed": int(seed)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class CompletionCache:
    """The SQLite file at ``path`` (created with its folder). ``get``/``put`` by key; ``len`` rows."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, timeout=30)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute(_SCHEMA)
        self._con.commit()

    def get(self, key: str) -> Completion | None:
        row = self._con.execute("SELECT text, prompt_tokens, completion_tokens FROM completions WHERE key = ?",
                                (key,)).fetchone()
        return Completion(row[0], int(row[1]), int(row[2])) if row else None

    def put(self, key: str, kind: str, model: str, completion: Completion) -> None:
        self._con.execute("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (key, kind, model, completion.text, completion.prompt_tokens,
                           completion.completion_tokens, time.time()))
        self._con.commit()

    def __len__(self) -> int:
        return int(self._con.execute("SELECT count(*) FROM completions").fetchone()[0])

    def close(self) -> None:
        self._con.close()


class CachedGenerator:
    """A generator behind the cache, with retries on throttling and usage counting.

    ``complete_many(messages_list, params, seeds)`` answers each chat: hits from the cache, misses sent
    to the generator in batches of its ``batch_size`` (each batch retried as a whole on throttling,
    :func:`finetune.synth.retry.call`), stored, counted in :attr:`usage`. ``prices`` as in
    :mod:`finetune.synth.costs`. Raises SynthError (a failure, or throttling past ``max_attempts``)."""

    def __init__(self, generator: Generator, cache: CompletionCache, prices: dict[str, dict[str, float]] | None = None,
                 max_attempts: int = 6, retry_base_s: float = 0.5, retry_max_s: float = 30.0) -> None:
        self.generator = generator
        self.cache = cache
        self.unit = price(prices or {}, generator.kind, generator.model)
        self.usage = Usage()
        self.retry = {"max_attempts": max_attempts, "base_s": retry_base_s, "max_s": retry_max_s}

    @property
    def id(self) -> str:
        """``<kind>:<model>``, what rows record as their generator."""
        return f"{self.generator.kind}:{self.generator.model}"

    def _count_retry(self) -> None:
        self.usage.retries += 1

    def complete_many(self, messages: Sequence[list[Message]], params: GenParams,
                      seeds: Sequence[int]) -> list[Completion]:
        kind, model = self.generator.kind, self.generator.model
        keys = [cache_key(kind, model, m, params, s) for m, s in zip(messages, seeds)]
        out: list[Completion | None] = [self.cache.get(k) for k in keys]
        for c in out:
            if c is not None:
                self.usage.add_hit(c.prompt_tokens, c.completion_tokens)
        todo = [i for i, c in enumerate(out) if c is None]
        step = max(1, self.generator.batch_size)
        for start in range(0, len(todo), step):
            idx = todo[start:start + step]
            started = time.perf_counter()
            got = retry.call(lambda: self.generator.complete_batch([messages[i] for i in idx], params,
                                                                   [seeds[i] for i in idx]),
                             on_retry=self._count_retry, **self.retry)
            self.usage.seconds += time.perf_counter() - started
            for i, c in zip(idx, got):
                self.cache.put(keys[i], kind, model, c)
                self.usage.add_call(c.prompt_tokens, c.completion_tokens, self.unit)
                out[i] = c
        return out  # type: ignore[return-value]
