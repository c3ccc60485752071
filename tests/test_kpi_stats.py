"""Tests for feedback.kpi.stats (intervals and comparisons from counts/sums) and feedback.kpi.sentiment."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from scipy import stats as sp

from feedback.kpi.sentiment import NEGATIVE_THRESHOLD, VaderScorer, is_negative, load_scorer
from feedback.kpi.stats import compare_means, compare_proportions, mean, proportion


def _wilson(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson (1927) score interval written out from first principles."""
    z = statistics.NormalDist().inv_cdf(1 - alpha / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _sums(xs: list[float]) -> tuple[int, float, float]:
    return len(xs), sum(xs), sum(x * x for x in xs)


# ------------------------------------------------------------------------------------------ proportion


def test_wilson_matches_formula_and_textbook_value():
    est = proportion(81, 263)
    low, high = _wilson(81, 263)
    assert est.value == pytest.approx(81 / 263, abs=1e-12)
    assert est.ci_low == pytest.approx(low, abs=1e-9)
    assert est.ci_high == pytest.approx(high, abs=1e-9)
    # Newcombe (1998, Stat Med 17:857) worked example: 81/263 -> 0.2553 to 0.3662.
    assert round(est.ci_low, 4) == 0.2553
    assert round(est.ci_high, 4) == 0.3662
    assert est.n == 263


@pytest.mark.parametrize("s,n", [(1, 2), (3, 7), (50, 100), (999, 1000), (17, 20)])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_wilson_contains_point_and_stays_in_unit_interval(s, n, alpha):
    est = proportion(s, n, alpha)
    low, high = _wilson(s, n, alpha)
    assert 0.0 <= est.ci_low <= est.value <= est.ci_high <= 1.0
    assert est.ci_low == pytest.approx(low, abs=1e-9)
    assert est.ci_high == pytest.approx(high, abs=1e-9)


def test_wilson_narrows_with_confidence_level():
    wide, narrow = proportion(30, 100, 0.01), proportion(30, 100, 0.2)
    assert wide.ci_low < narrow.ci_low and wide.ci_high > narrow.ci_high


def test_proportion_edges():
    zero = proportion(0, 10)
    assert zero.value == 0.0 and zero.ci_low == 0.0
    assert zero.ci_high == pytest.approx(_wilson(0, 10)[1], abs=1e-9)
    assert 0.2 < zero.ci_high < 0.35  # a real upper bound, unlike Wald's degenerate [0, 0]
    full = proportion(10, 10)
    assert full.value == 1.0 and full.ci_high == 1.0
    assert full.ci_low == pytest.approx(_wilson(10, 10)[0], abs=1e-9)
    assert full.ci_low == pytest.approx(1 - zero.ci_high, abs=1e-12)
    empty = proportion(0, 0)
    assert (empty.value, empty.ci_low, empty.ci_high, empty.n) == (None, None, None, 0)


# ------------------------------------------------------------------------------------------ mean


def test_mean_interval_from_sums_matches_raw_data():
    xs = [2.5, 3.0, 4.25, 1.0, 5.5, 3.75, 2.0]
    n, total, total_sq = _sums(xs)
    est = mean(n, total, total_sq)
    m, s = statistics.mean(xs), statistics.stdev(xs)
    half = sp.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    assert est.value == pytest.approx(m, abs=1e-12)
    assert est.ci_low == pytest.approx(m - half, abs=1e-9)
    assert est.ci_high == pytest.approx(m + half, abs=1e-9)
    # same as scipy's own t interval on the raw sample
    low, high = sp.t.interval(0.95, n - 1, loc=m, scale=sp.sem(xs))
    assert (est.ci_low, est.ci_high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    assert est.n == n


def test_mean_edges():
    assert mean(0, 0.0, 0.0) == mean(0, 0.0, 0.0, 0.1)
    assert mean(0, 0.0, 0.0).value is None
    one = mean(1, 4.0, 16.0)
    assert one.value == 4.0 and one.ci_low is None and one.ci_high is None
    # identical values: the variance from sums can come out as -1e-17; it must clamp to a zero-width interval
    xs = [0.1] * 10
    const = mean(*_sums(xs))
    assert const.ci_low == pytest.approx(0.1) and const.ci_high == pytest.approx(0.1)
    assert not math.isnan(const.ci_low)


# ------------------------------------------------------------------------------------------ two proportions


def test_compare_proportions_clear_difference():
    c = compare_proportions(90, 100, 60, 100)
    assert c.difference == pytest.approx(0.3)
    assert c.p_value < 0.001
    assert 0 < c.ci_low < c.difference < c.ci_high
    # pooled z by hand: p̄ = 0.75, z = 0.3 / sqrt(0.75·0.25·0.02)
    z = 0.3 / math.sqrt(0.75 * 0.25 * (1 / 100 + 1 / 100))
    assert c.p_value == pytest.approx(2 * statistics.NormalDist().cdf(-z), rel=1e-9)
    assert c.a == proportion(90, 100) and c.b == proportion(60, 100)
    assert "Newcombe" in c.method and "z-test" in c.method


def test_compare_proportions_equal():
    c = compare_proportions(30, 100, 30, 100)
    assert c.difference == 0.0
    assert c.p_value == pytest.approx(1.0)
    assert c.ci_low < 0 < c.ci_high
    assert c.ci_low == pytest.approx(-c.ci_high)


@pytest.mark.parametrize(
    "counts,expected",
    [  # Newcombe (1998, Stat Med 17:873), Table II, method 10
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ],
)
def test_newcombe_hybrid_score_published_values(counts, expected):
    c = compare_proportions(*counts)
    assert (round(c.ci_low, 4), round(c.ci_high, 4)) == expected


def test_newcombe_matches_wilson_combination():
    s1, n1, s2, n2 = 56, 70, 48, 80
    p1, p2 = s1 / n1, s2 / n2
    (l1, u1), (l2, u2) = _wilson(s1, n1), _wilson(s2, n2)
    c = compare_proportions(s1, n1, s2, n2)
    assert c.ci_low == pytest.approx(p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), abs=1e-9)
    assert c.ci_high == pytest.approx(p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2), abs=1e-9)


def test_compare_proportions_edges():
    empty = compare_proportions(0, 0, 5, 10)
    assert (empty.difference, empty.ci_low, empty.ci_high, empty.p_value) == (None, None, None, None)
    assert empty.a.value is None and empty.b.value == 0.5
    assert compare_proportions(3, 10, 0, 0).difference is None
    both_zero = compare_proportions(0, 10, 0, 20)  # pooled rate 0: z is 0/0, difference is exactly 0
    assert both_zero.difference == 0.0 and both_zero.p_value == 1.0
    assert both_zero.ci_low < 0 < both_zero.ci_high
    extreme = compare_proportions(10, 10, 0, 20)
    assert -1.0 <= extreme.ci_low <= extreme.difference <= extreme.ci_high <= 1.0
    assert extreme.p_value < 1e-6


# ------------------------------------------------------------------------------------------ two means


@pytest.mark.parametrize(
    "xs,ys",
    [
        ([4.1, 5.2, 6.3, 5.0, 4.8, 5.5], [3.0, 2.2, 4.1, 3.3, 2.9, 3.8, 2.0, 3.1]),
        ([1.0, 2.0, 3.0], [1.5, 2.5, 9.0, -4.0, 0.0]),
        ([10.0, 10.5, 9.5, 10.2], [10.1, 9.9, 10.3, 10.0, 9.7]),
    ],
)
def test_compare_means_matches_welch_on_raw_samples(xs, ys):
    c = compare_means(*_sums(xs), *_sums(ys))
    ref = sp.ttest_ind(xs, ys, equal_var=False)
    assert c.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert c.difference == pytest.approx(statistics.mean(xs) - statistics.mean(ys), abs=1e-12)
    ci = ref.confidence_interval(0.95)  # scipy computes Welch–Satterthwaite df from the raw samples
    assert c.ci_low == pytest.approx(float(ci.low), abs=1e-9)
    assert c.ci_high == pytest.approx(float(ci.high), abs=1e-9)
    assert "Welch" in c.method


def test_compare_means_alpha_and_edges():
    xs, ys = [4.1, 5.2, 6.3, 5.0], [3.0, 2.2, 4.1, 3.3, 2.9]
    c90 = compare_means(*_sums(xs), *_sums(ys), alpha=0.10)
    c99 = compare_means(*_sums(xs), *_sums(ys), alpha=0.01)
    assert c99.ci_low < c90.ci_low < c90.difference < c90.ci_high < c99.ci_high
    assert c90.p_value == c99.p_value
    none = compare_means(0, 0.0, 0.0, 3, 6.0, 14.0)
    assert none.difference is None and none.p_value is None and none.ci_low is None
    single = compare_means(1, 4.0, 16.0, 3, 6.0, 14.0)
    assert single.difference == 2.0 and single.p_value is None and single.ci_low is None
    flat = compare_means(*_sums([2.0, 2.0]), *_sums([3.0, 3.0, 3.0]))  # zero standard error
    assert flat.difference == -1.0 and flat.p_value is None


# ------------------------------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    "call",
    [
        lambda: proportion(-1, 10),
        lambda: proportion(1, -10),
        lambda: proportion(11, 10),
        lambda: proportion(1.5, 10),
        lambda: proportion(1, 10, alpha=0.0),
        lambda: proportion(1, 10, alpha=1.5),
        lambda: mean(-1, 0.0, 0.0),
        lambda: mean(3, 1.0, -1.0),
        lambda: mean(3, float("nan"), 1.0),
        lambda: compare_proportions(5, 4, 1, 10),
        lambda: compare_proportions(1, 10, -1, 10),
        lambda: compare_proportions(1, 10, 1, -10),
        lambda: compare_means(-2, 1.0, 1.0, 3, 1.0, 1.0),
        lambda: compare_means(2, 1.0, 1.0, -3, 1.0, 1.0),
        lambda: compare_means(2, 1.0, 1.0, 3, 1.0, 1.0, alpha=-0.1),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


# ------------------------------------------------------------------------------------------ sentiment


class ConstantScorer:
    """A tiny custom scorer for load_scorer's import path."""

    name = "constant"

    def score(self, texts: list[str]) -> list[float]:
        return [0.25 for _ in texts]


class NoScore:
    name = "broken"


def _feedbackqa_comments(data_dir) -> dict[str, list[str]]:
    path = data_dir / "feedbackqa" / "WHO" / "feedback_valid.json"
    if not path.is_file():
        pytest.skip(f"FeedbackQA not available at {path}")
    by_rating: dict[str, list[str]] = {}
    for item in json.loads(path.read_text(encoding="utf-8")):
        for text, rating in zip(item["feedback"], item["rating"], strict=True):
            by_rating.setdefault(rating, []).append(text)
    return by_rating


def test_vader_separates_bad_from_excellent_feedbackqa(data_dir):
    by_rating = _feedbackqa_comments(data_dir)
    scorer = VaderScorer()
    assert scorer.name == "vader"
    bad, excellent = scorer.score(by_rating["Bad"]), scorer.score(by_rating["Excellent"])
    assert len(bad) == len(by_rating["Bad"]) > 20 and len(excellent) == len(by_rating["Excellent"]) > 20
    assert all(-1.0 <= s <= 1.0 for s in bad + excellent)
    assert statistics.mean(bad) < statistics.mean(excellent)
    # and the negative share, with the conventional threshold, is higher for "Bad"
    assert sum(map(is_negative, bad)) / len(bad) > sum(map(is_negative, excellent)) / len(excellent)


def test_vader_scores_obvious_texts_and_threshold():
    scorer = VaderScorer()
    pos, neg, empty = scorer.score(["This answer is great, thank you!", "Terrible, useless and wrong.", ""])
    assert pos > 0.5 and neg < -0.5 and empty == 0.0
    assert scorer.score([]) == []
    assert NEGATIVE_THRESHOLD == -0.05
    assert is_negative(-0.05) and is_negative(neg) and not is_negative(-0.049) and not is_negative(pos)


def test_load_scorer_default_and_custom():
    assert isinstance(load_scorer(None), VaderScorer)
    assert isinstance(load_scorer("vader"), VaderScorer)
    custom = load_scorer("tests.test_kpi_stats:ConstantScorer")
    assert isinstance(custom, ConstantScorer) and custom.name == "constant"
    assert custom.score(["a", "b"]) == [0.25, 0.25]


@pytest.mark.parametrize(
    "spec",
    [
        "no_such_package_xyz.module:Scorer",
        "tests.test_kpi_stats:DoesNotExist",
        "tests.test_kpi_stats:NoScore",
        "tests.test_kpi_stats",
        ":ConstantScorer",
        "textblob",
    ],
)
def test_load_scorer_bad_spec(spec):
    with pytest.raises(ValueError):
        load_scorer(spec)
