"""The results of an SBS study: who won, how sure, do raters agree, which judge the raters side with.

- Win rate of B over A: each answer scores 1 (B better), 0 (A better) or 1/2 (both good / both bad: a
  tie); an item's score is the mean of its answers, the win rate the weighted mean over answered items
  (weight 1/w for agreed pairs kept with probability w, else 1). 95% percentile bootstrap interval with
  items resampled (metrics.bootstrap_interval). 0.5 is a draw.
- Rater agreement on the four answers, over items with two or more raters: Fleiss' kappa (the form for
  a varying number of raters per item) and Cohen's kappa per pair of raters (scikit-learn).
- Each judge's accuracy against the raters' label: the most common label the raters gave an item
  (items without a single most common label are left out), with a bootstrap interval.

    summary = summarize(*Study("study.sqlite").rows(), meta)
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np
from sklearn.metrics import cohen_kappa_score

from agrl.metrics import bootstrap_interval

VERDICTS = ("b", "a", "both_good", "both_bad")
POINTS = {"b": 1.0, "a": 0.0, "both_good": 0.5, "both_bad": 0.5}


def win_rate(scores: list[float], weights: list[float], resamples: int = 1000, seed: int = 0) -> dict:
    """Weighted mean of item scores and its 95% bootstrap interval (items resampled)."""
    s, w = np.asarray(scores, float), np.asarray(weights, float)
    if not len(s):
        return {"value": None, "interval": None}

    def stat(index: np.ndarray) -> float:
        return float(np.dot(w[index], s[index]) / w[index].sum())

    return {"value": stat(np.arange(len(s))), "interval": bootstrap_interval(len(s), stat, resamples, seed)}


def fleiss_kappa(counts: list[list[int]]) -> float | None:
    """Fleiss' kappa of an items x categories matrix of rater counts (rows may sum differently, each >= 2).

    P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)); p_j = sum_i n_ij / sum n_i; kappa = (mean P_i - P_e) / (1 - P_e)
    with P_e = sum_j p_j^2. None when undefined (no items, or every answer in one category).
    """
    n = np.asarray(counts, float)
    if not n.size:
        return None
    per_item = n.sum(1)
    assert (per_item >= 2).all(), "Fleiss' kappa needs two or more raters per item"
    agreement = ((n**2).sum(1) - per_item) / (per_item * (per_item - 1))
    p = n.sum(0) / n.sum()
    chance = float((p**2).sum())
    return None if chance >= 1 else float((agreement.mean() - chance) / (1 - chance))


def cohen_pairs(answers: list[dict], min_shared: int = 2) -> list[dict]:
    """Cohen's kappa of each pair of raters on the items both answered (min_shared or more)."""
    by_rater: dict[str, dict[int, str]] = defaultdict(dict)
    for answer in answers:
        by_rater[answer["rater"]][answer["item_id"]] = answer["verdict"]
    out = []
    for one, two in itertools.combinations(sorted(by_rater), 2):
        shared = sorted(set(by_rater[one]) & set(by_rater[two]))
        if len(shared) < min_shared:
            continue
        x, y = [by_rater[one][i] for i in shared], [by_rater[two][i] for i in shared]
        # Undefined (0/0) when both raters gave one and the same answer throughout: report None, not NaN.
        kappa = None if len(set(x) | set(y)) == 1 else float(cohen_kappa_score(x, y, labels=list(VERDICTS)))
        out.append({"raters": [one, two], "items": len(shared), "kappa": kappa,
                    "agreement": sum(p == q for p, q in zip(x, y)) / len(shared)})
    return out


def majority_label(labels: list[int]) -> int | None:
    """The single most common label, None on a tie for first."""
    top = Counter(labels).most_common(2)
    return top[0][0] if top and (len(top) == 1 or top[0][1] > top[1][1]) else None


def judge_accuracy(items: list[dict], answers: list[dict], resamples: int = 1000, seed: int = 0) -> dict:
    """Each judge's accuracy against the raters' majority label, on the items where there is one."""
    labels: dict[int, list[int]] = defaultdict(list)
    for answer in answers:
        if answer["label"] is not None:
            labels[answer["item_id"]].append(answer["label"])
    truth = {i: majority_label(v) for i, v in labels.items()}
    rated = [item for item in items if truth.get(item["id"]) is not None]
    out = {"items": len(rated), "tied": sum(v is None for v in truth.values())}
    for side in ("a", "b"):
        right = np.array([item[side]["label"] == truth[item["id"]] for item in rated], float)
        out[side] = {
            "value": float(right.mean()) if len(right) else None,
            "interval": bootstrap_interval(len(right), lambda idx, right=right: float(right[idx].mean()), resamples, seed),
        }
    return out


def summarize(items: list[dict], answers: list[dict], resamples: int = 1000, seed: int = 0) -> dict:
    """Everything the report shows, as plain JSON."""
    by_item: dict[int, list[dict]] = defaultdict(list)
    for answer in answers:
        by_item[answer["item_id"]].append(answer)
    answered = [item for item in items if by_item[item["id"]]]

    def block(subset: list[dict]) -> dict:
        scores = [float(np.mean([POINTS[a["verdict"]] for a in by_item[i["id"]]])) for i in subset]
        counts = Counter(a["verdict"] for i in subset for a in by_item[i["id"]])
        return {"items": len(subset), "answers": sum(counts.values()),
                "win_rate": win_rate(scores, [i["weight"] for i in subset], resamples, seed),
                "counts": {v: counts.get(v, 0) for v in VERDICTS}}

    strata: dict[str, list[dict]] = defaultdict(list)
    for item in answered:
        if item["stratum"] is not None:
            strata[item["stratum"]].append(item)
    multi = [by_item[i["id"]] for i in answered if len(by_item[i["id"]]) >= 2]
    fleiss = fleiss_kappa([[sum(a["verdict"] == v for a in group) for v in VERDICTS] for group in multi])
    return {
        "items": len(items),
        "answered_items": len(answered),
        "raters": sorted({a["rater"] for a in answers}),
        "overall": block(answered),
        "strata": {key: block(strata[key]) for key in sorted(strata)},
        "agreement": {"items": len(multi), "fleiss_kappa": fleiss, "cohen": cohen_pairs(answers)},
        "accuracy": judge_accuracy(items, answers, resamples, seed),
        "resamples": resamples,
        "seed": seed,
    }
