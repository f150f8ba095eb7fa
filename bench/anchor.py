"""The SFT-anchor study's report (issue 30; protocol bench/PROTOCOL.md, addendum 2026-12-06): anchor.md.

The study is one recipe, `agrl run configs/study/anchor.yaml`. This script keeps one small JSON per
finished run (its config, counters, cost and per-record eval columns; no weights) in
bench/results/anchor/ (`--results RESULTS.json --save`, rerun as runs finish: the runner rewrites
results.json after each job), and renders the tables from those files: the pooled cells and paired
differences are the library's (agrl.evaluation.metrics, through bench/study.py), the mechanism counters (all-wrong
groups, step accuracy, label collapse, the anchor's loss and share) and the weight sweep are this file's.

    agrl run configs/study/anchor.yaml --out runs/anchor --jobs 1 --threads 1
    agrl run configs/study/anchor.yaml --out runs/anchor_s2 --jobs 1 --threads 1 --set seeds=[2] --set sweep.stages={}
    PYTHONPATH=src python bench/anchor.py --results runs/anchor/results.json runs/anchor_s2/results.json --save
    PYTHONPATH=src python bench/anchor.py          # from bench/results/anchor/*.json (docs/results.md's numbers)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study import SPLITS, counter_means, difference, table  # the method study's statistics

from agrl.evaluation.metrics import SEED_METRICS as METRICS
from agrl.evaluation.report import columns
from agrl.evaluation.report import pct_cell as cell

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "anchor"
METHODS = ("sft", "grpo", "grpo_anchored", "agrl", "agrl_anchored")
PAIRS = (("grpo_anchored", "grpo"), ("agrl_anchored", "agrl"), ("grpo", "sft"), ("grpo_anchored", "sft"),
         ("agrl", "sft"), ("agrl_anchored", "sft"))
KEPT = ("method", "learning_rate", "sft_anchor", "sft_label_weight", "max_steps", "per_device_train_batch_size",
        "num_generations", "seed")


def save(results: Path, out: Path) -> list[Path]:
    """One file per finished run of an `agrl run` results.json (those with every eval split or a sweep score)."""
    body = json.loads(results.read_text())
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for row in body["runs"]:
        evals = {split: {"metrics": e["metrics"], "columns": columns(e["predictions"])}
                 for split, e in (row.get("evals") or {}).items() if split in (*SPLITS, "validation")}
        if not evals:
            continue
        run = {"name": row["name"], "stage": row["stage"], "seed": row["seed"], "sweep": row["sweep"],
               "config": {k: row["config"][k] for k in KEPT if k in row["config"]}, "counters": row.get("counters") or {},
               "cost": row.get("cost") or {}, "eval": evals,
               "choices": body.get("choices") or {}, "date": body.get("date"), "machine": body.get("machine"),
               "threads": body.get("threads_per_job"), "resamples": body.get("resamples") or 1000}
        path = out / f"{row['name']}.json"
        path.write_text(json.dumps(run) + "\n")
        written.append(path)
    return written


def load(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def finals(runs: list[dict]) -> dict[str, list[dict]]:
    """method -> its runs with the eval splits, in seed order (an anchored method's seed 0: its chosen
    sweep point); only methods with the same seeds as SFT."""
    out = {m: sorted([r for r in runs if r["config"]["method"] == m and all(s in r["eval"] for s in SPLITS)],
                     key=lambda r: r["seed"]) for m in METHODS}
    seeds = [r["seed"] for r in out["sft"]]
    return {m: rs for m, rs in out.items() if rs and [r["seed"] for r in rs] == seeds}


def top_share(run: dict, split: str) -> float:
    """Label collapse: the share of the most predicted label (rejected outputs count as a label of their own)."""
    pred = run["eval"][split]["columns"]["pred"]
    return max(pred.count(c) for c in set(pred)) / len(pred)


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def report(runs: list[dict], source: str) -> str:
    groups = finals(runs)
    first = runs[0]
    seeds = [r["seed"] for r in groups["sft"]]
    rl = next(r for r in runs if r["config"]["method"] == "grpo")["config"]
    resamples = first["resamples"]
    choices = next((r["choices"] for r in runs if r["choices"]), {})  # the sweep's run of the recipe holds them
    chosen = ", ".join(f"{m} {c.get('sft_anchor')}" for m, c in choices.items())
    lines = [(f"# The SFT anchor ({first['date'][:10]}, {first['machine'].get('platform', '')}, "
              f"{first['machine'].get('cpus', '?')} CPU cores, {first['threads']} torch thread a run)"), "",
             ("Protocol: bench/PROTOCOL.md, addendum 2026-12-06 and its notes. Commands: `agrl run "
              "configs/study/anchor.yaml --out runs/anchor --jobs 1 --threads 1` (seeds 0-1, the sweep) and, seed 2, "
              "the same with `--out runs/anchor_s2 --set seeds=[2] --set sweep.stages={}`. "
              f"Result files: {source}."),
             (f"Seeds {seeds}; {rl['max_steps']} RL steps x {rl['per_device_train_batch_size'] // rl['num_generations']} "
              f"prompts x {rl['num_generations']} completions, lr {rl['learning_rate']:g}; anchor weight chosen on "
              f"validation: {chosen}."),
             ("Cells: percent, mean over seeds [95% bootstrap interval, seeds and records resampled] ±std across "
              "seeds."), ""]
    for split in SPLITS:
        stats = table(groups, split, resamples)
        n = len(groups["sft"][0]["eval"][split]["columns"]["gold"])
        lines += [f"## {split} (n={n} a run)", "", "| method | " + " | ".join(METRICS) + " |",
                  "|---|" + "---|" * len(METRICS)]
        lines += [f"| {m} | " + " | ".join(cell(row[k]) for k in METRICS) + " |" for m, row in stats.items()]
        lines += ["", "Paired differences (points, [95% interval]):", ""]
        for a, b in PAIRS:
            if a in groups and b in groups:
                parts = []
                for metric in ("macro_f1", "hard_macro_f1", "step_accuracy"):
                    d = difference(groups[a], groups[b], split, metric, resamples)
                    iv = d["interval"]
                    parts.append(f"{metric} {100 * d['delta']:+.1f}"
                                 + (f" [{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]" if iv else ""))
                lines.append(f"- {a} - {b}: " + "; ".join(parts))
        lines.append("")
    lines += ["## Mechanism counters (mean over seeds)", "",
              ("all-wrong groups: share of a step's groups with no right rollout (first / last third of training); "
               "step accuracy: eval, share of gold steps stated right; label collapse: share of the most predicted "
               "label (gold: eval_balanced 25%, eval_wild its natural mix); anchor: its unweighted loss "
               "(first / last third) and share of the total loss's size; s/step: median RL step seconds."), "",
              ("| method | all-wrong groups | step acc. balanced / wild | label collapse balanced / wild | "
               "anchor loss | anchor share | s/step |"), "|---|---|---|---|---|---|---|"]
    gold_wild = groups["sft"][0]["eval"]["eval_wild"]["columns"]["gold"]
    for method, rs in groups.items():
        wrong = counter_means(rs, "groups/all_wrong")
        nll, share = counter_means(rs, "anchor/nll"), counter_means(rs, "anchor/share")
        step = [v for r in rs for _, v in r["counters"].get("step_time", [])]

        def thirds(m: dict) -> str:
            return "–" if m["first third"] is None else f"{m['first third']:.3f} / {m['last third']:.3f}"

        acc = " / ".join(f"{100 * mean([r['eval'][s]['metrics']['step_accuracy'] for r in rs]):.1f}" for s in SPLITS)
        top = " / ".join(f"{100 * mean([top_share(r, s) for r in rs]):.1f}%" for s in SPLITS)
        all_wrong = "–" if wrong["first third"] is None else \
            f"{100 * wrong['first third']:.1f}% / {100 * wrong['last third']:.1f}%"
        share_cell = "–" if share["first third"] is None else \
            f"{100 * mean([v for r in rs for _, v in r['counters']['anchor/share']]):.0f}%"
        lines.append(f"| {method} | {all_wrong} | {acc} | {top} | {thirds(nll)} | {share_cell} | "
                     f"{'–' if not step else f'{float(np.median(step)):.1f}'} |")
    wild_top = max(gold_wild.count(c) for c in set(gold_wild)) / len(gold_wild)
    lines += ["", f"(eval_wild's gold: its most frequent label is {100 * wild_top:.1f}% of the records.)", "",
              "## Anchor weight sweep (seed 0, final validation macro-F1)", "", "| method | 0.05 | 0.2 | chosen |",
              "|---|---|---|---|"]
    for method in ("grpo_anchored", "agrl_anchored"):
        cells = []
        for weight in (0.05, 0.2):
            hit = [r for r in runs if r["config"]["method"] == method and r["seed"] == 0
                   and r["config"].get("sft_anchor") == weight and "validation" in r["eval"]]
            cells.append(f"{100 * hit[0]['eval']['validation']['metrics']['macro_f1']:.1f}" if hit else "–")
        chosen = choices.get(method, {}).get("sft_anchor", "–")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {chosen} |")
    walls = [sum(c["wall_s"] for c in r["cost"].values()) for r in runs]
    lines += ["", f"Runs: {len(runs)}; summed run wall time {sum(walls) / 3600:.2f} h."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", nargs="+", help="`agrl run configs/study/anchor.yaml` results.json files")
    parser.add_argument("--save", action="store_true", help="write its finished runs to bench/results/anchor/")
    parser.add_argument("--out", help="folder of anchor.md (and, without --save, of the run files: OUT/anchor_runs); "
                                      "default: bench/results/anchor, or beside the first results.json")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else RESULTS if args.save or not args.results else Path(args.results[0]).parent
    folder = RESULTS if args.save or not args.results else out / "anchor_runs"
    for results in args.results or ():
        save(Path(results), folder)
    text = report(load(folder), "bench/results/anchor/*.json" if folder == RESULTS else str(folder))
    out.mkdir(parents=True, exist_ok=True)
    (out / "anchor.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
