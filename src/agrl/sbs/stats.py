"""The results of an SBS study: who won, how sure, do raters agree, which judge the raters side with,
and can each rater be trusted (gold items).

- Win rate of B over A: each answer scores 1 (B better), 0 (A better) or 1/2 (both good / both bad: a
  tie); an item's score is the mean of its answers (or the lead's adjudication, when there is one), the
  win rate the weighted mean over answered items (weight 1/w for agreed pairs kept with probability w,
  else 1). 95% percentile bootstrap interval with items resampled (metrics.bootstrap_interval), and no
  interval at all below `min_items` items (the report says so): a bootstrap over 1 to 9 items claims
  certainty it does not have (one answer gives [0, 0]). 0.5 is a draw.
- GSB (Good/Same/Bad, as Taobao reports side-by-side tests): the weighted shares of answers saying B
  better (good), a tie (same) and A better (bad) per item, and GSB = good - bad. Ties counting 1/2 makes
  GSB = 2 x win rate - 1, its interval the win rate's mapped the same way.
- Rater agreement on the four answers, over items with two or more raters: Fleiss' kappa (the form for
  a varying number of raters per item) and Cohen's kappa per pair of raters (scikit-learn).
- Each judge's accuracy against the raters' label: the lead's adjudicated label, else the most common
  label the raters gave an item (items without a single most common label are left out).
- Gold items (a known answer) never count in the above; each rater's accuracy on them is reported, and
  with `min_gold_accuracy` raters below it are left out of everything else (and named).

    summary = summarize(*Study("study.sqlite").rows(), min_gold_accuracy=0.7)
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np
from sklearn.metrics import cohen_kappa_score

from agrl.evaluation.metrics import bootstrap_interval
from agrl.sbs.store import VERDICTS

POINTS = {"b": 1.0, "a": 0.0, "both_good": 0.5, "both_bad": 0.5}
MIN_ITEMS = 10


def _interval(n: int, stat, resamples: int, seed: int, min_items: int) -> tuple | None:
    return bootstrap_interval(n, stat, resamples, seed) if n >= max(min_items, 1) else None


def win_rate(scores: list[float], weights: list[float], resamples: int = 1000, seed: int = 0,
             min_items: int = MIN_ITEMS) -> dict:
    """Weighted mean of item scores and its 95% bootstrap interval (items resampled; None below min_items)."""
    s, w = np.asarray(scores, float), np.asarray(weights, float)
    if not len(s):
        return {"value": None, "interval": None}

    def stat(index: np.ndarray) -> float:
        return float(np.dot(w[index], s[index]) / w[index].sum())

    return {"value": stat(np.arange(len(s))), "interval": _interval(len(s), stat, resamples, seed, min_items)}


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


def judge_accuracy(items: list[dict], answers: list[dict], resamples: int = 1000, seed: int = 0,
                   min_items: int = MIN_ITEMS) -> dict:
    """Each judge's accuracy against the lead's adjudicated label, else the raters' majority label."""
    labels: dict[int, list[int]] = defaultdict(list)
    for answer in answers:
        if answer["label"] is not None:
            labels[answer["item_id"]].append(answer["label"])
    truth = {i: majority_label(v) for i, v in labels.items()}
    for item in items:
        settled = item.get("adjudication")
        if settled and settled["label"] is not None:
            truth[item["id"]] = settled["label"]
    rated = [item for item in items if truth.get(item["id"]) is not None]
    out = {"items": len(rated), "tied": sum(v is None for v in truth.values())}
    for side in ("a", "b"):
        right = np.array([item[side]["label"] == truth[item["id"]] for item in rated], float)
        out[side] = {
            "value": float(right.mean()) if len(right) else None,
            "interval": _interval(len(right), lambda idx, right=right: float(right[idx].mean()), resamples, seed,
                                  min_items),
        }
    return out


def gold_accuracy(items: list[dict], answers: list[dict]) -> dict[str, dict]:
    """Per rater, on the gold items they answered: how often their answer was the known better side, and
    their label the known label (where the gold row gives one and the rater gave one)."""
    gold = {item["id"]: item["gold"] for item in items if item.get("gold")}
    out: dict[str, dict] = {}
    for answer in answers:
        known = gold.get(answer["item_id"])
        if known is None:
            continue
        row = out.setdefault(answer["rater"], {"items": 0, "right": 0, "labels": 0, "labels_right": 0})
        row["items"] += 1
        row["right"] += answer["verdict"] == known["better"]
        if known.get("label") is not None and answer["label"] is not None:
            row["labels"] += 1
            row["labels_right"] += answer["label"] == known["label"]
    for row in out.values():
        row["accuracy"] = row["right"] / row["items"]
        row["label_accuracy"] = row["labels_right"] / row["labels"] if row["labels"] else None
    return dict(sorted(out.items()))


def summarize(items: list[dict], answers: list[dict], resamples: int = 1000, seed: int = 0,
              min_items: int = MIN_ITEMS, min_gold_accuracy: float | None = None) -> dict:
    """Everything the report shows, as plain JSON."""
    gold = gold_accuracy(items, answers)
    left_out = sorted(r for r, g in gold.items() if min_gold_accuracy is not None and g["accuracy"] < min_gold_accuracy)
    items = [item for item in items if not item.get("gold")]
    regular = {item["id"] for item in items}
    answers = [a for a in answers if a["item_id"] in regular and a["rater"] not in left_out]
    by_item: dict[int, list[dict]] = defaultdict(list)
    for answer in answers:
        by_item[answer["item_id"]].append(answer)
    answered = [item for item in items if by_item[item["id"]] or item.get("adjudication")]

    def shares(item: dict) -> dict[str, float]:
        """The item's answers as shares of each verdict; the lead's adjudication, when there is one."""
        settled = item.get("adjudication")
        verdicts = [settled["verdict"]] if settled else [a["verdict"] for a in by_item[item["id"]]]
        return {v: verdicts.count(v) / len(verdicts) for v in VERDICTS}

    def block(subset: list[dict]) -> dict:
        share = [shares(i) for i in subset]
        weights = [i["weight"] for i in subset]
        scores = [sum(POINTS[v] * s[v] for v in VERDICTS) for s in share]
        counts = Counter(a["verdict"] for i in subset for a in by_item[i["id"]])
        win = win_rate(scores, weights, resamples, seed, min_items)
        total = sum(weights) or 1.0
        good, bad = (sum(w * s[v] for w, s in zip(weights, share)) / total for v in ("b", "a"))
        gsb = {"good": good, "same": 1 - good - bad, "bad": bad, "value": good - bad if subset else None,
               "interval": None if win["interval"] is None else [2 * x - 1 for x in win["interval"]]}
        return {"items": len(subset), "answers": sum(counts.values()), "win_rate": win, "gsb": gsb,
                "adjudicated": sum(bool(i.get("adjudication")) for i in subset),
                "counts": {v: counts.get(v, 0) for v in VERDICTS}}

    strata: dict[str, list[dict]] = defaultdict(list)
    by_labels: dict[str, list[dict]] = defaultdict(list)
    for item in answered:
        if item["stratum"] is not None:
            strata[item["stratum"]].append(item)
        if item.get("agree") is not None:
            by_labels["same label" if item["agree"] else "different labels"].append(item)
    multi = [by_item[i["id"]] for i in answered if len(by_item[i["id"]]) >= 2]
    fleiss = fleiss_kappa([[sum(a["verdict"] == v for a in group) for v in VERDICTS] for group in multi])
    return {
        "items": len(items),
        "answered_items": len(answered),
        "raters": sorted({a["rater"] for a in answers}),
        "min_items": min_items,
        "overall": block(answered),
        "strata": {key: block(strata[key]) for key in sorted(strata)},
        "judges_labels": {key: block(by_labels[key]) for key in sorted(by_labels)},
        "agreement": {"items": len(multi), "fleiss_kappa": fleiss, "cohen": cohen_pairs(answers)},
        "accuracy": judge_accuracy(answered, answers, resamples, seed, min_items),
        "gold": {"raters": gold, "min_accuracy": min_gold_accuracy, "left_out": left_out},
        "resamples": resamples,
        "seed": seed,
    }
