"""The main job on the real data: replay all four data sets through the real broker into the real
lake with a ``flywheel ingest`` child process (the ``lake`` fixture in conftest), then check what
landed against counts made straight from the source files (plain json, no Flywheel code)."""

import gzip
import json
from collections import Counter

import pytest

from feedback.ingest.lag import wait_until_caught_up
from feedback.replay.run import replay
from feedback.report import build_report

RATING_VALUE = {"Bad": 1, "Could be Improved": 2, "Acceptable": 3, "Excellent": 4}


def tulu_annotations(data_dir):
    with open(data_dir / "tulu1_human_eval" / "eval_annotations_tulu_1.jsonl") as f:
        return [json.loads(line) for line in f]


def test_everything_sent_landed_once(lake):
    stack, result = lake
    con = stack.sql()
    assert result.sdk_stats["delivered"] == result.total and result.sdk_stats["errors"] == 0
    landed = Counter()
    for table, event_type in (("interactions", "interaction"), ("feedback", "feedback"), ("metrics", "metric")):
        for source, n in con.execute(f"SELECT source, count(*) FROM {table} GROUP BY source").fetchall():
            landed[(source.removeprefix("replay:"), event_type)] = n
        total, unique = con.execute(f"SELECT count(*), count(DISTINCT event_id) FROM {table}").fetchone()
        assert total == unique
    assert landed == +result.produced
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0


def test_tulu_acceptability_per_model_equals_source(lake, data_dir):
    stack, _ = lake
    expected = Counter()
    for a in tulu_annotations(data_dir):
        for side in ("a", "b"):
            verdict = a[f"completion_{side}_is_acceptable"]
            if verdict is not None:
                expected[(a[f"model_{side}"], "up" if verdict == "yes" else "down")] += 1
    rows = stack.sql().execute("""
        SELECT i.model, f.thumb, count(*) FROM feedback f JOIN interactions i ON f.message_id = i.message_id
        WHERE f.source = 'replay:tulu' AND f.kind = 'thumb' GROUP BY ALL""").fetchall()
    assert {(m, t): n for m, t, n in rows} == dict(expected)


def test_tulu_ab_win_rate_per_model_equals_source(lake, data_dir):
    stack, _ = lake
    wins, losses, ties = Counter(), Counter(), Counter()
    for a in tulu_annotations(data_dir):
        pref, ma, mb = a["preference"], a["model_a"], a["model_b"]
        if pref == "tie":
            ties[ma] += 1
            ties[mb] += 1
        elif pref.startswith("a-"):
            wins[ma] += 1
            losses[mb] += 1
        else:
            wins[mb] += 1
            losses[ma] += 1
    report = build_report(stack.sql())
    cols, rows = report.model_kpis
    by_model = {r[cols.index("model")]: dict(zip(cols, r)) for r in rows}
    for model in wins:
        got = by_model[model]
        assert (got["wins"], got["losses"], got["ties"]) == (wins[model], losses[model], ties[model])
        assert got["win_rate"] == pytest.approx(wins[model] / (wins[model] + losses[model]))
    assert by_model["tulu_65B"]["win_rate"] > 0.5 > by_model["tulu_7B"]["win_rate"]


def test_oasst1_thumbs_equal_emoji_counts(lake, data_dir):
    stack, _ = lake
    expected = Counter()
    with open(data_dir / "oasst1" / "oasst1_en_validation.jsonl") as f:
        for line in f:
            m = json.loads(line)
            for name, count in zip((m.get("emojis") or {}).get("name", []), (m.get("emojis") or {}).get("count", [])):
                if name in ("+1", "-1"):
                    expected[(m["message_id"], "up" if name == "+1" else "down")] += count
    rows = stack.sql().execute("""SELECT message_id, thumb, count(*) FROM feedback
        WHERE source = 'replay:oasst1' AND kind = 'thumb' GROUP BY ALL""").fetchall()
    assert {(m, t): n for m, t, n in rows} == dict(expected)


def test_feedbackqa_ratings_per_deployment_equal_source(lake, data_dir):
    stack, _ = lake
    counts, sums = Counter(), Counter()
    for path in sorted((data_dir / "feedbackqa").glob("*/feedback_*.json")):
        for item in json.loads(path.read_text()):
            for label in item["rating"]:
                counts[(path.parent.name, label)] += 1
                sums[path.parent.name] += RATING_VALUE[label]
    con = stack.sql()
    rows = con.execute("""SELECT i.app, f.rating_label, count(*) FROM feedback f JOIN interactions i ON f.message_id = i.message_id
        WHERE f.source = 'replay:feedbackqa' AND f.kind = 'rating' GROUP BY ALL""").fetchall()
    assert {(a, lbl): n for a, lbl, n in rows} == dict(counts)
    means = dict(con.execute("""SELECT i.app, avg(f.rating_value) FROM feedback f JOIN interactions i ON f.message_id = i.message_id
        WHERE f.source = 'replay:feedbackqa' AND f.kind = 'rating' GROUP BY ALL""").fetchall())
    for app in means:
        n = sum(v for (a, _), v in counts.items() if a == app)
        assert means[app] == pytest.approx(sums[app] / n)


def test_hh_rlhf_one_preference_per_pair(lake, data_dir):
    stack, _ = lake
    expected = {}
    for path in (data_dir / "hh_rlhf").glob("*_test.jsonl.gz"):
        with gzip.open(path, "rt") as f:
            expected[f"hh_rlhf/{path.name.removesuffix('_test.jsonl.gz')}"] = sum(1 for _ in f)
    rows = stack.sql().execute("""SELECT i.app, count(*) FROM feedback f JOIN interactions i ON f.chosen_message_id = i.message_id
        WHERE f.source = 'replay:hh_rlhf' AND f.kind = 'preference' GROUP BY ALL""").fetchall()
    assert dict(rows) == expected


def test_late_events_land_in_their_event_time_partition(lake):
    """oasst1 feedback carries 2023 event times: each row's Iceberg partition is its own day."""
    stack, _ = lake
    table = stack.catalog().load_table("flywheel.feedback")
    days = set()
    for task in table.scan(row_filter="source == 'replay:oasst1'").plan_files():
        days.add(task.file.partition[0])
    assert len(days) > 30  # spread over the months of the source, not the replay day
    rows = stack.sql().execute("SELECT min(occurred_at), max(occurred_at) FROM feedback WHERE source = 'replay:oasst1'").fetchone()
    assert rows[0].year == 2023 and rows[1].year == 2023


def test_replaying_again_adds_no_duplicates(lake, data_dir):
    stack, _ = lake
    con = stack.sql()
    before = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("interactions", "feedback")}
    again = replay(["tulu", "feedbackqa"], data_dir, stack.kafka, home=stack.home_settings)
    wait_until_caught_up(stack.kafka, stack.group_id, again.sdk_stats["delivered_offsets"], timeout_s=120)
    con = stack.sql()
    after = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("interactions", "feedback")}
    assert again.sdk_stats["delivered"] == again.total > 10_000
    assert after == before
