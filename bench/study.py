"""The method study's report (issue 10, protocol bench/PROTOCOL.md): study.md and study_curves.png.

The study runs as one recipe, `agrl run configs/study/study.yaml` (sweep, main, stability, immediate
and the guided-SFT variant). This script renders its tables from the runs: an `agrl run` results.json
(--results), or the committed per-run files of the study as it was first run (bench/results/study/
*.json, the default). The pooled cells and paired differences are the library's (agrl.evaluation.metrics:
seeds and records resampled together); this file holds only the study's own tables (curves and
steps to GRPO's final macro-F1, mechanism counters, the sweep, stability, immediate, variants).

    agrl run configs/study/study.yaml --out runs/study --jobs 2
    PYTHONPATH=src python bench/study.py --results runs/study/results.json --out runs/study/study
    PYTHONPATH=src python bench/study.py            # from bench/results/study/*.json (the numbers of docs/results.md)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from agrl.evaluation.metrics import SEED_METRICS as METRICS
from agrl.evaluation.metrics import paired_difference, seed_table
from agrl.evaluation.report import columns
from agrl.evaluation.report import pct_cell as cell
from agrl.data.schemes import load_scheme
from agrl.core.synth import HARD

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "study"
RL = ("grpo", "grpo_dynamic", "grpo_pr", "agr_only", "agrl")
METHODS = ("dpo", *RL)
SPLITS = ("eval_balanced", "eval_wild")
SCHEME = load_scheme("default")


# ---------------------------------------------------------------------------- the runs


def read_files(results: Path) -> tuple[list[dict], dict, SimpleNamespace]:
    """The committed study: one JSON per run (its curve, counters and per-record eval columns)."""
    runs = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))
            if p.name not in ("choices.json", "study_stats.json")]
    return runs, json.loads((results / "choices.json").read_text()), SimpleNamespace(**runs[0]["settings"])


def read_results(path: Path) -> tuple[list[dict], dict, SimpleNamespace]:
    """An `agrl run configs/study/study.yaml` results.json, as the committed files' runs."""
    body = json.loads(path.read_text())
    rows = {row["dir"]: row for row in body["runs"]}
    runs = []
    for row in body["runs"]:
        config, stage = row["config"], row["stage"]
        method = config["method"]
        start = rows.get(config["model"], {}).get("config", {})
        guided = config.get("sft_guided_share") or start.get("sft_guided_share")
        phase = ("stability" if stage.startswith("stability_") else "immediate" if stage.startswith("immediate_")
                 else ("variant" if row["seed"] == 0 else "vseeds") if guided and method != "sft"
                 else "sweep" if row["sweep"] or "=" in row["name"] else "main")
        curve = {int(step): {k: m.get(k) for k in ("macro_f1", "accuracy", "format_valid", "adherence")}
                 for step, m in (row["curve"] or {}).items()}
        if method == "sft":  # step 0 of every RL curve
            curve = {0: curve[max(curve)]} if curve else {}
        elif len(curve) == 1:  # DPO and the stability runs: their final model, keyed by the RL budget
            curve = {body_steps(body): next(iter(curve.values()))}
        runs.append({
            "name": row["name"], "phase": phase, "method": method, "seed": row["seed"],
            "lr": None if method == "sft" else config["learning_rate"],
            "sets": ({"agr_mode": config["agr_mode"]} if phase == "immediate" else {})
            | ({"sft_guided_share": guided} if guided and method == "sft" else {}),
            "sft": {"sft_guided_share": guided} if guided and method != "sft" else {}, "code": "agrl run",
            "train_s": row["cost"].get(f"train {row['name']}", {}).get("wall_s", 0.0),
            "wall_s": sum(c["wall_s"] for c in row["cost"].values()), "curve": {str(k): v for k, v in curve.items()},
            "counters": row.get("counters") or {},
            "eval": {split: {"metrics": e["metrics"], "columns": columns(e["predictions"])}
                     for split, e in row["evals"].items() if split in SPLITS}})
    choices = {stage: point["learning_rate"] for stage, point in (body.get("choices") or {}).items()}
    grpo = next(r["config"] for r in body["runs"] if r["config"]["method"] == "grpo")
    s = SimpleNamespace(seeds=sorted({r["seed"] for r in runs if r["method"] == "sft"}),
                        lrs=sorted({r["lr"] for r in runs if r["phase"] == "sweep" and r["lr"]}),
                        steps=body_steps(body), generations=grpo["num_generations"],
                        prompts=grpo["per_device_train_batch_size"] // grpo["num_generations"],
                        resamples=body.get("resamples") or 1000)
    return runs, choices, s


def body_steps(body: dict) -> int:
    return max(r["config"].get("max_steps", -1) for r in body["runs"])


def load(runs: list[dict], phase: str | None = None) -> list[dict]:
    return [r for r in runs if phase is None or r["phase"] == phase]


def by_method(runs: list[dict], choices: dict) -> dict[str, list[dict]]:
    """method -> its main runs in seed order (seed 0 from the sweep at the chosen rate; SFT per seed)."""
    out = {"sft": sorted([r for r in runs if r["method"] == "sft" and not r["sets"]], key=lambda r: r["seed"])}
    for method, lr in choices.items():
        out[method] = sorted([r for r in runs if r["method"] == method and r["lr"] == lr and not r["sets"]
                              and not r.get("sft") and r["phase"] in ("sweep", "main")], key=lambda r: r["seed"])
    seeds = [r["seed"] for r in out["sft"]]
    return {m: rs for m, rs in out.items() if [r["seed"] for r in rs] == seeds}  # complete methods only


# ---------------------------------------------------------------------------- statistics (the library's)


def table(groups: dict[str, list[dict]], split: str, resamples: int) -> dict:
    return seed_table({m: [r["eval"][split]["columns"] for r in rs] for m, rs in groups.items()}, SCHEME, resamples,
                      HARD, METRICS)


def difference(a: list[dict], b: list[dict], split: str, metric: str, resamples: int) -> dict:
    return paired_difference([r["eval"][split]["columns"] for r in a], [r["eval"][split]["columns"] for r in b],
                             metric, SCHEME, resamples, HARD)


def family_accuracy(runs: list[dict], split: str) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for r in runs:
        c = r["eval"][split]["columns"]
        for family in sorted(set(c["family"])):
            idx = [i for i, f in enumerate(c["family"]) if f == family]
            out.setdefault(family, []).append(float(np.mean([c["gold"][i] == c["pred"][i] for i in idx])))
    return {f: float(np.mean(v)) for f, v in out.items()}


def mean_curve(runs: list[dict]) -> dict[int, tuple[float, float]]:
    """step -> (mean, std) of validation macro-F1 over seeds (step 0: the seed's SFT model)."""
    return {step: (float(np.mean(v)), float(np.std(v))) for step, v in _curve_points(runs).items()}


def _curve_points(runs: list[dict]) -> dict[int, list[float]]:
    points: dict[int, list[float]] = {}
    for r in runs:
        for step, m in r["curve"].items():
            points.setdefault(int(step), []).append(m["macro_f1"])
    return {k: v for k, v in sorted(points.items()) if len(v) == len(runs)}


# ---------------------------------------------------------------------------- report


def _final(run: dict) -> float:
    return run["curve"][str(max(map(int, run["curve"])))]["macro_f1"]


def _top_share(run: dict, split: str = "eval_balanced") -> float:
    pred = run["eval"][split]["columns"]["pred"]
    return max(pred.count(c) for c in set(pred)) / len(pred)


def _smooth(points: list[list[float]], width: int = 10) -> tuple[list[int], list[float]]:
    steps, values = [p[0] for p in points], [p[1] for p in points]
    out = [float(np.mean(values[max(0, i - width + 1): i + 1])) for i in range(len(values))]
    return steps, out


def counter_means(runs: list[dict], name: str) -> dict[str, float | None]:
    """A counter's mean over seeds in the first and last third of training."""
    thirds = {"first third": [], "last third": []}
    for r in runs:
        points = r["counters"].get(name, [])
        if not points:
            continue
        last = max(p[0] for p in points)
        thirds["first third"] += [v for step, v in points if step <= last / 3]
        thirds["last third"] += [v for step, v in points if step > 2 * last / 3]
    return {k: float(np.mean(v)) if v else None for k, v in thirds.items()}


def report(all_runs: list[dict], choices: dict, s, meta: dict, out: Path) -> str:
    groups = by_method(all_runs, choices)
    sft = {r["seed"]: r for r in groups["sft"]}
    for method in RL:  # step 0 of every curve: its seed's SFT model
        for r in groups.get(method, []):
            r["curve"].setdefault("0", sft[r["seed"]]["curve"]["0"])
    lines = [f"# The method study ({meta['date']}, {meta['machine']})", "",
             (f"Protocol: bench/PROTOCOL.md. Command: `{meta['command']}`. Result files: {meta['source']} "
              f"(code {', '.join(sorted({r['code'] for rs in groups.values() for r in rs}))})."),
             (f"Seeds {list(s.seeds)}; {s.steps} RL steps x {s.prompts} prompts x {s.generations} completions; "
              f"learning rates chosen per method on validation (seed 0) from {list(s.lrs)}."),
             ("Cells: percent, mean over seeds [95% bootstrap interval, seeds and records resampled] ±std across "
              "seeds. hard = negation, alternative, accessory and model families."), ""]
    stats = {}
    for split in SPLITS:
        stats[split] = table(groups, split, s.resamples)
        n = len(groups["sft"][0]["eval"][split]["columns"]["gold"])
        lines += [f"## {split} (n={n})", "", "| method | lr | " + " | ".join(METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for method, row in stats[split].items():
            lr = f"{choices[method]:g}" if method in choices else "–"
            lines.append(f"| {method} | {lr} | " + " | ".join(cell(row[m]) for m in METRICS) + " |")
        lines += ["", "Paired differences (points, [95% interval]):", ""]
        for base in ("grpo", "dpo", "grpo_pr", "sft"):
            if "agrl" in groups and base in groups:
                for metric in ("macro_f1", "hard_macro_f1", "adherence"):
                    d = difference(groups["agrl"], groups[base], split, metric, s.resamples)
                    iv = d["interval"]
                    lines.append(f"- AGRL - {base}, {metric}: {100 * d['delta']:+.1f}"
                                 + (f" [{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]" if iv else ""))
        lines += ["", "Accuracy per family (mean over seeds):", "",
                  "| method | " + " | ".join(family_accuracy(groups["sft"], split)) + " |",
                  "|---|" + "---|" * len(family_accuracy(groups["sft"], split))]
        for method, runs in groups.items():
            lines.append(f"| {method} | " + " | ".join(f"{100 * v:.0f}" for v in family_accuracy(runs, split).values())
                         + " |")
        lines.append("")
    curves = {m: mean_curve(groups[m]) for m in RL if m in groups}
    if "grpo" in curves:
        target = curves["grpo"][s.steps][0]
        lines += ["## Validation curves and steps to GRPO's final macro-F1", "",
                  f"Target: GRPO's final validation macro-F1, {100 * target:.1f} (mean over seeds).", "",
                  "| method | first step at target | share of steps | curve (step: mean ±std) |", "|---|---|---|---|"]
        for method, curve in curves.items():
            first = min((step for step, (v, _) in curve.items() if v >= target), default=None)
            share = "–" if first is None else f"{100 * first / s.steps:.0f}%"
            points = ", ".join(f"{k}: {100 * v:.1f} ±{100 * sd:.1f}" for k, (v, sd) in curve.items())
            lines.append(f"| {method} | {'not reached' if first is None else first} | {share} | {points} |")
        lines.append("")
    lines += ["## Mechanism counters (mean over seeds; first / last third of training)", "",
              "| method | counter | first third | last third |", "|---|---|---|---|"]
    for method in RL:
        for name in ("groups/all_wrong_hard", "groups/all_wrong_common", "groups/all_right", "agr/guided_acc",
                     "agr/replay_acc_at_flag", "agr/replay_acc", "agr/guided_group_share"):
            m = counter_means(groups.get(method, []), name)
            if any(v is not None for v in m.values()):
                cells = [("–" if v is None else f"{100 * v:.1f}") for v in m.values()]
                lines.append(f"| {method} | {name} | {cells[0]} | {cells[1]} |")
    lines += ["", "## Learning-rate sweep (seed 0, final validation macro-F1)", "",
              "| method | " + " | ".join(f"{lr:g}" for lr in s.lrs) + " | chosen |", "|---|" + "---|" * (len(s.lrs) + 1)]
    sweep = load(all_runs, "sweep")
    for method in METHODS:
        cells = [next((f"{100 * _final(r):.1f}" for r in sweep if r["method"] == method and r["lr"] == lr), "–")
                 for lr in s.lrs]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {choices.get(method, '–'):g} |")
    stability = load(all_runs, "stability")
    if stability:
        lines += ["", "## Stability at 4x the chosen rate (seed 0)", "",
                  "| method | lr | eval_balanced macro-F1 | eval_wild macro-F1 | top label share (eval_balanced) |",
                  "|---|---|---|---|---|"]
        for r in stability:
            lines.append(f"| {r['method']} | {r['lr']:g} | {100 * r['eval']['eval_balanced']['metrics']['macro_f1']:.1f} "
                         f"| {100 * r['eval']['eval_wild']['metrics']['macro_f1']:.1f} | {100 * _top_share(r):.0f}% |")
    immediate = load(all_runs, "immediate")
    if immediate and "agrl" in groups:
        deferred = groups["agrl"][0]
        lines += ["", "## AGRL: immediate against deferred mode (seed 0)", "",
                  "| mode | eval_balanced | eval_wild | validation | train seconds |", "|---|---|---|---|---|"]
        for mode, r in (("deferred", deferred), ("immediate", immediate[0])):
            lines.append(f"| {mode} | {100 * r['eval']['eval_balanced']['metrics']['macro_f1']:.1f} | "
                         f"{100 * r['eval']['eval_wild']['metrics']['macro_f1']:.1f} | {100 * _final(r):.1f} | "
                         f"{r['train_s']:.0f} |")
    lines += variant_lines(all_runs, groups, s)
    walls = [r["wall_s"] for r in load(all_runs)]
    lines += ["", f"Runs: {len(walls)}; summed run wall time {sum(walls) / 3600:.1f} h (1 torch thread each)."]
    plot(groups, curves, out)
    (out / "study_stats.json").write_text(json.dumps({"stats": stats, "choices": choices}, indent=1) + "\n")
    return "\n".join(lines) + "\n"


def _mean_counter(run: dict, name: str) -> str:
    values = [v for _, v in run["counters"].get(name, [])]
    return f"{100 * np.mean(values):.1f}" if values else "–"


def variant_lines(all_runs: list[dict], groups: dict[str, list[dict]], s) -> list[str]:
    """Variants on validation (seed 0) beside their method's main run, then on every seed if run."""
    variants = load(all_runs, "variant")
    if not variants:
        return []
    lines = ["", "## Variants (seed 0, validation; chosen on validation only)", "",
             "| run | validation macro-F1 (step: value) | guided_acc | all_wrong_hard |", "|---|---|---|---|"]
    for r in [*(groups[m][0] for m in dict.fromkeys(v["method"] for v in variants) if m in groups), *variants]:
        curve = ", ".join(f"{k}: {100 * v['macro_f1']:.1f}" for k, v in sorted(r["curve"].items(), key=lambda x: int(x[0])))
        lines.append(f"| {r['name']} | {curve} | {_mean_counter(r, 'agr/guided_acc')} | "
                     f"{_mean_counter(r, 'groups/all_wrong_hard')} |")
    seeded: dict[str, list[dict]] = {}
    for r in sorted([v for v in variants if "eval" in v] + load(all_runs, "vseeds"), key=lambda r: r["seed"]):
        seeded.setdefault(r["method"] + "".join(f" {k}={v}" for k, v in (*r["sets"].items(), *r.get("sft", {}).items())),
                          []).append(r)
    if not seeded:
        return lines
    starts = {r["seed"]: r for r in load(all_runs) if r["method"] == "sft" and r["sets"]}
    seeded = {"sft " + " ".join(f"{k}={v}" for k, v in next(iter(starts.values()))["sets"].items()):
              [starts[k] for k in sorted(starts)], **seeded}
    for split in SPLITS:
        stats = table(seeded, split, s.resamples)
        lines += ["", f"### Variants on every seed: {split}", "", "| run | " + " | ".join(METRICS) + " |",
                  "|---|" + "---|" * len(METRICS)]
        lines += [f"| {name} | " + " | ".join(cell(row[m]) for m in METRICS) + " |" for name, row in stats.items()]
        names = list(seeded)
        agrl = [n for n in names if n.startswith("agrl")]
        for other in [n for n in names if not n.startswith("agrl")] + ["grpo", "dpo"]:
            others = seeded.get(other) or groups.get(other)
            for metric in ("macro_f1", "hard_macro_f1") if agrl and others else ():
                d = difference(seeded[agrl[0]], others, split, metric, s.resamples)
                iv = d["interval"]
                lines.append(f"- {agrl[0]} - {other}, {metric}: {100 * d['delta']:+.1f}"
                             + (f" [{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]" if iv else ""))
    return lines


def plot(groups: dict[str, list[dict]], curves: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for method, curve in curves.items():
        steps = list(curve)
        mean, sd = np.array([v for v, _ in curve.values()]), np.array([d for _, d in curve.values()])
        axes[0].plot(steps, 100 * mean, label=method, marker="o", ms=3)
        axes[0].fill_between(steps, 100 * (mean - sd), 100 * (mean + sd), alpha=0.15)
    axes[0].set(title="validation macro-F1 (mean ±std over seeds)", xlabel="RL step", ylabel="macro-F1 (%)")
    axes[0].legend(fontsize=8)
    for ax, name in zip(axes[1:], ("groups/all_wrong_hard", "groups/all_wrong_common")):
        for method in curves:
            runs = [r for r in groups[method] if r["counters"].get(name)]
            if not runs:
                continue
            steps, values = zip(*(_smooth(r["counters"][name]) for r in runs))
            length = min(map(len, values))
            ax.plot(steps[0][:length], 100 * np.mean([v[:length] for v in values], axis=0), label=method)
        ax.set(title=f"{name} (10-step mean)", xlabel="RL step", ylabel="share of groups (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "study_curves.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", help="an `agrl run configs/study/study.yaml` results.json "
                                          "(default: the committed bench/results/study/*.json)")
    parser.add_argument("--out", help="where study.md, study_curves.png and study_stats.json go "
                                      "(default: beside the runs)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.results:
        runs, choices, s = read_results(Path(args.results))
        out = Path(args.out or Path(args.results).parent / "study")
    else:
        runs, choices, s = read_files(RESULTS)
        out = Path(args.out or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.datetime.now(datetime.UTC).date().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
            "command": "python bench/study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "source": args.results or "bench/results/study/*.json"}
    text = report(runs, choices, s, meta, out)
    (out / "study.md").write_text(text)
    print(text)
    print(f"wall {time.perf_counter() - start:.0f} s")
    return text


if __name__ == "__main__":
    main()
