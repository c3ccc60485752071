"""The replay importers on the real data in ``shared/data``: every event validates, ids are stable
and unique, interactions come before their feedback, and the event counts equal counts computed
here straight from the source files (plain json/gzip, independent of the importer code)."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path

import pytest

from feedback.contracts import validate
from feedback.errors import ReplayError
from feedback.replay.sources import SOURCES, default_data_dir, iter_events
from feedback.replay.tokens import TOKEN_COUNTER

REPLAY_TIME = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
REPLAY_ISO = "2025-01-02T03:04:05.000000Z"
PROJECT = "test-replay"
HH_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return default_data_dir()


@pytest.fixture(scope="module")
def events(data_dir) -> dict[str, list[dict]]:
    return {name: list(fn(data_dir, project=PROJECT, replay_time=REPLAY_TIME)) for name, fn in SOURCES.items()}


def _of(evs, event_type, kind=None):
    return [e for e in evs if e["event_type"] == event_type and (kind is None or e["body"]["kind"] == kind)]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _utc(text: str) -> datetime:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)


# ---------------------------------------------------------------- all sources


def test_source_order():
    assert list(SOURCES) == ["oasst1", "tulu", "hh_rlhf", "feedbackqa"]


def test_every_event_validates(events):
    for name, evs in events.items():
        assert evs, name
        for e in evs:
            validate(e)
            assert e["source"] == f"replay:{name}" and e["project"] == PROJECT


def test_ids_unique_and_deterministic(events, data_dir):
    ids = [e["event_id"] for evs in events.values() for e in evs]
    assert len(ids) == len(set(ids))
    again = defaultdict(list)
    for name, e in iter_events(list(SOURCES), data_dir, project=PROJECT, replay_time=REPLAY_TIME):
        again[name].append(e["event_id"])
    assert {n: [e["event_id"] for e in evs] for n, evs in events.items()} == dict(again)


def test_interactions_carry_derived_tokens_and_no_invented_numbers(events):
    for name, evs in events.items():
        for e in _of(evs, "interaction"):
            b = e["body"]
            assert b["tokens_derived"] is True and b["metadata"]["token_counter"] == TOKEN_COUNTER
            assert b["tokens_in"] >= 0 and b["tokens_out"] >= 0
            assert b["status"] == "ok"
            for field in ("latency_ms", "time_to_first_token_ms", "cost_usd"):
                assert b.get(field) is None
        for e in evs:
            source = e["body"]["metadata"]["event_time_source"]
            assert (source == "replay") == (e["occurred_at"] == REPLAY_ISO), (name, e["body"])


def test_feedback_refers_to_earlier_interaction(events, data_dir):
    prompter_ids = {m["message_id"] for m in _jsonl(data_dir / "oasst1/oasst1_en_validation.jsonl")
                    if m["role"] == "prompter"}
    for name, evs in events.items():
        seen: set[str] = set()
        for e in evs:
            b = e["body"]
            if e["event_type"] == "interaction":
                seen.add(b["message_id"])
                continue
            refs = [b["message_id"]] if b.get("message_id") else []
            if b["kind"] == "preference":
                refs += [b["preference"]["chosen_message_id"], b["preference"]["rejected_message_id"]]
            for ref in refs:
                if name == "oasst1" and b["kind"] in ("thumb", "rating") and ref in prompter_ids:
                    continue
                assert ref in seen, (name, b)


# ---------------------------------------------------------------- oasst1


def test_oasst1_counts(events, data_dir):
    msgs = _jsonl(data_dir / "oasst1/oasst1_en_validation.jsonl")
    evs = events["oasst1"]
    assistants = [m for m in msgs if m["role"] == "assistant"]
    inter = _of(evs, "interaction")
    assert len(inter) == len(assistants)
    assert sum(e["body"]["metadata"]["deleted"] for e in inter) == sum(m["deleted"] for m in assistants)

    emoji = Counter()
    for m in msgs:
        emojis = m["emojis"] or {"name": [], "count": []}
        for name, count in zip(emojis["name"], emojis["count"]):
            emoji[name] += count
    thumbs = Counter(e["body"]["thumb"] for e in _of(evs, "feedback", "thumb"))
    assert thumbs == {"up": emoji["+1"], "down": emoji["-1"]}

    labels = Counter(n for m in msgs if m["labels"] for n in m["labels"]["name"])
    assert Counter(e["body"]["rating"]["name"] for e in _of(evs, "feedback", "rating")) == labels

    siblings = defaultdict(list)
    for m in assistants:
        if m["rank"] is not None:
            siblings[m["parent_id"]].append(m["rank"])
    pairs = sum(a != b for ranks in siblings.values() for a, b in combinations(ranks, 2))
    prefs = _of(evs, "feedback", "preference")
    assert len(prefs) == pairs > 0
    for e in prefs:
        md = e["body"]["metadata"]
        assert md["chosen_rank"] < md["rejected_rank"]


def test_oasst1_prompt_paths_times_and_orphans(events, data_dir):
    by_id = {m["message_id"]: m for m in _jsonl(data_dir / "oasst1/oasst1_en_validation.jsonl")}
    orphans = 0
    for e in _of(events["oasst1"], "interaction"):
        b, m = e["body"], by_id[e["body"]["message_id"]]
        assert b["response"] == m["text"] and b["parent_id"] == m["parent_id"]
        assert b["conversation_id"] == f"oasst1:{m['message_tree_id']}"
        assert _utc(e["occurred_at"]) == _utc(m["created_date"])
        expected, parent_id = [], m["parent_id"]
        while parent_id in by_id:
            expected.insert(0, by_id[parent_id]["text"])
            parent_id = by_id[parent_id]["parent_id"]
        assert [p["content"] for p in b["prompt"]] == expected
        assert b["metadata"]["orphan"] is (parent_id is not None)
        orphans += parent_id is not None
        assert b["user_id"] == (by_id[m["parent_id"]]["user_id"] if m["parent_id"] in by_id else None)
        if b["prompt"]:
            assert b["prompt"][-1]["role"] == ("user" if by_id[m["parent_id"]]["role"] == "prompter" else "assistant")
    assert orphans >= 1


# ---------------------------------------------------------------- tulu


def test_tulu_counts(events, data_dir):
    folder = data_dir / "tulu1_human_eval"
    instances = _jsonl(folder / "eval_instances_tulu_1.jsonl")
    annotations = _jsonl(folder / "eval_annotations_tulu_1.jsonl")
    evs = events["tulu"]
    pairs = {(i["id"], c["model"]) for i in instances for c in i["completions"]}
    pairs |= {(a["instance_id"], a[f"model_{p}"]) for a in annotations for p in "ab"}
    assert {e["body"]["message_id"] for e in _of(evs, "interaction")} == {f"tulu:{i}:{m}" for i, m in pairs}
    assert len(_of(evs, "interaction")) == len(pairs)

    expected = Counter()
    for a in annotations:
        for p in "ab":
            expected[(a[f"model_{p}"], {"yes": "up", "no": "down"}[a[f"completion_{p}_is_acceptable"]])] += 1
    thumbs = _of(evs, "feedback", "thumb")
    got = Counter((e["body"]["message_id"].rsplit(":", 1)[1], e["body"]["thumb"]) for e in thumbs)
    assert got == expected

    prefs = _of(evs, "feedback", "preference")
    labels = Counter(a["preference"] for a in annotations)
    assert Counter(e["body"]["metadata"]["preference_label"] for e in prefs) == labels
    by_id = {a["id"]: a for a in annotations}
    for e in prefs:
        a, p = by_id[e["body"]["metadata"]["annotation_id"]], e["body"]["preference"]
        winner = "b" if a["preference"].startswith("b-") else "a"
        loser = "a" if winner == "b" else "b"
        assert p["chosen_message_id"] == f"tulu:{a['instance_id']}:{a[f'model_{winner}']}"
        assert p["rejected_message_id"] == f"tulu:{a['instance_id']}:{a[f'model_{loser}']}"
        assert p["tie"] is (a["preference"] == "tie")
        assert p["strength"] == {"tie": 0.0}.get(a["preference"], 0.5 if "slightly" in a["preference"] else 1.0)
        assert e["body"]["author_id"] == a["evaluator"]
        assert _utc(e["occurred_at"]) == _utc(a["timestamp"])

    earliest = {}
    for a in annotations:
        earliest[a["instance_id"]] = min(earliest.get(a["instance_id"], a["timestamp"]), a["timestamp"])
    for e in _of(evs, "interaction"):
        instance_id = e["body"]["conversation_id"].removeprefix("tulu:")
        if instance_id in earliest:
            assert _utc(e["occurred_at"]) == _utc(earliest[instance_id])
        else:
            assert e["occurred_at"] == REPLAY_ISO


# ---------------------------------------------------------------- hh_rlhf


def test_hh_rlhf_counts(events, data_dir):
    evs = events["hh_rlhf"]
    prefs = _of(evs, "feedback", "preference")
    responses = {e["body"]["message_id"]: e["body"]["response"] for e in _of(evs, "interaction")}
    for subset in HH_SUBSETS:
        with gzip.open(data_dir / "hh_rlhf" / f"{subset}_test.jsonl.gz", "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        mine = [e for e in prefs if e["body"]["conversation_id"].startswith(f"hh_rlhf:{subset}:")]
        assert len(mine) == len(rows)
        flagged = sum(bool(e["body"]["metadata"].get("identical_pair")) for e in mine)
        assert flagged == sum(r["chosen"] == r["rejected"] for r in rows)
        for i, r in enumerate(rows):
            for side in ("chosen", "rejected"):
                text = r[side]
                last = text[text.rfind("\n\nAssistant:") + len("\n\nAssistant:"):].split("\n\nHuman:")[0].strip()
                assert responses[f"hh_rlhf:{subset}:{i}:{side}"] == last
    assert len(responses) == 2 * len(prefs)
    assert all(e["occurred_at"] == REPLAY_ISO for e in evs)


# ---------------------------------------------------------------- feedbackqa


def test_feedbackqa_counts(events, data_dir):
    evs = events["feedbackqa"]
    items, labels, comments = Counter(), Counter(), Counter()
    for path in sorted((data_dir / "feedbackqa").glob("*/feedback_*.json")):
        domain = path.parent.name
        for item in json.loads(path.read_text(encoding="utf-8")):
            items[domain] += 1
            labels.update((domain, r) for r in item["rating"])
            comments[domain] += sum(isinstance(f, str) and bool(f.strip()) for f in item["feedback"])
    assert Counter(e["body"]["app"] for e in _of(evs, "interaction")) == items

    def domain(e):
        return e["body"]["conversation_id"].split(":")[1]

    ratings = _of(evs, "feedback", "rating")
    assert Counter((domain(e), e["body"]["rating"]["label"]) for e in ratings) == labels
    scale = {"Bad": 1, "Could be Improved": 2, "Acceptable": 3, "Excellent": 4}
    assert all(e["body"]["rating"]["value"] == scale[e["body"]["rating"]["label"]] for e in ratings)
    assert Counter(domain(e) for e in _of(evs, "feedback", "comment")) == comments


# ---------------------------------------------------------------- sources.py


def test_iter_events_rejects_unknown_name_and_missing_folder(tmp_path, data_dir):
    with pytest.raises(ReplayError, match="unknown"):
        iter_events(["nope"], data_dir, project=PROJECT, replay_time=REPLAY_TIME)
    with pytest.raises(ReplayError, match="not found"):
        iter_events(["oasst1"], tmp_path, project=PROJECT, replay_time=REPLAY_TIME)


def test_default_data_dir_env(monkeypatch, tmp_path, data_dir):
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path.resolve()
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(ReplayError):
        default_data_dir()
    monkeypatch.delenv("FLYWHEEL_DATA_DIR")
    assert (default_data_dir() / "oasst1").is_dir()


def test_tulu_interaction_from_annotation_only(tmp_path):
    """A pair that only an annotation names (absent from the instances file) still gets an
    interaction, from the annotation's texts, before its feedback. The real files have none."""
    from feedback.replay import tulu

    folder = tmp_path / "tulu1_human_eval"
    folder.mkdir()
    (folder / "eval_instances_tulu_1.jsonl").write_text(
        json.dumps({"id": "x", "prompt": "P", "completions": [{"model": "m1", "completion": "one"}]}) + "\n")
    row = {"id": 7, "instance_id": "x", "prompt": "P", "model_a": "m1", "model_b": "m2", "completion_a": "one",
           "completion_b": None, "completion_a_is_acceptable": "yes", "completion_b_is_acceptable": "no",
           "preference": "b-is-slightly-better", "evaluator": "e", "timestamp": "2023-05-01T10:00:00"}
    (folder / "eval_annotations_tulu_1.jsonl").write_text(json.dumps(row) + "\n")
    evs = list(tulu.events(tmp_path, project=PROJECT, replay_time=REPLAY_TIME))
    for e in evs:
        validate(e)
    assert [e["event_type"] for e in evs] == ["interaction", "interaction", "feedback", "feedback", "feedback"]
    added = evs[1]["body"]
    assert added["message_id"] == "tulu:x:m2" and added["response"] == "" and added["metadata"]["from_annotation"]
    assert evs[1]["occurred_at"] == "2023-05-01T10:00:00.000000Z"
    assert evs[-1]["body"]["preference"] == {"chosen_message_id": "tulu:x:m2", "rejected_message_id": "tulu:x:m1",
                                             "strength": 0.5, "tie": False}
