"""Home Depot: classical baselines, the rules engine and LLM judges on human labels, query-disjoint test split.

Claim (issue 13): what a search team gets from the baselines it tries first, on real queries and
human grades: macro-F1, accuracy, Good-F1 (partial or exact vs irrelevant), RMSE of expected relevance
(the label posterior's mean) against the mean grade (the competition's metric), NDCG@10 per query;
95% bootstrap intervals (records resampled; NDCG over queries). Also the rules' agreement with the
human labels on the train split (per class, per kind of title evidence, above gold_step_confidence).
LLM judges (`--judges`): the stages `agrl run configs/home_depot/*.yaml` trained and scored, with their budget.
Imports the data first when --data has no splits (`agrl data import home-depot`); never writes the data
anywhere but --data. Prints Markdown and writes JSON + .md beside it (machine, date, command).

    PYTHONPATH=src python bench/home_depot.py --data runs/home_depot --minilm-train 10000 \
        --judges runs/hd_judges/tiny,runs/hd_judges/smollm2 --out bench/results/home_depot.json
    PYTHONPATH=src python bench/home_depot.py --data runs/hd --kinds rules,tfidf --train-limit 2000   # minutes
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from agrl.evaluation import baselines
from agrl.data import importers
from agrl.core.agreement import agreement, agreement_table
from agrl.data.records import load_records
from agrl.files import atomic_write, read_jsonl_tolerant
from agrl.evaluation.metrics import Prediction, percentile_interval, resamples_of, summarize
from agrl.core.rules import RulesEngine
from agrl.data.schemes import load_scheme

SCHEME = load_scheme("three_level")
KINDS = ("constant", "rules", "tfidf", "bm25", "minilm")
SHOWN = ("macro_f1", "accuracy", "good_f1", "rmse", "spearman", "ndcg@10")


def load_splits(data: Path, source: Path, seed: int) -> dict:
    if not (data / "test.jsonl").is_file():
        print(f"importing {source} into {data}", file=sys.stderr)
        importers.check_out(data, {"--input": source}, force=False)
        splits = importers.split(importers.import_home_depot(source), seed)
        importers.write_splits(splits, data, {"source": "home_depot", "input": str(source), "seed": seed,
                                              "scheme": "three_level"})
    return {name: load_records(data / f"{name}.jsonl", SCHEME) for name in ("train", "validation", "test")}


def subsample(records: list, limit: int | None, seed: int) -> list:
    """The first `limit` records of a seeded shuffle (all of them when limit is None)."""
    if limit is None or limit >= len(records):
        return records
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return [records[i] for i in sorted(order[:limit])]


def rules_rows(train: list, test: list) -> list[dict]:
    """The rules engine as a judge: its label, a one-hot posterior (expected relevance = its label)."""
    engine = RulesEngine.from_records(train + test, SCHEME)
    rows = []
    for record in test:
        label = engine.judge(record).label
        rows.append({"id": record.id, "query": record.query, "label": label, "score": float(label),
                     "probabilities": {str(c): float(c == label) for c in SCHEME.codes}})
    return rows


def constant_rows(train: list, test: list) -> list[dict]:
    """The class prior of train for every pair: the floor every model must beat."""
    prior = Counter(r.label for r in train)
    probs = {str(c): prior[c] / len(train) for c in SCHEME.codes}
    label = max(prior, key=prior.__getitem__)
    score = sum(int(c) * p for c, p in probs.items())
    return [{"id": r.id, "query": r.query, "label": label, "score": score, "probabilities": probs} for r in test]


def evaluate(rows: list[dict], test: list, resamples: int, seed: int) -> dict:
    preds = [Prediction(gold=r.label, pred=row["label"], id=r.id, query=r.query,
                        posterior={int(c): p for c, p in row["probabilities"].items()})
             for r, row in zip(test, rows, strict=True)]
    summary = summarize(preds, SCHEME, resamples=resamples, seed=seed)
    score, grade = np.array([row["score"] for row in rows]), np.array([r.extra["grade"] for r in test])
    err = score - grade
    draws = list(resamples_of(len(err), resamples, seed))
    metrics = {k: summary["metrics"][k] for k in ("macro_f1", "accuracy", "good_f1", "ndcg@10")}
    intervals = {k: summary["intervals"][k] for k in ("macro_f1", "accuracy", "good_f1", "ndcg@10")}
    for name, fn in (("rmse", lambda i: float(np.sqrt(np.mean(err[i] ** 2)))),
                     ("spearman", lambda i: rank_correlation(score[i], grade[i]))):
        metrics[name] = fn(slice(None))
        boot = [fn(index) for index in draws]
        intervals[name] = list(percentile_interval(boot)) if boot else None
    return {"metrics": metrics, "intervals": intervals, "per_class_f1": summary["per_class_f1"],
            "confusion": summary["confusion"], "ndcg_queries": summary["counts"]["ndcg_queries"]}


def judge_models(folders: list[str], test: list, validation: list, resamples: int, seed: int) -> dict:
    """Rows for the LLM judges that `agrl run` trained and scored: one per stage whose test
    split is scored in full, named "FOLDER STAGE". The budget: training wall seconds as each trainer
    logged them (train_runtime), summed along the stage's `from` chain, and the CPU seconds of scoring."""
    import yaml

    models = {}
    for folder in map(Path, folders):
        # recipe.json: what `agrl run` ran; recipe.yaml: the folders of the earlier bench/hd_judges.py
        recipe = yaml.safe_load(next(p for p in (folder / "recipe.json", folder / "recipe.yaml") if p.is_file()).read_text())
        for stage, spec in recipe["stages"].items():
            scored = {split: read_scores(folder / "scores" / f"{stage}.{split}.jsonl")
                      for split in ("test", "validation")}
            if any(r.id not in scored["test"] for r in test):
                continue
            chain, at = [], stage
            while at != "model":
                chain.append(at)
                at = recipe["stages"][at]["from"]
            info = {"train_records": spec.get("records", "train"), "train_wall_s": round(sum(map(
                train_runtime, (folder / s for s in chain))), 1), "stages": chain[::-1]}
            cost = folder / "scores" / f"{stage}.test.cost.json"
            info["cpu_s"] = json.loads(cost.read_text())["cpu_s"] if cost.is_file() else None
            info["training"] = training_signals(folder / stage)
            rows = [scored["test"][r.id] for r in test]
            info["label_share"] = {c: round(sum(row["label"] == int(c) for row in rows) / len(rows), 3)
                                   for c in map(str, sorted(SCHEME.codes))}
            info |= evaluate(rows, test, resamples, seed)
            if all(r.id in scored["validation"] for r in validation):
                info["validation"] = evaluate([scored["validation"][r.id] for r in validation], validation, 0,
                                              seed)["metrics"]
            models[f"{folder.name} {stage}"] = info
    return models


def read_scores(path: Path) -> dict[str, dict]:
    """`agrl score` output by record id ({} when the file is not there)."""
    return {row["id"]: row for row in read_jsonl_tolerant(path)} if path.is_file() else {}


def run_metrics(run_dir: Path) -> list[dict]:
    """A stage's metrics.jsonl rows ([] when it has none)."""
    path = run_dir / "metrics.jsonl"
    return read_jsonl_tolerant(path) if path.is_file() else []


SIGNALS = ("rewards/outcome/mean", "rewards/step/mean", "rewards/adherence/mean", "groups/all_wrong")


def training_signals(run_dir: Path, window: int = 20) -> dict:
    """An RL run's reward terms and all-wrong group share: mean of its first and last `window` steps."""
    rows = run_metrics(run_dir)
    out = {}
    for key in SIGNALS:
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
        if len(values) >= 2 * window:
            out[key] = [round(float(np.mean(values[:window])), 3), round(float(np.mean(values[-window:])), 3)]
    return out


def train_runtime(run_dir: Path) -> float:
    """Seconds of training the trainer logged (summed over resumed segments)."""
    return sum(row.get("train_runtime", 0.0) for row in run_metrics(run_dir))


def rank_correlation(score: np.ndarray, grade: np.ndarray) -> float:
    """Spearman's rho of expected relevance against the mean grade (0 for a constant score)."""
    from scipy.stats import spearmanr

    return 0.0 if np.ptp(score) == 0 else float(spearmanr(score, grade).statistic)


def run_kind(kind: str, train: list, test: list, args, work: Path) -> tuple[list[dict], dict]:
    start = time.process_time(), time.time()
    info: dict = {}
    if kind == "constant":
        rows = constant_rows(train, test)
    elif kind == "rules":
        rows = rules_rows(train, test)
    else:
        limit = args.minilm_train if kind == "minilm" else args.train_limit
        fit_on = subsample(train, limit, args.seed)
        model = baselines.fit(fit_on, kind, "three_level", args.seed, cache=work / "minilm_cache.npz")
        baselines.save(model, work / f"{kind}.joblib")
        info["train_records"] = len(fit_on)
        rows = baselines.predict(model, test)
    info |= {"cpu_s": round(time.process_time() - start[0], 1), "wall_s": round(time.time() - start[1], 1)}
    return rows, info


def markdown(result: dict) -> str:
    lines = [(f"Home Depot, query-disjoint test split ({result['test_records']} pairs, {result['test_queries']} "
             f"queries); {result['machine']['summary']}, {result['date']}"), "",
             "| model | trained on | macro-F1 | accuracy | Good-F1 | RMSE | Spearman | NDCG@10 | CPU s | train wall s |",
             "|---|---:|" + "---:|" * 8]
    for kind, row in result["models"].items():
        cells = []
        for name in SHOWN:
            value, iv = row["metrics"][name], row["intervals"][name]
            cells.append("-" if value is None else f"{value:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""))
        lines.append(f"| {kind} | {row.get('train_records', '-')} | " + " | ".join(cells)
                     + f" | {row['cpu_s']} | {row.get('train_wall_s', '-')} |")
    judges = {kind: row for kind, row in result["models"].items() if "validation" in row}
    if judges:
        lines += ["", "LLM judges on validation (read, never chosen on):", "",
                  "| model | macro-F1 | accuracy | RMSE |", "|---|---:|---:|---:|"]
        lines += [f"| {kind} | " + " | ".join(f"{row['validation'][k]:.3f}" for k in ("macro_f1", "accuracy", "rmse"))
                  + " |" for kind, row in judges.items()]
    trained = {kind: row for kind, row in result["models"].items() if "label_share" in row}
    if trained:
        lines += ["", "LLM judges: RL training signals (mean of the first -> last 20 steps), test labels' shares:", "",
                  "| model | outcome | step | adherence | all-wrong groups | labels 1 / 2 / 3 |", "|---|---|---|---|---|---|"]
        for kind, row in trained.items():
            cells = [" -> ".join(f"{v:.2f}" for v in row["training"][k]) if k in row["training"] else "-"
                     for k in SIGNALS]
            lines.append(f"| {kind} | " + " | ".join(cells) + " | "
                         + " / ".join(f"{v:.2f}" for v in row["label_share"].values()) + " |")
    lines += ["", "Rules vs human labels, train split:", "", "```", result["agreement_table"], "```", "",
              f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/home_depot", help="import folder (train/validation/test.jsonl)")
    parser.add_argument("--source", default="../shared/data/home_depot/home_depot.csv.gz",
                        help="the Home Depot CSV, imported into --data when it has no splits")
    parser.add_argument("--out", default="bench/results/home_depot.json", help="result JSON (+ .md)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--train-limit", type=int, default=None, help="fit tfidf/bm25 on this many train pairs")
    parser.add_argument("--minilm-train", type=int, default=5000,
                        help="fit minilm on this many train pairs (embedding costs CPU: ~80 texts/s/thread)")
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test queries' pairs")
    parser.add_argument("--judges", default="", help="comma-separated `agrl run` output folders of configs/home_depot/*.yaml")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}")
    data = Path(args.data)
    splits = load_splits(data, Path(args.source), args.seed)
    train, test = splits["train"], splits["test"]
    if args.test_limit:
        keep = set(list(dict.fromkeys(r.query for r in test))[: args.test_limit])
        test = [r for r in test if r.query in keep]
    engine = RulesEngine.from_records(train, SCHEME)
    report = agreement(train, engine)
    table = agreement_table(report)
    print(table, file=sys.stderr)
    models = {}
    for kind in kinds:
        rows, info = run_kind(kind, train, test, args, data)
        models[kind] = info | evaluate(rows, test, args.resamples, args.seed)
        print(f"{kind}: {models[kind]['metrics']} ({info['cpu_s']} CPU s)", file=sys.stderr)
    if args.judges:
        models |= judge_models(args.judges.split(","), test, splits["validation"], args.resamples, args.seed)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    result = {
        "bench": "home_depot", "date": datetime.date.today().isoformat(), "commit": commit,
        "command": "PYTHONPATH=src python bench/home_depot.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"summary": f"{platform.machine()} CPU, {os.cpu_count()} cores, OMP_NUM_THREADS={threads}, "
                               f"Python {platform.python_version()}", "platform": platform.platform()},
        "scheme": "three_level", "split_seed": args.seed, "train_records": len(train), "test_records": len(test),
        "test_queries": len({r.query for r in test}), "metrics_note": "RMSE: expected relevance (sum of code x "
        "posterior, codes 1..3) vs the mean human grade; Spearman: its rank correlation with the mean grade; "
        "NDCG@10 gains = three_level code - 1; intervals: percentile bootstrap over pairs (NDCG: over "
        "queries); CPU s: baselines fit + predict, LLM judges scoring the test split (one forward pass a "
        "pair); train wall s: the judges' training, as the trainer logged it, along the stage chain",
        "agreement_train": report, "agreement_table": table, "models": models,
    }
    out = Path(args.out)
    atomic_write(out, json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    atomic_write(out.with_suffix(".md"), text)
    print(text)
    return result


if __name__ == "__main__":
    main()
