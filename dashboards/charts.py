"""Altair charts of the dashboard: each takes a DataFrame from :mod:`dashboards.queries` and plots
it as it is (no numbers are computed here), with tooltips that give the exact values."""

from __future__ import annotations

import altair as alt
import pandas as pd

PERCENT_UNITS = ("share",)
UNIT_INTERVAL = ("share", "0-1 score")
"""Units bounded to [0, 1]: their axis is fixed (and intervals clamped) to that range."""


def _fmt(unit: str) -> str:
    return ".1%" if unit in PERCENT_UNITS else ",.3~f"


def trend(frame: pd.DataFrame, title: str, unit: str, color: str | None = None) -> alt.Chart:
    """Value per window as a line with points, and the 95 % interval as a band where there is one.

    ``frame``: ``window_start``, ``value``, ``ci_low``, ``ci_high``, ``n`` (and ``color`` if given)."""
    fmt = _fmt(unit)
    base = alt.Chart(frame).encode(x=alt.X("window_start:T", title=None))
    color_enc = alt.Color(f"{color}:N", title=color) if color else alt.value("#1f77b4")
    tooltip = [alt.Tooltip("window_start:T", title="window (UTC)", format="%Y-%m-%d %H:%M"),
               alt.Tooltip("value:Q", format=fmt), alt.Tooltip("ci_low:Q", format=fmt, title="95% low"),
               alt.Tooltip("ci_high:Q", format=fmt, title="95% high"), alt.Tooltip("n:Q", title="n")]
    if color:
        tooltip.insert(1, alt.Tooltip(f"{color}:N"))
    scale = alt.Scale(domain=[0, 1], clamp=True) if unit in UNIT_INTERVAL else alt.Undefined
    line = base.mark_line(point=True).encode(y=alt.Y("value:Q", title=unit, axis=alt.Axis(format=fmt), scale=scale),
                                             color=color_enc, tooltip=tooltip)
    layers = [line]
    if frame["ci_low"].notna().any():
        layers.insert(0, base.mark_area(opacity=0.2).encode(y=alt.Y("ci_low:Q", scale=scale), y2="ci_high:Q", color=color_enc))
    return alt.layer(*layers).properties(title=title, height=240)


def volume(frame: pd.DataFrame, title: str, color: str) -> alt.Chart:
    """Stacked bars of a count per window, split by ``color``."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("window_start:T", title=None), y=alt.Y("sum(value):Q", title="answers"),
        color=alt.Color(f"{color}:N", title=color),
        tooltip=[alt.Tooltip("window_start:T", format="%Y-%m-%d %H:%M", title="window (UTC)"),
                 alt.Tooltip(f"{color}:N"), alt.Tooltip("value:Q", format=",")],
    ).properties(title=title, height=240)


def intervals(frame: pd.DataFrame, by: str, title: str, unit: str) -> alt.Chart:
    """One point per group with its 95 % interval as an error bar (groups on the y axis)."""
    fmt = _fmt(unit)
    base = alt.Chart(frame).encode(y=alt.Y(f"{by}:N", title=None, sort="-x"))
    tooltip = [alt.Tooltip(f"{by}:N"), alt.Tooltip("value:Q", format=fmt), alt.Tooltip("ci_low:Q", format=fmt),
               alt.Tooltip("ci_high:Q", format=fmt), alt.Tooltip("n:Q")]
    points = base.mark_point(filled=True, size=80).encode(x=alt.X("value:Q", title=unit, axis=alt.Axis(format=fmt)),
                                                          tooltip=tooltip)
    layers = [points]
    if frame["ci_low"].notna().any():
        layers.insert(0, base.mark_rule().encode(x="ci_low:Q", x2="ci_high:Q"))
    return alt.layer(*layers).properties(title=title, height=max(120, 28 * len(frame)))


def stacked(frame: pd.DataFrame, x: str, y: str, color: str, title: str) -> alt.Chart:
    """Horizontal stacked bars: ``x`` categories, ``y`` counts, split by ``color``."""
    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y(f"{x}:N", title=None), x=alt.X(f"sum({y}):Q", title=y), color=alt.Color(f"{color}:N", title=color),
        tooltip=[alt.Tooltip(f"{x}:N"), alt.Tooltip(f"{color}:N"), alt.Tooltip(f"{y}:Q", format=",")],
    ).properties(title=title, height=max(120, 28 * frame[x].nunique()))


def distribution(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Ratings per value, one panel per scale. ``frame``: ``scale``, ``value``, ``label``, ``ratings``."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("label:N", title=None, sort=alt.SortField("value")), y=alt.Y("ratings:Q"),
        column=alt.Column("scale:N", title="rating scale"),
        tooltip=[alt.Tooltip("scale:N"), alt.Tooltip("label:N"), alt.Tooltip("ratings:Q", format=",")],
    ).properties(title=title, height=200).resolve_scale(x="independent")


def terms(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Complaint terms as bars (complaints containing the term), lift in the tooltip."""
    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y("term:N", sort="-x", title=None), x=alt.X("complaints:Q"),
        tooltip=[alt.Tooltip("term:N"), alt.Tooltip("complaints:Q"), alt.Tooltip("share:Q", format=".1%"),
                 alt.Tooltip("lift:Q", format=".2f")],
    ).properties(title=title, height=max(120, 20 * len(frame)))


def rate(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Events landed per minute, split by table. ``frame``: ``minute``, ``table``, ``events``."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("minute:T", title="ingested (UTC)"), y=alt.Y("events:Q"), color=alt.Color("table:N"),
        tooltip=[alt.Tooltip("minute:T", format="%H:%M"), alt.Tooltip("table:N"), alt.Tooltip("events:Q", format=",")],
    ).properties(title=title, height=220)
