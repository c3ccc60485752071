"""The global filters of every page, and their round trip through the URL query string.

A view is shared as a link, so the filters live in the query string:

| key | meaning | example |
|---|---|---|
| ``range`` | a preset (:data:`RANGES`) or ``custom`` | ``range=7d`` |
| ``from`` / ``to`` | the custom range, UTC dates, ``to`` inclusive | ``from=2023-03-01&to=2023-03-31`` |
| ``project``, ``app``, ``model``, ``prompt_version`` | equality on the answer's dimension | ``model=tulu_65B`` |

Windows are [start, end) in UTC on the window start, the KPI layer's convention
(:class:`feedback.kpi.query.KpiFilter`). The previous period is the range of the same length
just before, for "change vs previous period".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Mapping

from dashboards.errors import DashboardError
from feedback.kpi.definitions import INTERACTION_DIMS
from feedback.kpi.query import KpiFilter

RANGES: dict[str, timedelta | None] = {
    "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30),
    "90d": timedelta(days=90), "365d": timedelta(days=365), "all": None,
}
"""Range presets: from N before now (UTC, floored to the minute) with no upper bound, so the live
edge is always in; ``all`` has no bounds (and no previous period)."""
RANGE_LABELS = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "90d": "Last 90 days",
                "365d": "Last 365 days", "all": "All time", "custom": "Custom dates"}
DIMENSIONS = INTERACTION_DIMS
"""Dimensions a page can be filtered on: project, app, model, prompt_version (of the answer)."""


@dataclass(frozen=True)
class GlobalFilters:
    """Time range and dimension equality filters shared by all pages.

    ``start``/``end`` are UTC datetimes (None: unbounded); ``dims`` maps a dimension of
    :data:`DIMENSIONS` to the one value kept.
    """

    range: str = "all"
    start: datetime | None = None
    end: datetime | None = None
    dims: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_query(cls, params: Mapping[str, str], default_range: str = "all", now: datetime | None = None) -> "GlobalFilters":
        """Parse the query string (a mapping of key → last value). Raises DashboardError on an
        unknown range or a date that is not ``YYYY-MM-DD``."""
        now = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
        key = params.get("range") or default_range
        dims = {d: params[d] for d in DIMENSIONS if params.get(d)}
        if key == "custom":
            start, end = _day(params.get("from")), _day(params.get("to"))
            return cls("custom", start, end + timedelta(days=1) if end else None, dims)
        if key not in RANGES:
            raise DashboardError(f"unknown range {key!r}; one of {', '.join(list(RANGES) + ['custom'])}")
        span = RANGES[key]
        return cls(key, now - span if span else None, None, dims)

    def to_query(self) -> dict[str, str]:
        """The query-string form (inverse of :meth:`from_query` for custom ranges)."""
        out = {"range": self.range}
        if self.range == "custom":
            if self.start:
                out["from"] = self.start.date().isoformat()
            if self.end:
                out["to"] = (self.end - timedelta(days=1)).date().isoformat()
        out.update(self.dims)
        return out

    def kpi_filter(self, **extra_dims: str) -> KpiFilter:
        """The KPI layer's filter for this range and these dimensions (plus ``extra_dims``)."""
        return KpiFilter(self.start, self.end, {**self.dims, **extra_dims})

    @property
    def span(self) -> timedelta | None:
        """Length of the range (a preset's nominal length), None when unbounded."""
        if self.range in RANGES:
            return RANGES[self.range]
        return self.end - self.start if self.start is not None and self.end is not None else None

    def previous(self) -> "GlobalFilters | None":
        """The period of equal length just before the range, or None when the range is unbounded."""
        span = self.span
        if span is None or self.start is None:
            return None
        return replace(self, start=self.start - span, end=self.start)

    def key(self) -> tuple:
        """A hashable identity (cache key) of these filters."""
        return (self.range, self.start, self.end, tuple(sorted(self.dims.items())))

    @property
    def grain(self) -> str:
        """``hour`` for ranges up to two days, else ``day``."""
        span = self.span
        return "hour" if span is not None and span <= timedelta(days=2) else "day"

    def describe(self) -> str:
        """Human-readable range, e.g. ``2023-03-01 – 2023-03-31 (UTC)``."""
        if self.range != "custom":
            return RANGE_LABELS[self.range]
        left = self.start.date().isoformat() if self.start else "…"
        right = (self.end - timedelta(days=1)).date().isoformat() if self.end else "…"
        return f"{left} – {right} (UTC)"


def _day(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.combine(date.fromisoformat(text), time(), UTC)
    except ValueError:
        raise DashboardError(f"dates in the URL must be YYYY-MM-DD, got {text!r}") from None
