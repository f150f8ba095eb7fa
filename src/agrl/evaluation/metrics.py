"""Evaluation metrics for relevance judges (spec section 7): pure Python + numpy, no torch.

Label metrics (accuracy, per-class / macro / Good-F1, confusion), reasoning metrics (format-valid
rate, rule adherence, step accuracy), posterior metrics (ECE, NDCG@10 of expected relevance), graded
metrics where records carry a human grade (RMSE and Spearman of expected relevance against it),
per-family slices and seeded percentile-bootstrap 95% intervals; the metrics of one-pass scores and
baselines' predictions read from their files (`score_metrics`, for `agrl score` and `agrl run`). A rejected completion is the
prediction `None`: wrong, invalid, and never a positive prediction of any class.

    summary = summarize(predictions, load_scheme("default"), resamples=1000, seed=0)
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agrl.data.schemes import Scheme

INVALID = -1  # stands for a rejected completion in code arrays (scheme codes are 0-9)
HEADLINE = (
    "accuracy",
    "macro_f1",
    "good_f1",
    "format_valid",
    "adherence",
    "step_accuracy",
    "posterior_accuracy",
    "ece",
)


@dataclass(frozen=True)
class Prediction:
    """One evaluated record: gold label, parsed prediction and what the judge's output implied."""

    gold: int
    pred: int | None  # None: the parser rejected the completion
    id: str | None = None
    query: str = ""
    family: str | None = None
    adheres: bool | None = None  # None for a rejected completion
    step_accuracy: float | None = None  # rewards.step_accuracy (grade); None when rejected or without gold steps
    posterior: dict[int, float] | None = None  # one-pass label posterior (score.Scorer), if computed
    grade: float | None = None  # the record's human grade (e.g. Home Depot's mean), for RMSE and Spearman


# ---------------------------------------------------------------------------- label metrics


def _pred_codes(pred: Sequence[int | None]) -> np.ndarray:
    if isinstance(pred, np.ndarray):
        return pred.astype(int)
    return np.array([INVALID if p is None else p for p in pred], dtype=int)


def accuracy(gold: Sequence[int], pred: Sequence[int | None]) -> float | None:
    """Share of exact label matches; a rejected completion (None) is wrong. None on empty input."""
    if not len(gold):
        return None
    return float(np.mean(np.asarray(gold, dtype=int) == _pred_codes(pred)))


def confusion_matrix(gold: Sequence[int], pred: Sequence[int | None], labels: Sequence[int]) -> np.ndarray:
    """Counts, rows = gold label, columns = predicted label in `labels` order plus a last "invalid" column."""
    k = len(labels)
    lookup = np.full(11, k)  # index 10 (= -1, INVALID) maps to the invalid column
    lookup[list(labels)] = np.arange(k)
    gold_codes = np.asarray(gold, dtype=int)
    unknown = set(gold_codes.tolist()) - set(labels)
    if unknown:
        raise ValueError(f"gold labels {sorted(unknown)} are not among the scheme's levels {list(labels)}")
    rows, cols = lookup[gold_codes], lookup[_pred_codes(pred)]
    return np.bincount(rows * (k + 1) + cols, minlength=k * (k + 1)).reshape(k, k + 1)


def _f1_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN) per class; NaN where the class is neither gold nor predicted."""
    k = matrix.shape[0]
    tp = np.diag(matrix[:, :k]).astype(float)
    fp = matrix[:, :k].sum(axis=0) - tp  # the invalid column is no positive prediction
    fn = matrix.sum(axis=1) - tp  # invalid predictions are misses of their gold class
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def per_class_f1(
    gold: Sequence[int], pred: Sequence[int | None], labels: Sequence[int]
) -> dict[int, float | None]:
    """F1 of each label; 0 for a class never predicted (no division error), None if absent from both sides."""
    f1 = _f1_from_confusion(confusion_matrix(gold, pred, labels))
    return {code: (None if np.isnan(v) else float(v)) for code, v in zip(labels, f1)}


def macro_f1(gold: Sequence[int], pred: Sequence[int | None], labels: Sequence[int]) -> float | None:
    """Mean F1 over the classes present in gold or predictions (sklearn's default label set)."""
    return _macro(confusion_matrix(gold, pred, labels))


def _macro(matrix: np.ndarray) -> float | None:
    f1 = _f1_from_confusion(matrix)
    return None if np.all(np.isnan(f1)) else float(np.nanmean(f1))


def good_f1(gold: Sequence[int], pred: Sequence[int | None], good: set[int] | frozenset[int]) -> float | None:
    """Binary F1 of "good" (the scheme's good levels) vs the rest.

    A rejected completion counts as the wrong side (a miss for good gold, a false alarm for bad gold).
    None when there is neither a good gold label nor a good prediction.
    """
    gold_good = np.isin(np.asarray(gold, dtype=int), list(good))
    codes = _pred_codes(pred)
    pred_good = np.where(codes == INVALID, ~gold_good, np.isin(codes, list(good)))
    tp = int(np.sum(gold_good & pred_good))
    denom = 2 * tp + int(np.sum(~gold_good & pred_good)) + int(np.sum(gold_good & ~pred_good))
    return None if denom == 0 else 2 * tp / denom


def mean_or_none(values: Sequence[float | bool | None]) -> float | None:
    """Mean over the defined values (format-valid, adherence and step-accuracy rates); None if none are."""
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


# ---------------------------------------------------------------------------- posterior metrics


def top_label(posterior: dict[int, float]) -> tuple[int, float]:
    """(argmax label, its probability); ties go to the first level listed."""
    code = max(posterior, key=posterior.__getitem__)
    return code, posterior[code] / sum(posterior.values())


def expected_relevance(posterior: dict[int, float]) -> float:
    """Sum of code * probability (renormalised, so a posterior over label tokens need not sum to 1)."""
    return sum(code * p for code, p in posterior.items()) / sum(posterior.values())


def expected_calibration_error(
    confidence: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> float | None:
    """ECE of top-label confidence: `bins` equal-width bins [i/b, (i+1)/b) (the last one closed at 1),
    sum over bins of (bin size / n) * |accuracy in bin - mean confidence in bin|. None on empty input."""
    conf = np.asarray(confidence, dtype=float)
    if not len(conf):
        return None
    hit = np.asarray(correct, dtype=float)
    index = np.minimum((conf * bins).astype(int), bins - 1)
    gap = np.bincount(index, weights=hit, minlength=bins) - np.bincount(index, weights=conf, minlength=bins)
    return float(np.abs(gap).sum() / len(conf))  # n_b * |acc_b - conf_b| == |sum hit_b - sum conf_b|


def ndcg_at_k(gains: Sequence[float], scores: Sequence[float], k: int = 10) -> float | None:
    """NDCG@k of the ranking by `scores` against graded `gains`; tied scores share their mean gain
    (sklearn's tie handling, so the order of tied items does not matter). None when the ideal DCG is 0."""
    gains_arr, scores_arr = np.asarray(gains, dtype=float), np.asarray(scores, dtype=float)
    discount = 1.0 / np.log2(np.arange(len(gains_arr)) + 2.0)
    discount[k:] = 0.0
    ideal = float(np.sort(gains_arr)[::-1] @ discount)
    if ideal <= 0:
        return None
    order = np.argsort(-scores_arr, kind="stable")
    ranked_scores, ranked_gains = scores_arr[order], gains_arr[order]
    starts = np.flatnonzero(np.r_[True, ranked_scores[1:] != ranked_scores[:-1]])
    ends = np.r_[starts[1:], len(ranked_scores)]
    dcg = sum(ranked_gains[s:e].mean() * discount[s:e].sum() for s, e in zip(starts, ends))
    return float(dcg / ideal)


def ndcg_by_query(preds: Sequence[Prediction], scheme: Scheme, k: int = 10) -> dict[str, float]:
    """NDCG@k per query from expected relevance; gain = gold code - lowest code of the scheme (linear).

    Only queries with more than one item carrying a posterior, and some gain above 0, are scored.
    """
    lowest = min(scheme.codes)
    groups: dict[str, list[Prediction]] = defaultdict(list)
    for pred in preds:
        if pred.posterior is not None:
            groups[pred.query].append(pred)
    out: dict[str, float] = {}
    for query, items in groups.items():
        if len(items) < 2:
            continue
        value = ndcg_at_k(
            [p.gold - lowest for p in items], [expected_relevance(p.posterior) for p in items], k
        )
        if value is not None:
            out[query] = value
    return out


# ---------------------------------------------------------------------------- graded metrics
# Against a human grade (`grade` of imported records: Home Depot's mean of raters, 1..3): RMSE of the
# expected relevance (the competition's metric) and Spearman's rank correlation with it.

GRADED = ("rmse", "spearman")


def rmse(score: np.ndarray, grade: np.ndarray) -> float | None:
    return float(np.sqrt(np.mean((np.asarray(score) - np.asarray(grade)) ** 2))) if len(score) else None


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties sharing their mean rank (scipy's rankdata 'average', minus one)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(values)])
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(starts + (sizes - 1) / 2.0, sizes)
    return ranks


def spearman(score: np.ndarray, grade: np.ndarray) -> float | None:
    """Spearman's rho (Pearson correlation of average ranks); 0 when either side is constant (a constant
    score ranks nothing: chance), None on fewer than 2 items."""
    score, grade = np.asarray(score, dtype=float), np.asarray(grade, dtype=float)
    if len(score) < 2:
        return None
    if np.ptp(score) == 0 or np.ptp(grade) == 0:
        return 0.0
    a, b = _ranks(score), _ranks(grade)
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def graded(score: np.ndarray, grade: np.ndarray, resamples: int = 1000, seed: int = 0) -> dict:
    """{"metrics": {rmse, spearman}, "intervals": {same: [lo, hi] | None}} of expected relevance against grade."""
    score, grade = np.asarray(score, dtype=float), np.asarray(grade, dtype=float)
    fns = {"rmse": rmse, "spearman": spearman}
    draws = list(resamples_of(len(score), resamples, seed))
    metrics = {name: fn(score, grade) for name, fn in fns.items()}
    intervals = {}
    for name, fn in fns.items():
        values = [v for v in (fn(score[i], grade[i]) for i in draws) if v is not None]
        interval = percentile_interval(values)
        intervals[name] = list(interval) if interval else None
    return {"metrics": metrics, "intervals": intervals}


# ---------------------------------------------------------------------------- bootstrap


def resamples_of(n: int, resamples: int = 1000, seed: int = 0) -> Iterator[np.ndarray]:
    """`resamples` seeded draws of n indices out of range(n), with replacement."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples if n else 0):
        yield rng.integers(0, n, n)


def percentile_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    if not len(values):
        return None
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return float(lo), float(hi)


def centred_interval(estimate: float, values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Basic (pivotal) bootstrap interval [2t - q_hi, 2t - q_lo], widened to contain t, clipped at 0.

    For ECE, not the percentile interval: a resample repeats records, which makes bins purer and
    |acc - conf| larger, so resampled ECEs sit above the estimate and their percentile interval can
    exclude it. The basic interval reflects that bias around the estimate; where the bootstrap
    distribution lies wholly on one side the interval is widened to the estimate itself.

    >>> tuple(round(v, 3) for v in centred_interval(0.10, [0.12, 0.13, 0.14, 0.15, 0.16]))
    (0.041, 0.1)
    """
    tail = (1 - confidence) / 2
    q_lo, q_hi = np.quantile(values, [tail, 1 - tail])
    lo, hi = 2 * estimate - q_hi, 2 * estimate - q_lo
    return float(max(0.0, min(lo, estimate))), float(max(hi, estimate))


def bootstrap_interval(
    n: int,
    statistic: Callable[[np.ndarray], float | None],
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `statistic(indices)` over seeded resamples of n items.

    Resamples where the statistic is undefined (None) are dropped; None if nothing is left or n == 0.
    """
    values = [v for v in map(statistic, resamples_of(n, resamples, seed)) if v is not None]
    return percentile_interval(values, confidence)


# ---------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class _Columns:
    """Predictions as numpy columns, so bootstrap resamples are array takes, not Python loops."""

    gold: np.ndarray  # int codes
    pred: np.ndarray  # int codes, INVALID for a rejected completion
    adheres: np.ndarray  # float 0/1, NaN where undefined
    steps: np.ndarray  # float share, NaN where undefined
    top: np.ndarray  # argmax of the posterior, INVALID where there is none
    confidence: np.ndarray  # its probability, NaN where there is none

    @classmethod
    def of(cls, preds: Sequence[Prediction]) -> _Columns:
        tops = [top_label(p.posterior) if p.posterior is not None else (INVALID, np.nan) for p in preds]
        return cls(
            gold=np.array([p.gold for p in preds], dtype=int),
            pred=_pred_codes([p.pred for p in preds]),
            adheres=np.array([np.nan if p.adheres is None else float(p.adheres) for p in preds], dtype=float),
            steps=np.array(
                [np.nan if p.step_accuracy is None else p.step_accuracy for p in preds], dtype=float
            ),
            top=np.array([t for t, _ in tops], dtype=int),
            confidence=np.array([c for _, c in tops], dtype=float),
        )

    def take(self, index: np.ndarray) -> _Columns:
        return _Columns(*(column[index] for column in vars(self).values()))

    def metrics(self, scheme: Scheme) -> dict[str, float | None]:
        valid = self.pred != INVALID
        scored = self.top != INVALID
        correct = self.top[scored] == self.gold[scored]
        return {
            "accuracy": accuracy(self.gold, self.pred),
            "macro_f1": _macro(confusion_matrix(self.gold, self.pred, scheme.codes))
            if len(self.gold)
            else None,
            "good_f1": good_f1(self.gold, self.pred, scheme.good),
            "format_valid": float(valid.mean()) if len(valid) else None,
            "adherence": _nanmean(self.adheres[valid]),
            "step_accuracy": _nanmean(self.steps[valid]),
            "posterior_accuracy": float(correct.mean()) if len(correct) else None,
            "ece": expected_calibration_error(self.confidence[scored], correct),
        }


def _nanmean(values: np.ndarray) -> float | None:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if len(kept) else None


def label_metrics(preds: Sequence[Prediction], scheme: Scheme) -> dict[str, float | None]:
    """The headline metrics of a set of predictions (each None when undefined, e.g. on empty input).

    Adherence and step accuracy are over valid completions; posterior metrics over records with one.
    """
    return _Columns.of(preds).metrics(scheme)


def summarize(
    preds: Sequence[Prediction], scheme: Scheme, resamples: int = 1000, seed: int = 0, k: int = 10
) -> dict:
    """All metrics of spec section 7 as a JSON-ready dict (evaluate.py writes it with run details).

    Keys: n; metrics {HEADLINE..., ndcg@k, and rmse + spearman of expected relevance where the records
    with a posterior all carry a grade} (None where undefined); intervals {same: [lo, hi] | None};
    per_class_f1 {"code": f1 | None}; confusion {labels, columns (+ "invalid"), matrix rows=gold};
    counts {n, valid, with_posterior, step_scored, ndcg_queries}; slices {family: {n, metrics...,
    accuracy_interval}}.
    """
    preds = list(preds)
    ndcg_name = f"ndcg@{k}"
    per_query = ndcg_by_query(preds, scheme, k)
    query_values = list(per_query.values())
    columns = _Columns.of(preds)
    metrics = columns.metrics(scheme) | {ndcg_name: mean_or_none(query_values)}

    # One set of record resamples serves every record-level metric (paired across metrics).
    replicates: dict[str, list[float]] = defaultdict(list)
    for index in resamples_of(len(preds), resamples, seed):
        for name, value in columns.take(index).metrics(scheme).items():
            if value is not None:
                replicates[name].append(value)
    intervals = {name: percentile_interval(replicates[name]) for name in HEADLINE}
    if metrics.get("ece") is not None and replicates["ece"]:
        intervals["ece"] = centred_interval(metrics["ece"], replicates["ece"])
    # NDCG is a per-query statistic: resample queries, not records.
    intervals[ndcg_name] = bootstrap_interval(
        len(query_values), lambda index: float(np.mean(np.asarray(query_values)[index])), resamples, seed
    )
    # RMSE and Spearman where every record with a posterior carries a grade (imported human data)
    with_grade = [p for p in preds if p.posterior is not None]
    if with_grade and all(p.grade is not None for p in with_grade):
        scores = np.array([expected_relevance(p.posterior) for p in with_grade])
        result = graded(scores, np.array([p.grade for p in with_grade], dtype=float), resamples, seed)
        metrics |= result["metrics"]
        intervals |= {name: tuple(iv) if iv else None for name, iv in result["intervals"].items()}
    matrix = confusion_matrix([p.gold for p in preds], [p.pred for p in preds], scheme.codes)
    return {
        "n": len(preds),
        "metrics": metrics,
        "intervals": {name: (list(iv) if iv else None) for name, iv in intervals.items()},
        "per_class_f1": {
            str(c): v
            for c, v in per_class_f1([p.gold for p in preds], [p.pred for p in preds], scheme.codes).items()
        },
        "confusion": {
            "labels": list(scheme.codes),
            "columns": [*map(str, scheme.codes), "invalid"],
            "matrix": matrix.tolist(),
        },
        "counts": {
            "n": len(preds),
            "valid": sum(p.pred is not None for p in preds),
            "with_posterior": sum(p.posterior is not None for p in preds),
            "step_scored": sum(p.step_accuracy is not None for p in preds),  # valid, with gold steps
            "ndcg_queries": len(query_values),
        },
        "slices": slices(preds, scheme, resamples, seed),
    }


def slices(
    preds: Sequence[Prediction], scheme: Scheme, resamples: int = 1000, seed: int = 0
) -> dict[str, dict]:
    """Per-family results (records without a family go to "unspecified"), with an accuracy interval."""
    groups: dict[str, list[Prediction]] = defaultdict(list)
    for pred in preds:
        groups[pred.family or "unspecified"].append(pred)
    out: dict[str, dict] = {}
    for family in sorted(groups):
        items = groups[family]
        hits = np.array([p.pred == p.gold for p in items], dtype=float)
        interval = bootstrap_interval(
            len(items), lambda index, hits=hits: float(hits[index].mean()), resamples, seed
        )
        out[family] = {
            "n": len(items),
            **label_metrics(items, scheme),
            "accuracy_interval": list(interval) if interval else None,
        }
    return out


# ---------------------------------------------------------------------------- over seeds and records
# A method's runs (one per seed) as per-record columns: {"gold", "pred" (-1: rejected), "family",
# "adheres", "step_accuracy"}, the records in the same order in every run. Cells pool the seeds; the
# bootstrap resamples seeds and records together (paired: one draw serves both sides of a difference).

SEED_METRICS = ("macro_f1", "hard_macro_f1", "accuracy", "good_f1", "adherence", "step_accuracy", "format_valid")


def column_score(cols: dict, metric: str, index: np.ndarray, scheme: Scheme, hard: Sequence[str] = ()) -> float | None:
    gold, pred = np.asarray(cols["gold"])[index], np.asarray(cols["pred"])[index]
    if metric == "macro_f1":
        return macro_f1(gold, pred, scheme.codes)
    if metric == "hard_macro_f1":
        keep = np.isin(np.asarray(cols["family"])[index], hard)
        return macro_f1(gold[keep], pred[keep], scheme.codes) if keep.any() else None
    if metric == "accuracy":
        return float(np.mean(gold == pred))
    if metric == "good_f1":
        return good_f1(gold, pred, scheme.good)
    if metric == "format_valid":
        return float(np.mean(pred != -1))
    column = cols["adheres" if metric == "adherence" else metric]  # adherence, step_accuracy: over valid ones
    values = np.array([np.nan if v is None else v for v in np.asarray(column, dtype=object)[index]], dtype=float)
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else None


def seed_mean(runs: list[dict], metric: str, index: np.ndarray, seeds: np.ndarray, scheme: Scheme,
              hard: Sequence[str] = ()) -> float | None:
    values = [column_score(runs[i], metric, index, scheme, hard) for i in seeds]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def seed_bootstrap(stat: Callable[[np.ndarray, np.ndarray], float | None], n_records: int, n_seeds: int,
                   resamples: int, seed: int = 0) -> list[float] | None:
    """95% percentile interval of stat(records, seeds), resampling seeds and records with replacement."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        value = stat(rng.integers(0, n_records, n_records), rng.integers(0, n_seeds, n_seeds))
        if value is not None:
            values.append(value)
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else None


def seed_table(groups: dict[str, list[dict]], scheme: Scheme, resamples: int, hard: Sequence[str] = (),
               metrics: Sequence[str] = SEED_METRICS) -> dict[str, dict[str, dict]]:
    """name -> metric -> {"mean" over seeds, "per_seed", "std" across seeds (ddof 1), "interval"}."""
    out = {}
    for name, runs in groups.items():
        every = np.arange(len(runs[0]["gold"])), np.arange(len(runs))
        row = {}
        for metric in metrics:
            per_seed = [column_score(r, metric, every[0], scheme, hard) for r in runs]
            interval = seed_bootstrap(lambda i, s, m=metric, rs=runs: seed_mean(rs, m, i, s, scheme, hard),
                                      len(every[0]), len(runs), resamples)
            row[metric] = {"mean": seed_mean(runs, metric, *every, scheme, hard), "per_seed": per_seed,
                           "std": float(np.std([v for v in per_seed if v is not None], ddof=1))
                           if len(runs) > 1 else None, "interval": interval}
        out[name] = row
    return out


def paired_difference(a: list[dict], b: list[dict], metric: str, scheme: Scheme, resamples: int,
                      hard: Sequence[str] = ()) -> dict:
    """a's pooled metric minus b's, with its interval (seed i of a paired with seed i of b)."""
    n = len(a[0]["gold"])

    def stat(index, seeds):
        x, y = seed_mean(a, metric, index, seeds, scheme, hard), seed_mean(b, metric, index, seeds, scheme, hard)
        return None if x is None or y is None else x - y

    return {"delta": stat(np.arange(n), np.arange(len(a))), "interval": seed_bootstrap(stat, n, len(a), resamples)}


# ---------------------------------------------------------------------------- one-pass scores from files
# `agrl score` and `agrl baseline predict` rows (id, label, score) against a labelled source's gold, in
# the source's record order: `agrl score` reports them, `agrl run` and `agrl report` pool them.

SCORE_METRICS = ("macro_f1", "accuracy")  # of one-pass scores and baselines' predictions: a label, no reasoning


@functools.lru_cache(maxsize=32)
def _gold(source: str, scheme_name: str) -> tuple[tuple, tuple, tuple, tuple]:
    """(ids, labels, families, grades) of a split: read once per process (`agrl run` reports after every job)."""
    from agrl.data.records import grade_of, load_records
    from agrl.data.schemes import load_scheme

    records = load_records(source, load_scheme(scheme_name))
    grades = tuple(map(grade_of, records))
    return tuple(r.id for r in records), tuple(r.label for r in records), tuple(r.family for r in records), grades


def score_columns(predictions: str | Path, source: str | Path, scheme_name: str) -> dict:
    """`agrl score` or `agrl baseline predict` rows (id, label, score) as columns in the source's record
    order (pred -1 and score None: not scored, e.g. a run cut short), to pool as report.columns does."""
    from agrl.files import read_jsonl_tolerant

    ids, gold, family, grades = _gold(str(source), scheme_name)
    rows = {row.get("id"): row for row in read_jsonl_tolerant(Path(predictions))}
    labels = {rid: row.get("label") for rid, row in rows.items()}
    return {"gold": list(gold), "family": list(family), "pred": [-1 if labels.get(i) is None else labels[i] for i in ids],
            "score": [rows[i].get("score") if i in rows else None for i in ids], "grade": list(grades),
            "adheres": [None] * len(ids), "step_accuracy": [None] * len(ids)}


def score_metrics(predictions: str | Path, source: str | Path, scheme_name: str) -> dict:
    """Macro-F1 and accuracy of scored labels against the source's gold, how many were scored, and
    RMSE + Spearman of their expected relevance where the source's records carry a grade."""
    stat = Path(predictions).stat()
    return _score_metrics(str(predictions), stat.st_mtime_ns, stat.st_size, str(source), scheme_name)


@functools.lru_cache(maxsize=1024)
def _score_metrics(predictions: str, mtime_ns: int, size: int, source: str, scheme_name: str) -> dict:
    from agrl.data.schemes import load_scheme

    cols = score_columns(predictions, source, scheme_name)
    every = np.arange(len(cols["gold"]))
    out = {"n": len(cols["gold"]), "scored": sum(p != -1 for p in cols["pred"])}
    if any(g is None for g in cols["gold"]):  # unlabelled pairs: nothing to measure against
        return out
    out |= {m: column_score(cols, m, every, load_scheme(scheme_name)) if len(every) else None for m in SCORE_METRICS}
    pairs = [(s, g) for s, g in zip(cols["score"], cols["grade"]) if s is not None and g is not None]
    if pairs and all(g is not None for g in cols["grade"]):
        score, grade = np.array(pairs, dtype=float).T
        out |= {"rmse": rmse(score, grade), "spearman": spearman(score, grade)}
    return out


def score_metrics_line(metrics: dict) -> str | None:
    """`agrl score`'s closing line on labelled input: macro-F1, accuracy, and RMSE + Spearman with grades."""
    if metrics.get("macro_f1") is None:
        return None
    names = {"macro_f1": "macro-F1", "accuracy": "accuracy", "rmse": "RMSE", "spearman": "Spearman"}
    shown = ", ".join(f"{label} {metrics[key]:.3f}" for key, label in names.items() if metrics.get(key) is not None)
    return f"against the labels of {metrics['scored']:,}/{metrics['n']:,} scored pairs: {shown}"
