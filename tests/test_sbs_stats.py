"""SBS statistics against hand-computed cases (sbs/stats.py).

OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_sbs_stats.py
"""

import pytest

from agrl.sbs.stats import cohen_pairs, fleiss_kappa, judge_accuracy, majority_label, summarize, win_rate


def _answers(table):
    """{item_id: [(rater, verdict, label)]} -> answer rows."""
    return [{"item_id": i, "rater": r, "verdict": v, "label": lab} for i, rows in table.items() for r, v, lab in rows]


def _items(n, weights=None, labels=None, strata=None):
    weights = weights or {}
    labels = labels or {}
    return [{"id": i, "weight": weights.get(i, 1.0), "stratum": (strata or {}).get(i),
             "a": {"label": labels.get(i, (4, 4))[0]}, "b": {"label": labels.get(i, (4, 4))[1]}}
            for i in range(1, n + 1)]


def test_win_rate_counts_ties_half_and_averages_raters_within_an_item():
    # item 1: B (1); item 2: A (0); item 3: both good (1/2); item 4: one B, one A (1/2) -> (1 + 0 + .5 + .5) / 4
    answers = _answers({1: [("ana", "b", None)], 2: [("ana", "a", None)], 3: [("ana", "both_good", None)],
                        4: [("ana", "b", None), ("bo", "a", None)], 5: []})
    summary = summarize(_items(5), answers, resamples=200)
    assert summary["answered_items"] == 4
    assert summary["overall"]["win_rate"]["value"] == pytest.approx(0.5)
    assert summary["overall"]["counts"] == {"b": 2, "a": 2, "both_good": 1, "both_bad": 0}


def test_weights_count_down_weighted_items_more():
    # item 1 (weight 4: an agreed pair kept with probability 1/4) says B; items 2, 3 say A and tie:
    # (4 * 1 + 1 * 0 + 1 * 0.5) / 6
    answers = _answers({1: [("ana", "b", None)], 2: [("ana", "a", None)], 3: [("ana", "both_bad", None)]})
    summary = summarize(_items(3, weights={1: 4.0}), answers, resamples=200)
    assert summary["overall"]["win_rate"]["value"] == pytest.approx(4.5 / 6)


def test_bootstrap_interval_is_sane():
    all_b = win_rate([1.0] * 30, [1.0] * 30)
    assert all_b["value"] == 1.0 and all_b["interval"] == (1.0, 1.0)
    mixed = [1.0] * 20 + [0.0] * 10
    small, large = win_rate(mixed, [1.0] * 30), win_rate(mixed * 10, [1.0] * 300)
    for stat in (small, large):
        lo, hi = stat["interval"]
        assert 0.0 <= lo < stat["value"] < hi <= 1.0
    assert (large["interval"][1] - large["interval"][0]) < (small["interval"][1] - small["interval"][0]) / 2
    assert win_rate([], [])["interval"] is None


def test_fleiss_kappa_hand_cases():
    assert fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)  # full agreement
    # P_i = 0 for both, p = (1/2, 1/2), P_e = 1/2: (0 - 1/2) / (1 - 1/2) = -1
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)
    # Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    # unequal raters per item: item 1 three raters (2 + 1), item 2 two (0 + 2).
    # P_1 = (4 + 1 - 3) / 6 = 1/3, P_2 = 1; p = (2/5, 3/5), P_e = 13/25; (2/3 - 13/25) / (12/25) = 11/36
    assert fleiss_kappa([[2, 1], [0, 2]]) == pytest.approx(11 / 36)
    assert fleiss_kappa([[3, 0], [2, 0]]) is None  # one category only: undefined
    assert fleiss_kappa([]) is None


def test_cohen_kappa_per_pair_of_raters():
    # ana: a a b b, bo: a b b b on the same four items. p_o = 3/4; p_e = 1/2 * 1/4 + 1/2 * 3/4 = 1/2; kappa = 1/2
    answers = _answers({1: [("ana", "a", None), ("bo", "a", None)], 2: [("ana", "a", None), ("bo", "b", None)],
                        3: [("ana", "b", None), ("bo", "b", None)], 4: [("ana", "b", None), ("bo", "b", None)],
                        5: [("cy", "b", None)]})
    (pair,) = cohen_pairs(answers)  # cy shares no items: no pair
    assert pair["raters"] == ["ana", "bo"] and pair["items"] == 4
    assert pair["kappa"] == pytest.approx(0.5) and pair["agreement"] == pytest.approx(0.75)
    summary = summarize(_items(5), answers, resamples=50)
    # Fleiss over the same 4 items: P_i = 1, 0, 1, 1 -> 3/4; p(a) = 3/8, p(b) = 5/8 -> P_e = 34/64; kappa = 7/15
    assert summary["agreement"]["items"] == 4
    assert summary["agreement"]["fleiss_kappa"] == pytest.approx(7 / 15)


def test_accuracy_against_the_raters_majority_label():
    assert majority_label([3, 3, 4]) == 3 and majority_label([3, 4]) is None and majority_label([]) is None
    # truth: item 1 -> 4, item 2 -> 2 (2 of 3), item 3 -> tie (left out), item 4 -> no label given
    answers = _answers({1: [("ana", "b", 4)], 2: [("ana", "a", 2), ("bo", "a", 2), ("cy", "a", 3)],
                        3: [("ana", "b", 1), ("bo", "b", 2)], 4: [("ana", "b", None)]})
    items = _items(4, labels={1: (4, 4), 2: (4, 2), 3: (1, 1), 4: (4, 1)})
    accuracy = judge_accuracy(items, answers, resamples=200, min_items=1)
    assert accuracy["items"] == 2 and accuracy["tied"] == 1
    assert accuracy["a"]["value"] == pytest.approx(0.5) and accuracy["b"]["value"] == pytest.approx(1.0)
    assert accuracy["b"]["interval"] == (1.0, 1.0)
    assert judge_accuracy(items, answers, resamples=200)["b"]["interval"] is None  # 2 items: under the minimum


def test_strata_are_broken_down():
    answers = _answers({1: [("ana", "b", None)], 2: [("ana", "b", None)], 3: [("ana", "a", None)]})
    summary = summarize(_items(3, strata={1: "brand", 2: "brand", 3: "negation"}), answers, resamples=50)
    assert summary["strata"]["brand"]["win_rate"]["value"] == 1.0
    assert summary["strata"]["negation"]["win_rate"]["value"] == 0.0
    assert summary["overall"]["win_rate"]["value"] == pytest.approx(2 / 3)


def test_no_interval_below_the_minimum_of_items():
    """One answer once gave a win rate of 0.000 with the interval [0.000, 0.000]."""
    summary = summarize(_items(1), _answers({1: [("ana", "a", None)]}), resamples=50)
    assert summary["overall"]["win_rate"] == {"value": 0.0, "interval": None} and summary["min_items"] == 10
    assert win_rate([1.0] * 9 + [0.0], [1.0] * 10, resamples=50)["interval"] is not None
    assert win_rate([1.0] * 8 + [0.0], [1.0] * 9, resamples=50)["interval"] is None
    assert win_rate([1.0, 0.0], [1.0, 1.0], resamples=50, min_items=2)["interval"] is not None


def test_gsb_is_good_minus_bad_beside_the_win_rate():
    # items: B, B, A, both good, both bad, and one split B / both bad -> good = 2.5/6, bad = 1/6, same = 2.5/6
    answers = _answers({1: [("ana", "b", None)], 2: [("ana", "b", None)], 3: [("ana", "a", None)],
                        4: [("ana", "both_good", None)], 5: [("ana", "both_bad", None)],
                        6: [("ana", "b", None), ("bo", "both_bad", None)]})
    gsb = summarize(_items(6), answers, resamples=50)["overall"]["gsb"]
    assert (gsb["good"], gsb["same"], gsb["bad"]) == pytest.approx((2.5 / 6, 2.5 / 6, 1 / 6))
    assert gsb["value"] == pytest.approx(1.5 / 6)
    win = summarize(_items(6), answers, resamples=50)["overall"]["win_rate"]["value"]
    assert gsb["value"] == pytest.approx(2 * win - 1)


def test_gold_accuracy_per_rater_and_the_threshold_leaves_raters_out():
    items = _items(4)
    items[0]["gold"] = {"better": "b", "label": 4}
    items[1]["gold"] = {"better": "a", "label": None}
    answers = _answers({1: [("ana", "b", 4), ("bo", "a", 2)], 2: [("ana", "a", None), ("bo", "a", None)],
                        3: [("ana", "b", None), ("bo", "a", None)], 4: [("cy", "a", None)]})
    summary = summarize(items, answers, resamples=50)
    assert summary["gold"]["raters"]["ana"] == {"items": 2, "right": 2, "labels": 1, "labels_right": 1,
                                                     "accuracy": 1.0, "label_accuracy": 1.0}
    assert summary["gold"]["raters"]["bo"]["accuracy"] == 0.5 and "cy" not in summary["gold"]["raters"]
    assert summary["items"] == 2 and summary["overall"]["answers"] == 3  # gold items count only here
    strict = summarize(items, answers, resamples=50, min_gold_accuracy=0.75)
    assert strict["gold"]["left_out"] == ["bo"] and strict["raters"] == ["ana", "cy"]  # cy: no gold yet, kept
    assert strict["overall"]["counts"] == {"b": 1, "a": 1, "both_good": 0, "both_bad": 0}
