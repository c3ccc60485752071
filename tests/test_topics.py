"""Topics and drift (feedback.topics) on the replayed real data.

To stay fast, the topic model is built on a subset of the real lake: the apps ``oasst1`` and
``tulu1_human_eval`` (2,069 answers, ~1.3k distinct prompts; the two sources that carry thumbs and
quality ratings). Embeddings are cached under the test lake's home, so the page test reuses them.
"""

import re
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from statsmodels.stats.proportion import proportion_confint
from streamlit.testing.v1 import AppTest

from feedback.config import KpiSettings
from feedback.lake.catalog import load_table_if_exists
from feedback.topics import kpis, store
from feedback.topics.cluster import nearest
from feedback.topics.config import TopicsSettings
from feedback.topics.drift import drift_between, mmd_test, window_texts
from feedback.topics.embed import Embedder
from feedback.topics.model import Scope, assign, build

APPS = ("oasst1", "tulu1_human_eval")
DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"


@pytest.fixture(scope="module")
def built(lake):
    stack, _ = lake
    settings = TopicsSettings(cache_dir=stack.home / "topics" / "embeddings", k_candidates=[10, 15, 20])
    embedder = Embedder(settings)
    scope = Scope(apps=APPS)
    result = build(stack.catalog(), stack.lake, settings, scope, embedder)
    print(f"\ntopic build on the subset: {result}")
    return stack, settings, scope, embedder, result


def _lake_rows(stack, name):
    return load_table_if_exists(stack.catalog(), stack.lake, name).scan().to_arrow()


def _last_user(prompt) -> str:
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else (prompt[-1]["content"] if prompt else "")


def test_build_assigns_every_interaction_of_the_subset(built):
    stack, _, _, _, result = built
    inter = _lake_rows(stack, "interactions")
    in_scope = set(inter.filter(pc.is_in(inter["app"], value_set=__import__("pyarrow").array(APPS)))["message_id"].to_pylist())
    con = store.connect(stack.catalog(), stack.lake)
    assigned = {r[0] for r in con.execute("SELECT message_id FROM current_assignments").fetchall()}
    assert assigned == in_scope and result.interactions == len(in_scope)
    table = kpis.topic_table(con)
    assert len(table) == result.k >= 2
    assert table["size"].sum() == len(assigned)
    stored = con.execute("SELECT sum(size), count(*), min(len(centroid)) FROM current_topics").fetchone()
    assert stored == (len(assigned), result.k, 384)


def test_topic_satisfaction_equals_a_count_from_the_lake(built):
    stack, _, _, _, _ = built
    con = store.connect(stack.catalog(), stack.lake)
    table = kpis.topic_table(con)
    kpi = KpiSettings()
    fb = _lake_rows(stack, "feedback").to_pylist()
    per_message: dict[str, list[dict]] = {}
    for f in fb:
        per_message.setdefault(f["message_id"], []).append(f)
    topic_of = dict(con.execute("SELECT message_id, topic_id FROM current_assignments").fetchall())
    checked = 0
    for row in table[table["n"] > 0].itertuples():
        n = positive = 0
        for mid, t in topic_of.items():
            if t != row.topic_id:
                continue
            events = per_message.get(mid, [])
            thumbs = [e["thumb"] for e in events if e["thumb"]]
            ratings = [e["rating_normalized"] for e in events if e["kind"] == "rating" and e["rating_name"] in kpi.rating_criteria]
            if not thumbs and not ratings:
                continue
            n += 1
            positive += "down" not in thumbs and ("up" in thumbs or any(r >= kpi.positive_rating_threshold for r in ratings))
        assert (row.n, row.positive) == (n, positive), row.label
        low, high = proportion_confint(positive, n, method="wilson")
        assert row.satisfaction == pytest.approx(positive / n) and row.ci_low == pytest.approx(max(0, low))
        assert row.ci_high == pytest.approx(min(1, high))
        checked += 1
    assert checked >= 2
    conf = kpis.confusion(table, 30)
    assert (conf["n"] >= 30).all() and list(conf["ci_high"]) == sorted(conf["ci_high"])


def test_label_terms_occur_in_their_topic_more_than_elsewhere(built):
    stack, _, _, _, _ = built
    con = store.connect(stack.catalog(), stack.lake)
    rows = con.execute("""SELECT DISTINCT a.topic_id, lower(coalesce(list_filter(i.prompt, lambda m: m.role = 'user')[-1].content, ''))
                          FROM current_assignments a JOIN interactions i USING (message_id)""").fetchall()
    tokens = [(t, set(re.findall(r"[a-z]{3,}", text))) for t, text in rows]
    pairs = wins = 0
    for topic_id, label, terms in con.execute("SELECT topic_id, label, terms FROM current_topics").fetchall():
        inside = [tok for t, tok in tokens if t == topic_id]
        outside = [tok for t, tok in tokens if t != topic_id]
        assert terms and label.split(" · ") == list(terms[:3])
        for term in terms[:3]:
            share_in = sum(term in tok for tok in inside) / len(inside)
            share_out = sum(term in tok for tok in outside) / len(outside)
            pairs += 1
            wins += share_in > share_out
    assert wins == pairs, f"{wins}/{pairs} label terms are more frequent inside their topic"


def test_incremental_assign_covers_only_new_interactions(built):
    stack, settings, scope, embedder, result = built
    before = {r["message_id"]: r for r in _lake_rows(stack, "topic_assignments").to_pylist()}
    # Three real prompts from another source, logged as new oasst1 answers through the SDK.
    inter = _lake_rows(stack, "interactions")
    hh = inter.filter(pc.equal(inter["source"], "replay:hh_rlhf")).slice(0, 3).to_pylist()
    client = stack.client()
    ids = []
    for k, rec in enumerate(hh):
        ids.append(client.log_interaction(conversation_id=f"topics-test-{k}", prompt=rec["prompt"],
                                          response=rec["response"], model="topics-test", app="oasst1"))
    assert client.flush(30)
    client.close()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        con = store.connect(stack.catalog(), stack.lake)
        if con.execute(f"SELECT count(*) FROM interactions WHERE message_id IN ({','.join('?' * len(ids))})", ids).fetchone()[0] == 3:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the new interactions did not reach the lake")
    out = assign(stack.catalog(), stack.lake, settings, scope, embedder)
    assert out.model_version == result.model_version and out.assigned == 3 and out.encoded <= 3
    after = _lake_rows(stack, "topic_assignments").to_pylist()
    new = [r for r in after if r["message_id"] not in before]
    assert sorted(r["message_id"] for r in new) == sorted(ids)
    assert {r["message_id"]: r for r in after if r["message_id"] in before} == before  # earlier rows untouched
    con = store.connect(stack.catalog(), stack.lake)
    centroids = np.asarray([c for (c,) in con.execute("SELECT centroid FROM current_topics ORDER BY topic_id").fetchall()],
                           dtype=np.float32)
    expected, _ = nearest(embedder.encode([_last_user(r["prompt"]) for r in hh]), centroids)
    assert [next(n["topic_id"] for n in new if n["message_id"] == i) for i in ids] == list(expected)
    assert assign(stack.catalog(), stack.lake, settings, scope, embedder).assigned == 0


def test_drift_same_distribution_vs_different_sources(built):
    stack, settings, _, embedder, _ = built
    con = store.connect(stack.catalog(), stack.lake)
    oasst = embedder.embed(window_texts(con, None, None, "i.app = 'oasst1' AND i.source = 'replay:oasst1'"))
    perm = np.random.default_rng(1).permutation(len(oasst))
    half = len(oasst) // 2
    same = mmd_test(oasst[perm[:half]], oasst[perm[half:]], permutations=300)
    assert same.p_value > 0.05 and abs(same.mmd2) < 0.002  # not rejected at the 5 % level
    # Time windows: oasst1's answers are dated Jan–Apr 2023, Tulu's human evaluation May 2023.
    from datetime import UTC, datetime

    diff = drift_between(con, (datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 5, 1, tzinfo=UTC)),
                         (datetime(2023, 5, 1, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC)), embedder,
                         settings.model_copy(update={"drift_permutations": 300}))
    assert diff.p_value < 0.01 and diff.mmd2 > 10 * abs(same.mmd2)
    assert diff.m_total > 100 and diff.n_total > 100


def test_drift_permutes_whole_conversations(built):
    """Two months of the same source: permuting single prompts calls it drift (a conversation's
    turns share a window and a topic), permuting whole conversations does not."""
    from datetime import UTC, datetime

    from feedback.topics.drift import window_groups

    stack, settings, _, embedder, _ = built
    con = store.connect(stack.catalog(), stack.lake)
    where = "i.app = 'oasst1'"
    (fa, ga), (ma, gm) = (window_groups(con, datetime(2023, 2, 1, tzinfo=UTC), datetime(2023, 3, 1, tzinfo=UTC), where),
                          window_groups(con, datetime(2023, 3, 1, tzinfo=UTC), datetime(2023, 4, 1, tzinfo=UTC), where))
    assert len(set(ga)) < len(ga) and len(set(gm)) < len(gm)  # conversations with several prompts
    X, Y = embedder.embed(fa), embedder.embed(ma)
    by_prompt = mmd_test(X, Y, permutations=300)
    by_conversation = mmd_test(X, Y, permutations=300, groups_x=ga, groups_y=gm)
    assert by_prompt.mmd2 == by_conversation.mmd2  # same statistic, different null distribution
    assert by_prompt.p_value < 0.05 < by_conversation.p_value


def test_topics_page_renders_topics_and_drift(built):
    stack, _, _, _, result = built
    params = {"range": "all", "app": "oasst1"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**stack.env, "FLYWHEEL_DASHBOARD_LAG_TIMEOUT_S": "1"}.items():
            mp.setenv(key, value)
        from dashboards.ui import shared_lake

        shared_lake.clear()
        at = AppTest.from_file(str(DASHBOARDS / "app.py"), default_timeout=120)
        at.query_params.update(params)
        at.run()
        at.switch_page("views/topics.py")
        at.query_params.update(params)
        at.run()
        shared_lake.clear()
    assert not at.exception, [e.value for e in at.exception]
    shown = at.dataframe[0].value
    con = store.connect(stack.catalog(), stack.lake)
    expected = kpis.topic_table(con, "i.app = ?", ["oasst1"])
    assert len(shown) == result.k == len(expected)
    assert list(shown["size"]) == list(expected["size"]) and list(shown["n"]) == list(expected["n"])
    assert not [c.value for c in at.caption if c.value.startswith("Drift not computed")]
    assert any(m.label == "Latest window vs reference" for m in at.metric)


def test_synth_seeds_come_from_the_topics_of_confusion(built):
    """`flywheel synth`'s default seeds: real prompts assigned to the lowest-satisfaction topics."""
    from finetune.synth import seeds

    stack, _, _, _, _ = built
    con = store.connect(stack.catalog(), stack.lake)
    worst = kpis.confusion(kpis.topic_table(con, min_n=5), min_n=5, limit=2)
    picked = seeds.from_topic(stack.catalog(), "confusion", 8, lake=stack.lake, max_topics=2, min_n=5)
    assert picked.source == "topic:confusion" and 0 < len(picked.seeds) <= 8
    topic_of = dict(con.execute("SELECT message_id, topic_id FROM current_assignments").fetchall())
    assert {topic_of[s.message_id] for s in picked.seeds} <= set(worst["topic_id"])
    assert all(str(s.topic_id) == str(topic_of[s.message_id]) for s in picked.seeds)
