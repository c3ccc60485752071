"""Retries on throttling: exponential backoff with full jitter, a bounded number of attempts (tenacity).

Only *throttling* is retried -- HTTP 429 (Too Many Requests) and 503 (Service Unavailable) from an
OpenAI-compatible endpoint, botocore ``ThrottlingException`` / ``ServiceUnavailableException`` (and
``TooManyRequestsException``) from Bedrock; generators raise :class:`Throttled` for those. Anything else
fails at once. Attempt ``n`` (1-based) waits a uniform random time in ``[0, min(max_s, base_s * 2**n)]``
("full jitter", M. Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015), or the
server's ``Retry-After`` seconds when it sent one (capped by ``max_s``). After ``max_attempts`` attempts
the last throttling becomes a :class:`~finetune.synth.errors.SynthError`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, stop_after_attempt

from finetune.synth.errors import SynthError

T = TypeVar("T")

THROTTLING_HTTP = frozenset({429, 503})
THROTTLING_AWS = frozenset({"ThrottlingException", "ServiceUnavailableException", "TooManyRequestsException"})


class Throttled(Exception):
    """A generator was throttled; ``retry_after`` (seconds) when the server said how long to wait."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _wait(base_s: float, max_s: float, rng: random.Random) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is not None:
            return min(max_s, max(0.0, after))
        return rng.uniform(0.0, min(max_s, base_s * 2 ** state.attempt_number))
    return wait


def call(fn: Callable[[], T], max_attempts: int = 6, base_s: float = 0.5, max_s: float = 30.0,
         on_retry: Callable[[], None] | None = None, rng: random.Random | None = None) -> T:
    """``fn()``, retried while it raises :class:`Throttled` (see the module doc); ``on_retry`` is called
    before each retry (to count them). Raises SynthError once ``max_attempts`` attempts were throttled;
    other exceptions propagate unchanged."""
    retrying = Retrying(retry=retry_if_exception_type(Throttled), stop=stop_after_attempt(max_attempts),
                        wait=_wait(base_s, max_s, rng or random.Random()),
                        before_sleep=(lambda _s: on_retry()) if on_retry else None)
    try:
        return retrying(fn)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise SynthError(f"throttled {max_attempts} times in a row; giving up ({last})") from last
