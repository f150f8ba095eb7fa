"""Metrics against hand-computed values, edge cases included (pure: runs in milliseconds)."""

import json
import math

import numpy as np
import pytest

from agrl.evaluation.metrics import (
    Prediction,
    accuracy,
    bootstrap_interval,
    confusion_matrix,
    expected_calibration_error,
    expected_relevance,
    good_f1,
    label_metrics,
    macro_f1,
    ndcg_at_k,
    ndcg_by_query,
    per_class_f1,
    slices,
    summarize,
    top_label,
)
from agrl.data.schemes import load_scheme

SCHEME = load_scheme("default")  # codes 4, 3, 2, 1; good = {4, 3}
LABELS = SCHEME.codes


def approx(expected):
    return None if expected is None else pytest.approx(expected)


@pytest.mark.parametrize(
    "gold, pred, expected",
    [
        ([4, 3, 2, 1], [4, 3, 2, 1], 1.0),
        ([4, 3, 2, 1], [4, 3, 1, None], 0.5),  # a rejected completion (None) is wrong
        ([4, 4], [None, None], 0.0),  # all rejected
        ([], [], None),  # empty input: undefined, not a division error
    ],
)
def test_accuracy(gold, pred, expected):
    assert accuracy(gold, pred) == approx(expected)


@pytest.mark.parametrize(
    "gold, pred, expected_f1, expected_macro",
    [
        # 4: tp1 fn1 -> 2/3; 2: tp2 fp1 -> 4/5; 3 and 1 neither gold nor predicted -> None, left out of the mean
        ([4, 4, 2, 2], [4, 2, 2, 2], {4: 2 / 3, 3: None, 2: 0.8, 1: None}, (2 / 3 + 0.8) / 2),
        # class 3 is never predicted: precision 0/0 must give F1 0, not an error
        ([4, 3], [4, 4], {4: 2 / 3, 3: 0.0, 2: None, 1: None}, 1 / 3),
        # a single class in the data, all right
        ([4, 4, 4], [4, 4, 4], {4: 1.0, 3: None, 2: None, 1: None}, 1.0),
        # an invalid prediction is a miss of its gold class and a false positive of none
        ([4, 4], [4, None], {4: 2 / 3, 3: None, 2: None, 1: None}, 2 / 3),
        # a class predicted but never gold counts in the macro mean with F1 0 (sklearn's label set)
        ([4, 4], [4, 1], {4: 2 / 3, 3: None, 2: None, 1: 0.0}, 1 / 3),
        # empty input: every class undefined
        ([], [], {4: None, 3: None, 2: None, 1: None}, None),
    ],
)
def test_per_class_and_macro_f1(gold, pred, expected_f1, expected_macro):
    got = per_class_f1(gold, pred, LABELS)
    assert got == {code: approx(v) for code, v in expected_f1.items()}
    assert macro_f1(gold, pred, LABELS) == approx(expected_macro)


@pytest.mark.parametrize(
    "gold, pred, expected",
    [
        # good = {4, 3}: gold good T T F F, pred good T F F T -> tp 1, fp 1, fn 1 -> 2/4
        ([4, 3, 2, 1], [3, 2, 2, 4], 0.5),
        # confusing the two good levels is still a good-vs-bad hit
        ([4, 3], [3, 4], 1.0),
        # rejected completions land on the wrong side: a miss for good gold, a false alarm for bad gold
        ([4, 1], [None, None], 0.0),
        # no good gold and no good prediction: undefined
        ([1, 2], [2, 1], None),
        ([], [], None),
    ],
)
def test_good_f1(gold, pred, expected):
    assert good_f1(gold, pred, SCHEME.good) == approx(expected)


def test_confusion_matrix_rows_gold_columns_pred_plus_invalid():
    matrix = confusion_matrix([4, 4, 3, 1], [4, None, 4, 1], LABELS)
    assert matrix.tolist() == [
        [1, 0, 0, 0, 1],  # gold 4: one right, one rejected
        [1, 0, 0, 0, 0],  # gold 3 predicted 4
        [0, 0, 0, 0, 0],  # no gold 2
        [0, 0, 0, 1, 0],
    ]


def test_confusion_matrix_rejects_foreign_gold_label():
    with pytest.raises(ValueError, match="not among the scheme"):
        confusion_matrix([7], [4], LABELS)


@pytest.mark.parametrize(
    "confidence, correct, expected",
    [
        # bin 0.9: acc 1 vs conf .9 (gap .1, 2 items); bin 0.6: acc .5 vs conf .6 (gap .1, 2 items) -> .1
        ([0.9, 0.9, 0.6, 0.6], [True, True, True, False], 0.1),
        ([0.5, 0.5], [True, False], 0.0),  # perfectly calibrated within its bin
        ([1.0], [True], 0.0),  # confidence 1.0 falls in the last bin, not off the end
        ([0.95, 0.05], [False, True], 0.95),  # confidently wrong and timidly right
        # .1 and .19 share the bin [.1, .2): mean conf .145, acc .5 -> |.5 - .145|
        ([0.1, 0.19], [True, False], 0.355),
        ([], [], None),
    ],
)
def test_expected_calibration_error(confidence, correct, expected):
    assert expected_calibration_error(confidence, correct) == approx(expected)


@pytest.mark.parametrize(
    "gains, scores, k, expected",
    [
        ([3, 2, 0], [3.5, 2.1, 1.0], 10, 1.0),  # ideal order
        ([2, 0], [1.0, 2.0], 10, (1 / math.log2(3) * 2) / 2),  # reversed: the gain-2 item at rank 2
        ([2, 0], [1.0, 1.0], 10, (1 + 1 / math.log2(3)) / 2),  # a tie shares the mean gain (1) at both ranks
        ([0, 1], [2.0, 1.0], 1, 0.0),  # the cutoff: only rank 1 counts, and it holds gain 0
        ([0, 0], [2.0, 1.0], 10, None),  # no relevant item: ideal DCG 0, undefined
    ],
)
def test_ndcg_at_k(gains, scores, k, expected):
    assert ndcg_at_k(gains, scores, k) == approx(expected)


def test_ndcg_by_query_uses_expected_relevance_and_skips_degenerate_queries():
    def item(query, gold, posterior):
        return Prediction(gold=gold, pred=gold, query=query, posterior=posterior)

    preds = [
        # q1: gold 4 scored ER 3.0, gold 2 scored ER 3.5 -> reversed; gains 3 and 1
        item("q1", 4, {4: 0.5, 2: 0.5}),
        item("q1", 2, {4: 0.5, 3: 0.5}),
        item("q2", 4, {4: 1.0}),  # a single item: no ranking to judge
        item("q3", 1, {4: 1.0}),
        item("q3", 1, {1: 1.0}),  # every item at the lowest level: no ideal
        item("q4", 3, None),
        item("q4", 2, None),  # no posterior: not scored
    ]
    got = ndcg_by_query(preds, SCHEME)
    assert set(got) == {"q1"}
    assert got["q1"] == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))


@pytest.mark.parametrize(
    "posterior, top, er",
    [
        ({4: 0.2, 3: 0.6, 2: 0.2}, (3, 0.6), 3.0),
        ({4: 1.0, 1: 1.0}, (4, 0.5), 2.5),  # unnormalised: renormalised; a tie goes to the first level
    ],
)
def test_posterior_summaries(posterior, top, er):
    code, confidence = top_label(posterior)
    assert (code, confidence) == (top[0], pytest.approx(top[1]))
    assert expected_relevance(posterior) == pytest.approx(er)


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    values = [float(i % 2) for i in range(200)]

    def mean(index):
        return sum(values[i] for i in index) / len(index)

    first = bootstrap_interval(len(values), mean, resamples=300, seed=1)
    assert first == bootstrap_interval(len(values), mean, resamples=300, seed=1)  # same seed, same interval
    assert first != bootstrap_interval(len(values), mean, resamples=300, seed=2)
    lo, hi = first
    assert lo < 0.5 < hi and hi - lo < 0.2  # ~ +-1.96 * sqrt(.25 / 200) = +-0.07
    assert bootstrap_interval(5, lambda index: 3.0, resamples=50) == (3.0, 3.0)  # constant statistic
    assert bootstrap_interval(0, mean, resamples=50) is None  # nothing to resample
    assert bootstrap_interval(5, lambda index: None, resamples=50) is None  # undefined on every resample


def _preds():
    return [
        Prediction(4, 4, "a", "q1", "brand", True, 1.0, {4: 0.8, 3: 0.2}),
        Prediction(3, 4, "b", "q1", "brand", False, 0.5, {4: 0.6, 3: 0.4}),
        Prediction(2, None, "c", "q2", "negation", None, None, {2: 0.9, 1: 0.1}),
        Prediction(1, 1, "d", "q2", None, True, None, {1: 0.7, 2: 0.3}),
    ]


def test_label_metrics_by_hand():
    got = label_metrics(_preds(), SCHEME)
    assert got["accuracy"] == pytest.approx(0.5)
    assert got["format_valid"] == pytest.approx(0.75)
    assert got["adherence"] == pytest.approx(2 / 3)  # over the three valid completions
    assert got["step_accuracy"] == pytest.approx(
        0.75
    )  # 1.0 and 0.5; the valid one without gold steps is left out
    # per class: 4 tp1 fp1 -> 2/3; 3 fn1 -> 0; 2 (rejected) fn1 -> 0; 1 tp1 -> 1
    assert got["macro_f1"] == pytest.approx((2 / 3 + 0 + 0 + 1) / 4)
    # good: gold T T F F; pred T T (rejected bad -> wrong side) T F -> tp 2, fp 1 -> 4/5
    assert got["good_f1"] == pytest.approx(0.8)
    assert got["posterior_accuracy"] == pytest.approx(0.75)  # argmaxes 4, 4, 2, 1
    # bins: .8 (hit), .6 (miss) -> |1-.8| + |0-.6|; .9 (hit) -> .1; .7 (hit) -> .3; total 1.2 / 4
    assert got["ece"] == pytest.approx(0.3)


def test_summarize_is_json_and_has_every_part():
    summary = summarize(_preds(), SCHEME, resamples=200, seed=0)
    json.dumps(summary)  # no numpy scalars leak out
    assert summary["n"] == 4
    assert summary["confusion"]["matrix"][2] == [0, 0, 0, 0, 1]  # the rejected gold-2 record
    assert summary["counts"] == {
        "n": 4,
        "valid": 3,
        "with_posterior": 4,
        "step_scored": 2,
        "ndcg_queries": 2,
    }
    assert set(summary["intervals"]) == set(summary["metrics"])
    for name in ("accuracy", "format_valid", "adherence", "step_accuracy", "posterior_accuracy"):
        value, (lo, hi) = summary["metrics"][name], summary["intervals"][name]  # means: inside their interval
        assert lo - 1e-9 <= value <= hi + 1e-9, name
    assert set(summary["slices"]) == {"brand", "negation", "unspecified"}
    assert summary["slices"]["brand"]["accuracy"] == pytest.approx(0.5)
    assert summary["slices"]["negation"]["format_valid"] == 0.0
    assert summary["slices"]["negation"]["adherence"] is None  # no valid completion in the slice


@pytest.mark.parametrize("preds", [[], [Prediction(4, 4)]])
def test_summarize_degenerate_inputs(preds):
    # empty input, and one record with no query, family or posterior: no error, undefined -> None
    summary = summarize(preds, SCHEME, resamples=50)
    assert summary["metrics"]["ndcg@10"] is None and summary["intervals"]["ndcg@10"] is None
    assert summary["metrics"]["ece"] is None
    assert summary["n"] == len(preds)


def test_empty_slice_gives_no_entry_and_undefined_metrics():
    assert slices([], SCHEME) == {}
    assert all(value is None for value in label_metrics([], SCHEME).values())


def test_ece_interval_contains_its_estimate_where_the_percentile_interval_does_not():
    """Exactly calibrated predictions (confidence 0.75, 3000 of 4000 right): ECE is 0, every resample's
    ECE is above it, so their percentile interval excludes it. The reported interval contains it (issue 11)."""
    from agrl.evaluation.metrics import centred_interval, expected_calibration_error, percentile_interval, resamples_of

    conf = np.full(4000, 0.75)
    hit = np.arange(4000) < 3000
    estimate = expected_calibration_error(conf, hit)
    assert estimate == pytest.approx(0.0)
    values = [expected_calibration_error(conf[i], hit[i]) for i in resamples_of(4000, 300, seed=1)]
    lo, hi = percentile_interval(values)
    assert not lo <= estimate <= hi  # the contradiction the issue found
    lo, hi = centred_interval(estimate, values)
    assert 0.0 <= lo <= estimate <= hi


# ---------------------------------------------------------------------------- graded metrics, score files


def test_spearman_matches_scipy_with_ties_and_is_zero_for_a_constant():
    from scipy.stats import spearmanr

    from agrl.evaluation.metrics import rmse, spearman

    rng = np.random.default_rng(0)
    score, grade = rng.integers(0, 4, 50).astype(float), rng.choice([1.0, 1.33, 2.0, 2.67, 3.0], 50)
    assert spearman(score, grade) == pytest.approx(spearmanr(score, grade).statistic)
    assert spearman(np.full(5, 2.0), np.arange(5.0)) == 0.0 and spearman([1.0], [2.0]) is None
    assert rmse(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 1.0


def test_summarize_reports_rmse_and_spearman_only_when_records_carry_a_grade():
    scheme = load_scheme("three_level")
    posterior = [{1: 0.8, 2: 0.1, 3: 0.1}, {1: 0.1, 2: 0.8, 3: 0.1}, {1: 0.1, 2: 0.1, 3: 0.8}, {1: 0.3, 2: 0.4, 3: 0.3}]
    graded = [Prediction(gold=g, pred=g, query="q", posterior=p, grade=float(g)) for g, p in zip((1, 2, 3, 2), posterior)]
    summary = summarize(graded, scheme, resamples=50)
    expected = np.sqrt(np.mean([(expected_relevance(p) - g) ** 2 for p, g in zip(posterior, (1, 2, 3, 2))]))
    assert summary["metrics"]["rmse"] == pytest.approx(expected)
    assert summary["metrics"]["spearman"] == pytest.approx(1.0) and summary["intervals"]["rmse"] is not None
    plain = summarize([Prediction(gold=p.gold, pred=p.pred, query="q", posterior=p.posterior) for p in graded], scheme)
    assert "rmse" not in plain["metrics"] and "spearman" not in plain["metrics"]


def test_score_metrics_moved_here_read_scores_against_gold_and_grade(tmp_path):
    from agrl.evaluation.metrics import score_metrics, score_metrics_line

    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "query": "q", "product": {"title": f"t{i}"}, "label": g,
                                          "grade": float(g)}) + "\n" for i, g in enumerate((1, 2, 3, 3))))
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps({"id": f"r{i}", "label": g, "score": s}) + "\n"
                              for i, (g, s) in enumerate(((1, 1.0), (2, 2.5), (3, 3.0)))))  # r3 not scored
    got = score_metrics(scores, source, "three_level")
    assert got["n"] == 4 and got["scored"] == 3 and got["accuracy"] == 0.75
    assert got["rmse"] == pytest.approx(np.sqrt(0.25 / 3)) and got["spearman"] == pytest.approx(1.0)
    assert "RMSE 0.289, Spearman 1.000" in score_metrics_line(got)
