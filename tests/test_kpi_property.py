"""Property: for random event streams with out-of-order, late and duplicate events, the KPI tables
maintained incrementally (one ``KpiMaintainer.refresh`` per ingested micro-batch) equal a full
``KpiMaintainer.rebuild`` of the same lake, and both agree with counts taken from the stream itself.

Each example gets its own fresh lake (SQLite catalog + local warehouse in a temporary directory);
events go through the real contracts (``build_event`` + ``validate``), the real row mapping
(``event_row``) and the real idempotent ``LakeWriter``.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from feedback.config import HomeSettings, KpiSettings, LakeSettings
from feedback.contracts import build_event, stable_event_id, validate
from feedback.kpi.maintainer import KpiMaintainer
from feedback.kpi.tables import KPI_TABLE_SCHEMAS
from feedback.lake.catalog import open_catalog
from feedback.lake.tables import TABLE_FOR_TYPE, event_row
from feedback.lake.writer import LakeWriter

BASE = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday, 00:00 UTC
PROJECT = "proj"
MODELS = ("model-a", "model-b", "model-c")
APPS = ("chat", "search")
PROMPT_VERSIONS = ("v1", "v2", None)
FEEDBACK_SOURCES = ("end_user", "annotator")
COMMENTS = (
    "This is terrible and wrong",
    "Terrible answer, it made things worse",
    "Great answer, thanks!",
    "Very helpful and clear",
    "It works",
)
KPI_TABLES = ("kpi_interactions", "kpi_feedback")
DIMENSIONS = {
    "kpi_interactions": ("grain", "window_start", "window_day", "project", "app", "model", "prompt_version"),
    "kpi_feedback": ("grain", "window_start", "window_day", "project", "app", "model", "prompt_version",
                     "feedback_source"),
}


class LexiconScorer:
    """Deterministic stand-in for VADER: anything mentioning 'terrible' is negative."""

    name = "test-lexicon"

    def score(self, texts: list[str]) -> list[float]:
        return [-1.0 if "terrible" in (t or "").lower() else 0.5 for t in texts]


# --------------------------------------------------------------------------------------- events


def interaction(i: int, at: datetime, *, model: str = "model-a", app: str | None = "chat",
                prompt_version: str | None = "v1", status: str = "ok", user: str | None = None,
                latency_ms: float | None = None, tokens: tuple[int, int] | None = None,
                cost_usd: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "conversation_id": f"c{i // 2}",
        "message_id": f"m{i}",
        "prompt": [{"role": "user", "content": f"question {i}"}],
        "response": f"answer {i}",
        "model": model,
        "app": app,
        "prompt_version": prompt_version,
        "status": status,
        "user_id": user,
        "latency_ms": latency_ms,
        "cost_usd": cost_usd,
    }
    if status == "error":
        body["error"] = "upstream timeout"
    if tokens is not None:
        body["tokens_in"], body["tokens_out"] = tokens
    event = build_event("interaction", body, project=PROJECT, source="test-property",
                        event_id=stable_event_id("prop", "interaction", i), occurred_at=at)
    return validate(event)


def feedback(k: int, at: datetime, kind: str, *, message_id: str | None, conversation_id: str = "c-fb",
             source: str = "end_user", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"conversation_id": conversation_id, "message_id": message_id, "kind": kind,
                            "source": source, **fields}
    event = build_event("feedback", body, project=PROJECT, source="test-property",
                        event_id=stable_event_id("prop", "feedback", k), occurred_at=at)
    return validate(event)


def thumb(k, at, message_id, up=True, **kw):
    return feedback(k, at, "thumb", message_id=message_id, thumb="up" if up else "down", **kw)


def rating(k, at, message_id, value, name="overall", **kw):
    return feedback(k, at, "rating", message_id=message_id,
                    rating={"value": value, "scale_min": 1, "scale_max": 5, "name": name}, **kw)


def comment(k, at, message_id, text, **kw):
    return feedback(k, at, "comment", message_id=message_id, comment=text, **kw)


def preference(k, at, chosen, rejected, tie=False, **kw):
    return feedback(k, at, "preference", message_id=kw.pop("message_id", None),
                    preference={"chosen_message_id": chosen, "rejected_message_id": rejected, "tie": tie}, **kw)


class Stream:
    """The batches as ingested, in order; may repeat events (same event_id)."""

    def __init__(self, batches: list[list[dict[str, Any]]]):
        self.batches = batches

    def distinct(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for batch in self.batches:
            for event in batch:
                out.setdefault(event["event_id"], event)
        return out

    def __repr__(self) -> str:  # readable falsifying examples
        lines = []
        for n, batch in enumerate(self.batches):
            lines.append(f"batch {n}:")
            for e in batch:
                b = e["body"]
                what = (f"interaction {b['message_id']} {b['model']}/{b.get('app')}/{b.get('prompt_version')} "
                        f"{b.get('status')}" if e["event_type"] == "interaction" else
                        f"feedback {b['kind']} -> {b.get('message_id')} "
                        f"{ {k: b[k] for k in ('thumb', 'rating', 'comment', 'preference') if k in b} }")
                lines.append(f"  {e['event_id'][:8]} {e['occurred_at']} {what}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ strategy

MINUTE = timedelta(minutes=1)
SPAN_MIN = 6 * 24 * 60  # interactions spread over six UTC days


@st.composite
def streams(draw) -> Stream:
    n_int = draw(st.integers(3, 14))
    times: list[datetime] = []
    interactions = []
    for i in range(n_int):
        at = BASE + draw(st.integers(0, SPAN_MIN - 1)) * MINUTE + draw(st.integers(0, 59)) * timedelta(seconds=1)
        times.append(at)
        tokens = draw(st.none() | st.tuples(st.integers(0, 500), st.integers(0, 500)))
        interactions.append(interaction(
            i, at, model=draw(st.sampled_from(MODELS[:2] if i % 5 else MODELS)),
            app=draw(st.sampled_from(APPS)), prompt_version=draw(st.sampled_from(PROMPT_VERSIONS)),
            status=draw(st.sampled_from(("ok", "ok", "ok", "error"))),
            user=draw(st.sampled_from(("u1", "u2", "u3", None))),
            latency_ms=draw(st.none() | st.integers(10, 5000).map(float)), tokens=tokens,
            cost_usd=draw(st.none() | st.integers(0, 1000).map(lambda c: c / 1e4))))

    def when(target: int | None) -> datetime:
        if target is None:  # not about a known interaction: anywhere in (and a bit around) the span
            return BASE + draw(st.integers(-60, SPAN_MIN + 2 * 24 * 60)) * MINUTE
        offset = draw(st.one_of(
            st.integers(-12 * 60, -1),           # before its interaction (clock skew)
            st.integers(0, 120),                 # soon after
            st.integers(24 * 60, 3 * 24 * 60),   # days late
        ))
        return times[target] + offset * MINUTE

    def target() -> tuple[int | None, str | None]:
        choice = draw(st.integers(0, 19))
        if choice == 0:
            return None, None                               # conversation-level feedback
        if choice == 1:
            return None, f"m-unknown-{draw(st.integers(0, 2))}"  # never-seen interaction
        i = draw(st.integers(0, n_int - 1))
        return i, f"m{i}"

    feedbacks = []
    for k in range(draw(st.integers(0, 24))):
        kind = draw(st.sampled_from(("thumb", "rating", "preference", "thumb", "rating", "comment", "preference",
                                     "category", "correction")))
        source = draw(st.sampled_from(FEEDBACK_SOURCES))
        if kind == "preference":
            chosen, rejected = draw(st.lists(st.integers(0, n_int - 1), min_size=2, max_size=2, unique=True))
            rejected_id = f"m{rejected}" if draw(st.integers(0, 9)) else "m-unknown-0"
            feedbacks.append(preference(k, when(chosen), f"m{chosen}", rejected_id, tie=draw(st.booleans()),
                                        source=source,
                                        message_id=draw(st.sampled_from((None, f"m{chosen}")))))
            continue
        i, message_id = target()
        if kind == "correction" and message_id is None:
            message_id = "m-unknown-1"  # a correction must name a message
        conv = f"c{i // 2}" if i is not None else "c-fb"
        at = when(i)
        if kind == "thumb":
            feedbacks.append(thumb(k, at, message_id, up=draw(st.booleans()), source=source, conversation_id=conv))
        elif kind == "rating":
            feedbacks.append(rating(k, at, message_id, draw(st.integers(1, 5)),
                                    name=draw(st.sampled_from(("overall", "overall", "spam"))),
                                    source=source, conversation_id=conv))
        elif kind == "comment":
            feedbacks.append(comment(k, at, message_id, draw(st.sampled_from(COMMENTS)), source=source,
                                     conversation_id=conv))
        elif kind == "category":
            feedbacks.append(feedback(k, at, "category", message_id=message_id, category="off-topic",
                                      source=source, conversation_id=conv))
        else:
            feedbacks.append(feedback(k, at, "correction", message_id=message_id, correction="fixed text",
                                      source=source, conversation_id=conv))

    events = interactions + feedbacks
    stream = draw(st.permutations(events))
    # duplicates: an event delivered again later in the stream (e.g. a redelivery after a crash)
    for _ in range(draw(st.integers(0, 6))):
        src = draw(st.integers(0, len(stream) - 1))
        dst = draw(st.integers(src + 1, len(stream)))
        stream.insert(dst, stream[src])
    # 1-5 consecutive batches, mostly several (a single batch only exercises the first, full refresh)
    n_batches = min(draw(st.sampled_from((4, 5, 3, 2, 1))), len(stream))
    cuts = sorted(draw(st.lists(st.integers(1, len(stream) - 1), min_size=n_batches - 1, max_size=n_batches - 1,
                                unique=True)))
    bounds = [0, *cuts, len(stream)]
    return Stream([stream[a:b] for a, b in zip(bounds, bounds[1:])])


# ---------------------------------------------------------------------------- explicit examples

def _late_rating_stream() -> Stream:
    """A rating arrives in a later batch, three days after its interaction; a thumb is delivered twice."""
    i0 = interaction(0, BASE + timedelta(hours=10), model="model-a")
    i1 = interaction(1, BASE + timedelta(hours=11, minutes=5), model="model-b", prompt_version=None)
    i2 = interaction(2, BASE + timedelta(days=1, hours=23, minutes=59), model="model-a", status="error")
    t0 = thumb(0, BASE + timedelta(hours=10, minutes=3), "m0", up=True)
    r0 = rating(1, BASE + timedelta(days=3, hours=8), "m0", 2)
    r1 = rating(2, BASE + timedelta(days=3, hours=9), "m1", 5, name="spam")
    c0 = comment(3, BASE + timedelta(days=2), "m2", "This is terrible and wrong")
    return Stream([[i0, i1, t0], [r0, i2, t0], [r1, c0, r0, i0]])


def _interaction_after_feedback_stream() -> Stream:
    """Feedback (and a preference) about m3 arrive before the interaction m3, which comes in a
    later batch, earlier in event time than some of its feedback, and with a duplicate."""
    i1 = interaction(1, BASE + timedelta(hours=2), model="model-a")
    i3 = interaction(3, BASE + timedelta(days=2, hours=5), model="model-b", prompt_version="v2")
    t = thumb(0, BASE + timedelta(days=2, hours=4), "m3", up=False)        # before its interaction
    c = comment(1, BASE + timedelta(days=3), "m3", "Terrible answer, it made things worse")
    p = preference(2, BASE + timedelta(days=3, hours=1), "m1", "m3")
    u = thumb(3, BASE + timedelta(hours=6), None, up=True)                # conversation-level
    return Stream([[t, c, p, u], [i1], [t, i3, c], [i3]])


def _late_preference_stream() -> Stream:
    """A preference between two older interactions (different days and models) arrives alone in a
    later batch, days after both; only the two sides' days change."""
    i0 = interaction(0, BASE + timedelta(hours=9), model="model-a")
    i1 = interaction(1, BASE + timedelta(days=1, hours=15), model="model-b")
    i2 = interaction(2, BASE + timedelta(days=2, hours=1), model="model-c", prompt_version="v2")
    tie = preference(1, BASE + timedelta(days=4), "m1", "m2", tie=True, source="annotator")
    return Stream([[i0, i1, i2], [preference(0, BASE + timedelta(days=4, hours=2), "m0", "m1")], [tie, tie]])


# ------------------------------------------------------------------------------------- helpers

def _lake(tmp: str) -> tuple[Any, LakeWriter, KpiMaintainer]:
    catalog = open_catalog(LakeSettings(), HomeSettings(home=Path(tmp)))
    writer = LakeWriter(catalog, LakeSettings())
    kpi = KpiMaintainer(catalog, LakeSettings(), KpiSettings(min_observations=1), scorer=LexiconScorer())
    return catalog, writer, kpi


def _ingest(writer: LakeWriter, batch: list[dict[str, Any]], batch_no: int, first_offset: int) -> None:
    ingested_at = BASE + timedelta(days=10, minutes=batch_no)
    rows: dict[str, list[dict[str, Any]]] = {}
    for n, event in enumerate(batch):
        rows.setdefault(TABLE_FOR_TYPE[event["event_type"]], []).append(
            event_row(event, ingested_at, "t", 0, first_offset + n))
    writer.write(rows, {})


def _sort_key(value: Any) -> tuple:
    return (value is not None, value if value is not None else "")


def _read(catalog, name: str) -> list[dict[str, Any]]:
    rows = catalog.load_table(f"flywheel.{name}").scan().to_arrow().to_pylist()
    dims = DIMENSIONS[name]
    assert {f.name for f in KPI_TABLE_SCHEMAS[name]} >= set(dims)
    rows = [{k: round(v, 9) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    return sorted(rows, key=lambda r: tuple(_sort_key(r[d]) for d in dims))


def _total(rows: list[dict[str, Any]], column: str, grain: str) -> float:
    return sum(r[column] or 0 for r in rows if r["grain"] == grain)


def _expected_totals(stream: Stream) -> tuple[dict[str, int], dict[str, float]]:
    """Totals an independent reading of the distinct events gives for both KPI tables."""
    events = stream.distinct().values()
    inter = {e["body"]["message_id"]: e["body"] for e in events if e["event_type"] == "interaction"}
    fbs = [e["body"] for e in events if e["event_type"] == "feedback"]
    exp_i = {
        "interactions": len(inter),
        "errors": sum(b["status"] == "error" for b in inter.values()),
        "with_rating": sum(any(f["kind"] == "rating" and f.get("message_id") == m for f in fbs) for m in inter),
        "with_thumb": sum(any(f["kind"] == "thumb" and f.get("message_id") == m for f in fbs) for m in inter),
    }
    kinds = Counter(f["kind"] for f in fbs)
    prefs = []
    for f in fbs:
        if f["kind"] != "preference":
            continue
        c, r = (inter.get(f["preference"][k]) for k in ("chosen_message_id", "rejected_message_id"))
        if c and r and (c["model"] != r["model"] or c.get("prompt_version") != r.get("prompt_version")):
            prefs.append(f["preference"].get("tie", False))
    satisfaction = [f["rating"] for f in fbs
                    if f["kind"] == "rating" and f["rating"].get("name", "overall") == "overall"]
    exp_f: dict[str, float] = {
        "feedback_events": len(fbs) - kinds["preference"] + 2 * len(prefs),
        "thumbs_up": sum(f["kind"] == "thumb" and f["thumb"] == "up" for f in fbs),
        "thumbs_down": sum(f["kind"] == "thumb" and f["thumb"] == "down" for f in fbs),
        "rating_n": len(satisfaction),
        "rating_sum": round(sum((r["value"] - 1) / 4 for r in satisfaction), 6),
        "comments": kinds["comment"],
        "negative_comments": sum(f["kind"] == "comment" and "terrible" in f["comment"].lower() for f in fbs),
        "corrections": kinds["correction"],
        "categories": kinds["category"],
        "pref_wins": sum(not tie for tie in prefs),
        "pref_losses": sum(not tie for tie in prefs),
        "pref_ties": 2 * sum(tie for tie in prefs),
    }
    return exp_i, exp_f


def _describe(stream: Stream) -> None:
    """Label the example (see ``pytest --hypothesis-show-statistics``) by what makes it hard."""
    event(f"batches={sum(1 for b in stream.batches if b)}")
    seen: dict[str, int] = {}
    interaction_batch: dict[str, int] = {}
    for n, batch in enumerate(stream.batches):
        for e in batch:
            if e["event_id"] in seen and seen[e["event_id"]] < n:
                event("duplicate in a later batch")
            seen.setdefault(e["event_id"], n)
            if e["event_type"] == "interaction":
                interaction_batch.setdefault(e["body"]["message_id"], n)
    times = {e["body"]["message_id"]: e["occurred_at"] for e in stream.distinct().values()
             if e["event_type"] == "interaction"}
    for e in stream.distinct().values():
        m = e["body"].get("message_id")
        if e["event_type"] != "feedback" or m not in interaction_batch:
            continue
        if seen[e["event_id"]] < interaction_batch[m]:
            event("interaction arrives in a later batch than its feedback")
        if seen[e["event_id"]] > interaction_batch[m] and e["occurred_at"][:10] != times[m][:10]:
            event("feedback on another day arrives in a later batch than its interaction")


# --------------------------------------------------------------------------------------- tests

@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(stream=streams())
@example(stream=_late_rating_stream())
@example(stream=_interaction_after_feedback_stream())
@example(stream=_late_preference_stream())
def test_incremental_kpis_equal_full_rebuild(stream: Stream) -> None:
    _describe(stream)
    with tempfile.TemporaryDirectory() as tmp:
        catalog, writer, kpi = _lake(tmp)
        offset = 0
        for n, batch in enumerate(stream.batches):
            _ingest(writer, batch, n, offset)
            offset += len(batch)
            result = kpi.refresh()
            if n > 0:  # only the very first refresh (no state yet) may be a full rebuild
                assert not any(result.rebuilt.values()), result
        incremental = {name: _read(catalog, name) for name in KPI_TABLES}
        kpi.rebuild()
        rebuilt = {name: _read(catalog, name) for name in KPI_TABLES}

        for name in KPI_TABLES:
            assert incremental[name] == rebuilt[name], name

        # ... and both agree with the stream itself, at each grain (duplicates count once)
        exp_i, exp_f = _expected_totals(stream)
        for grain in ("day", "hour"):
            for column, want in exp_i.items():
                assert _total(incremental["kpi_interactions"], column, grain) == want, (grain, column)
            for column, want in exp_f.items():
                got = _total(incremental["kpi_feedback"], column, grain)
                assert round(got, 6) == want, (grain, column)
        if exp_i["interactions"]:
            assert incremental["kpi_interactions"]


def _rows(catalog, name: str, **match: Any) -> list[dict[str, Any]]:
    return [r for r in _read(catalog, name) if all(r[k] == v for k, v in match.items())]


def test_late_rating_updates_its_old_window_and_watermark_never_moves_back() -> None:
    day0, day3 = BASE.date(), (BASE + timedelta(days=3)).date()
    i0 = interaction(0, BASE + timedelta(hours=10), model="model-a")
    up = thumb(0, BASE + timedelta(hours=10, minutes=5), "m0", up=True)
    late = rating(1, BASE + timedelta(days=3, hours=8), "m0", 5)
    older = comment(2, BASE + timedelta(days=1), "m0", "Very helpful and clear")  # late, but earlier in time

    with tempfile.TemporaryDirectory() as tmp:
        catalog, writer, kpi = _lake(tmp)

        def watermark() -> datetime:
            state = KpiMaintainer.state(catalog.load_table("flywheel.kpi_feedback"))
            other = KpiMaintainer.state(catalog.load_table("flywheel.kpi_interactions"))
            assert other["watermark"] == state["watermark"]
            return datetime.fromisoformat(state["watermark"])

        _ingest(writer, [i0, up], 0, 0)
        kpi.refresh()
        (before,) = _rows(catalog, "kpi_feedback", grain="day", window_day=day0)
        assert (before["rating_n"], before["thumbs_up"], before["feedback_events"]) == (0, 1, 1)
        (ibefore,) = _rows(catalog, "kpi_interactions", grain="day", window_day=day0)
        assert (ibefore["with_rating"], ibefore["with_thumb"], ibefore["positive_answers"]) == (0, 1, 1)
        mark0 = watermark()
        assert mark0 == BASE + timedelta(hours=10, minutes=5)

        _ingest(writer, [late], 1, 2)
        result = kpi.refresh()
        assert result.rebuilt == {"kpi_interactions": False, "kpi_feedback": False}
        assert result.days == {"kpi_interactions": 1, "kpi_feedback": 1}  # only the old day is recomputed
        (after,) = _rows(catalog, "kpi_feedback", grain="day", window_day=day0)
        assert (after["rating_n"], after["rating_sum"], after["thumbs_up"], after["feedback_events"]) == (1, 1.0, 1, 2)
        (hour,) = _rows(catalog, "kpi_feedback", grain="hour", window_day=day0)
        assert hour["window_start"] == BASE + timedelta(hours=10) and hour["rating_n"] == 1
        assert _rows(catalog, "kpi_feedback", window_day=day3) == []
        assert _rows(catalog, "kpi_interactions", window_day=day3) == []
        (iafter,) = _rows(catalog, "kpi_interactions", grain="day", window_day=day0)
        assert (iafter["interactions"], iafter["with_rating"], iafter["with_thumb"]) == (1, 1, 1)
        mark1 = watermark()
        assert mark1 == BASE + timedelta(days=3, hours=8) and mark1 >= mark0

        # a late event with an OLDER event time, plus a redelivery: the watermark stays put
        _ingest(writer, [older, late], 2, 3)
        kpi.refresh()
        (final,) = _rows(catalog, "kpi_feedback", grain="day", window_day=day0)
        counts = ("rating_n", "comments", "negative_comments", "feedback_events")
        assert tuple(final[c] for c in counts) == (1, 1, 0, 3)
        assert _rows(catalog, "kpi_feedback", window_day=date(2024, 3, 5)) == []
        assert watermark() == mark1

        # a refresh with nothing new changes nothing
        assert kpi.refresh().days == {}
        assert watermark() == mark1


def test_many_small_batches_merge_manifests_and_stay_incremental() -> None:
    """One event per batch: enough appends for Iceberg to merge manifests (tables merge once 8
    pile up). Refreshes must still see exactly the new files, and equal a rebuild."""
    events = [interaction(i, BASE + timedelta(days=i % 3, hours=i)) for i in range(4)]
    events += [thumb(k, BASE + timedelta(days=k % 5, hours=1), interaction(k % 4, BASE)["body"]["message_id"], up=k % 3 > 0)
               for k in range(20)]
    events += [rating(100, BASE + timedelta(days=4), interaction(1, BASE)["body"]["message_id"], 4)]
    stream = Stream([[e] for e in reversed(events)])  # feedback first, its interactions last
    assert len(stream.batches) > 12
    with tempfile.TemporaryDirectory() as tmp:
        catalog, writer, kpi = _lake(tmp)
        for n, batch in enumerate(stream.batches):
            _ingest(writer, batch, n, n)
            kpi.refresh()
        feedback_table = catalog.load_table("flywheel.feedback")
        appends = sum(1 for s in feedback_table.snapshots() if s.summary and s.summary.operation.value == "append")
        assert len(feedback_table.current_snapshot().manifests(feedback_table.io)) < appends  # merged
        incremental = {name: _read(catalog, name) for name in KPI_TABLES}
        kpi.rebuild()
        assert incremental == {name: _read(catalog, name) for name in KPI_TABLES}
