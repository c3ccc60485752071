"""Token and cost accounting of generator calls.

Cost of a call = ``prompt_tokens / 1000 * input + completion_tokens / 1000 * output`` with the
``{"input": usd, "output": usd}`` prices per 1,000 tokens configured for the model
(``FLYWHEEL_SYNTH_PRICES_USD_PER_1K_TOKENS``, the same shape as the KPI layer's). Flywheel ships no
prices it cannot source, so a model without a configured price costs 0; the local model runs on our own
hardware and is always 0 (its cost is compute time, reported as seconds and tokens/s instead).
Cached answers cost nothing: their tokens are counted apart (``cached_*``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


def price(prices: dict[str, dict[str, float]], kind: str, model: str) -> dict[str, float]:
    """``{"input", "output"}`` USD per 1,000 tokens of ``model`` for generator ``kind`` (zeros for local)."""
    if kind == "local":
        return {"input": 0.0, "output": 0.0}
    p = prices.get(model, {})
    return {"input": float(p.get("input", 0.0)), "output": float(p.get("output", 0.0))}


@dataclass
class Usage:
    """Counts of one generator over a run: ``calls`` made to it (cache misses), ``cache_hits``,
    ``retries`` after throttling, ``prompt_tokens``/``completion_tokens`` of the calls made,
    ``cached_prompt_tokens``/``cached_completion_tokens`` of the answers served from the cache,
    ``cost_usd`` of the calls made, ``seconds`` spent in calls made (wall clock)."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    def add_call(self, prompt_tokens: int, completion_tokens: int, unit: dict[str, float]) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost_usd += prompt_tokens / 1000 * unit["input"] + completion_tokens / 1000 * unit["output"]

    def add_hit(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.cache_hits += 1
        self.cached_prompt_tokens += prompt_tokens
        self.cached_completion_tokens += completion_tokens

    @property
    def tokens_per_s(self) -> float | None:
        """New (completion) tokens per second of generator time; None without calls."""
        return self.completion_tokens / self.seconds if self.calls and self.seconds > 0 else None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["cost_usd"] = round(self.cost_usd, 8)
        out["seconds"] = round(self.seconds, 3)
        out["tokens_per_s"] = None if self.tokens_per_s is None else round(self.tokens_per_s, 2)
        return out
