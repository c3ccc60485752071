"""Pluggable sentiment scoring for free-text feedback comments.

A scorer maps texts to compound scores in [−1, 1] (−1 most negative, +1 most positive). The default is
VADER (:class:`VaderScorer`); a deployment can plug in its own class with ``load_scorer("pkg.mod:Class")``.
Texts are user content: nothing here logs them, and error messages never include them.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Protocol, runtime_checkable

__all__ = ["NEGATIVE_THRESHOLD", "SentimentScorer", "VaderScorer", "is_negative", "load_scorer"]

NEGATIVE_THRESHOLD: float = -0.05
"""Compound score at or below which a text counts as negative.

The VADER authors' conventional cut-off (positive ≥ 0.05, neutral in between, negative ≤ −0.05), from
the vaderSentiment README ("About the Scoring"); the method is C. J. Hutto & E. Gilbert (2014), "VADER:
A Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM-14."""


@runtime_checkable
class SentimentScorer(Protocol):
    """Anything with a ``name`` and a ``score`` method returning one compound score in [−1, 1] per text."""

    name: str

    def score(self, texts: list[str]) -> list[float]:
        """One compound score in [−1, 1] per input text, in input order."""
        ...


class VaderScorer:
    """VADER compound scores via ``vaderSentiment.SentimentIntensityAnalyzer``.

    The analyzer (which loads its lexicon files) is created once, on the first call to :meth:`score`.
    Source: Hutto & Gilbert (2014), ICWSM-14; package ``vaderSentiment`` 3.3.2.
    """

    name = "vader"

    def __init__(self) -> None:
        self._analyzer: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        if self._analyzer is None:
            with self._lock:
                if self._analyzer is None:
                    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

                    self._analyzer = SentimentIntensityAnalyzer()
        return self._analyzer

    def score(self, texts: list[str]) -> list[float]:
        """The ``compound`` polarity of each text (already normalised to [−1, 1] by VADER)."""
        analyzer = self._get()
        return [float(analyzer.polarity_scores(text)["compound"]) for text in texts]


def is_negative(score: float) -> bool:
    """True when a compound score is at or below :data:`NEGATIVE_THRESHOLD` (−0.05)."""
    return score <= NEGATIVE_THRESHOLD


def load_scorer(spec: str | None = None) -> SentimentScorer:
    """The scorer named by ``spec``.

    ``None`` or ``"vader"`` gives :class:`VaderScorer`; ``"package.module:ClassName"`` imports the module,
    instantiates the class with no arguments and returns it.

    Raises ValueError: the spec is malformed, the module or class cannot be imported or instantiated,
    or the instance has no callable ``score``.
    """
    if spec is None or spec.strip().lower() == "vader":
        return VaderScorer()
    module_name, sep, class_name = spec.strip().partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"sentiment scorer spec {spec!r} must be 'vader' or 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import sentiment scorer module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"module {module_name!r} has no attribute {class_name!r}")
    try:
        scorer = cls()
    except Exception as exc:
        raise ValueError(f"cannot instantiate sentiment scorer {spec!r}: {exc}") from exc
    if not callable(getattr(scorer, "score", None)):
        raise ValueError(f"sentiment scorer {spec!r} has no callable 'score' method")
    if not isinstance(getattr(scorer, "name", None), str):
        raise ValueError(f"sentiment scorer {spec!r} has no string 'name' attribute")
    return scorer
