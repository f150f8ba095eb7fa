"""Quality: SFT, DPO, GRPO, GRPO + dynamic sampling, GRPO-PR, AGR-only and AGRL on the synthetic benchmark.

Claim (spec sections 5, 6, 9): from one SFT checkpoint and the same rollout budget, AGRL beats GRPO
and DPO on macro-F1 (by >= 3 points, intervals apart) and reaches GRPO's final macro-F1 in <= 60%
of GRPO's steps. Everything runs through the `agrl` CLI (`python -m agrl`, no console script needed)
with the repo's configs/*.yaml plus `--set` overrides, as subprocesses with one torch thread each,
`--jobs` of them at a time. Per seed: model init, SFT, then every method from that SFT checkpoint.
Equal budget: every RL method generates steps x batch completions (AGRL in deferred mode: guided
rollouts take slots of the batch, no extra generation pass); DPO mines pass@N pairs from as many
samples. Intermediate checkpoints (every --eval-every steps) are evaluated on the first
--curve-records of eval_balanced to measure steps-to-target. Writes OUT/quality.json + quality.md.
A pretrained judge: `--base DIR` starts every seed's SFT from that checkpoint (e.g. `agrl model import
smollm2`) instead of a fresh tiny model; `--train-set lora_r=16` trains LoRA in every stage
(bench/gpu_quality.sh does both on one GPU).

    PYTHONPATH=src python bench/quality.py --out runs/quality --seeds 0,1,2 --jobs 16
    PYTHONPATH=src python bench/quality.py --quick --out /tmp/quality       # smoke run, ~minutes
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from study import cell as _cell  # bench/ is on sys.path: the study's metrics and cells
from study import score as column_score

from agrl.metrics import bootstrap_interval

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("sft", "dpo", "grpo", "grpo_dynamic", "grpo_pr", "agr_only", "agrl")
RL_METHODS = ("grpo", "grpo_dynamic", "grpo_pr", "agr_only", "agrl")
SPLITS = ("eval_balanced", "eval_wild")


@dataclass
class Settings:
    """Sizes of one benchmark run (the full run's defaults; --quick shrinks them)."""

    data_size: str = "default"  # agrl data synth --size
    model_size: str = "tiny"
    # 30 epochs: the tiny model needs ~500 steps on the 600 SFT rows to write valid, non-trivial judgements
    sft: dict = field(default_factory=lambda: {"num_train_epochs": 30, "learning_rate": 2e-3,
                                               "per_device_train_batch_size": 32})
    rl: dict = field(default_factory=lambda: {"learning_rate": 5e-5, "temperature": 0.7})  # every RL method
    steps: int = 120  # optimizer steps of every RL method
    prompts: int = 8  # prompts per step (x num_generations completions)
    generations: int = 4
    completion_tokens: int = 96
    eval_limit: int | None = None  # records per eval split (None: all)
    eval_every: int = 20
    curve_records: int = 200
    resamples: int = 1000
    base: str | None = None  # start SFT from this checkpoint (every seed) instead of `agrl model init`
    train: dict = field(default_factory=dict)  # `--set`s of every training stage (SFT, DPO, RL)


QUICK = Settings(data_size="small", sft={"num_train_epochs": 2, "learning_rate": 2e-3}, steps=4, prompts=4,
                 completion_tokens=64, eval_limit=24, eval_every=2, curve_records=16, resamples=200)


# ---------------------------------------------------------------------------- the task graph


@dataclass
class Task:
    name: str
    argv: list[str]  # after `python -m agrl`
    done: Path  # exists once the task has finished (a rerun skips it)
    deps: tuple[str, ...] = ()


def _train_task(name: str, config: str, sets: dict, deps: tuple[str, ...], out: Path) -> Task:
    argv = ["train", str(ROOT / "configs" / config)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={'null' if value is None else value}"]
    lora = int(sets.get("lora_r") or 0) > 0  # a LoRA run leaves an adapter, not full weights
    return Task(name, argv, out / ("adapter_model.safetensors" if lora else "model.safetensors"), deps)


def _eval_task(name: str, model: Path, data: Path, out: Path, dep: str, s: Settings, limit: int | None,
               posterior: bool = True) -> Task:
    argv = ["eval", "--model", str(model), "--data", str(data), "--out", str(out), "--batch-size", "64",
            "--max-new-tokens", str(s.completion_tokens + 32), "--resamples", str(s.resamples if posterior else 0)]
    argv += ["--limit", str(limit)] if limit else []
    argv += [] if posterior else ["--no-posterior"]
    return Task(name, argv, out, (dep,))


def method_sets(method: str, seed: int, s: Settings, out: Path) -> dict:
    """`--set` overrides of one method's config: paths, seed, budget, checkpoints for the curve."""
    sets = {"model": out / f"seed{seed}" / "sft", "train_file": out / "data" / "rl.jsonl",
            "output_dir": out / f"seed{seed}" / method, "seed": seed, "report_to": "none", "disable_tqdm": True}
    sets |= s.train
    if method == "dpo":  # as many sampled completions as an RL method generates
        return sets | {"max_train_records": s.steps * s.prompts, "dpo_samples": s.generations,
                       "dpo_max_new_tokens": s.completion_tokens, "save_strategy": "'no'"}
    return sets | {"max_steps": s.steps, "per_device_train_batch_size": s.prompts * s.generations,
                   "num_generations": s.generations, "max_completion_length": s.completion_tokens,
                   "save_steps": s.eval_every, "save_total_limit": None, "logging_steps": 1} | s.rl


def build_tasks(out: Path, seeds: list[int], methods: list[str], s: Settings) -> dict[str, Task]:
    data = out / "data"
    tasks = {"data": Task("data", ["data", "synth", "--out", str(data), "--seed", "0", "--size", s.data_size],
                          data / "eval_wild.jsonl")}
    for seed in seeds:
        run = out / f"seed{seed}"
        if not s.base:  # with a base model the seed only changes SFT's and RL's randomness
            tasks[f"model/{seed}"] = Task(f"model/{seed}", ["model", "init", "--out", str(run / "model"), "--size",
                                                            s.model_size, "--seed", str(seed)], run / "model" / "config.json")
        sft_sets = {"model": s.base or run / "model", "train_file": data / "sft.jsonl", "output_dir": run / "sft",
                    "seed": seed, "report_to": "none", "disable_tqdm": True, "save_strategy": "'no'"} | s.train | s.sft
        deps = ("data",) if s.base else ("data", f"model/{seed}")
        tasks[f"sft/{seed}"] = _train_task(f"sft/{seed}", "sft.yaml", sft_sets, deps, run / "sft")
        for method in methods:
            if method != "sft":
                tasks[f"{method}/{seed}"] = _train_task(f"{method}/{seed}", f"{method}.yaml",
                                                        method_sets(method, seed, s, out), (f"sft/{seed}",),
                                                        run / method)
            for split in SPLITS:
                name = f"eval/{method}/{seed}/{split}"
                tasks[name] = _eval_task(name, run / method, data / f"{split}.jsonl",
                                         run / method / "eval" / f"{split}.json", f"{method}/{seed}", s, s.eval_limit)
            if method in RL_METHODS:  # the steps-to-target curve
                tasks |= _curve_tasks(method, seed, s, out)
        tasks |= _curve_tasks("sft", seed, s, out)  # its step 0
    return tasks


def _curve_tasks(method: str, seed: int, s: Settings, out: Path) -> dict[str, Task]:
    """Greedy evals of checkpoints every `eval_every` steps on the first `curve_records` of eval_balanced
    (step 0: the SFT model; the last step: the final model)."""
    run, tasks = out / f"seed{seed}", {}
    for step in [0] if method == "sft" else range(s.eval_every, s.steps + 1, s.eval_every):
        model = run / "sft" if step == 0 else run / method if step == s.steps else run / method / f"checkpoint-{step}"
        name = f"curve/{method}/{seed}/{step}"
        tasks[name] = _eval_task(name, model, out / "data" / "eval_balanced.jsonl",
                                 run / "curves" / method / f"step{step}.json", f"{method}/{seed}", s,
                                 s.curve_records, posterior=False)
    return tasks


def _run(task: Task, logs: Path, env: dict) -> float:
    log = logs / (task.name.replace("/", "_") + ".log")
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.call([sys.executable, "-m", "agrl", *task.argv], stdout=handle, stderr=subprocess.STDOUT,
                               env=env, cwd=ROOT)
    if code != 0:
        raise RuntimeError(f"{task.name} failed (exit {code}); see {log}")
    return time.perf_counter() - start


def run_tasks(tasks: dict[str, Task], jobs: int, logs: Path) -> dict[str, float]:
    """Run the graph, `jobs` subprocesses at a time (each one torch thread); returns wall seconds per task."""
    logs.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                        "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
                            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    pending, finished, running, timings = dict(tasks), set(), {}, {}
    with ThreadPoolExecutor(jobs) as pool:
        while pending or running:
            for name in [n for n, t in pending.items() if set(t.deps) <= finished]:
                if len(running) >= jobs:
                    break
                task = pending.pop(name)
                if task.done.exists():
                    finished.add(name)
                    continue
                running[pool.submit(_run, task, logs, env)] = name
            if not running:
                if pending and not any(set(t.deps) <= finished for t in pending.values()):
                    raise RuntimeError(f"unmet dependencies: {sorted(pending)[:5]}")
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                timings[name] = future.result()  # a failure raises here, naming its log
                finished.add(name)
                print(f"[{time.strftime('%H:%M:%S')}] {name}: {timings[name]:.0f} s "
                      f"({len(finished)}/{len(tasks)})", flush=True)
    return timings


# ---------------------------------------------------------------------------- results


@dataclass
class Preds:
    """One run's predictions on a split as columns (pred -1: rejected by the parser), scored by study.py."""

    cols: dict

    @classmethod
    def read(cls, path: Path, ids: list[str] | None = None) -> Preds:
        rows = {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}
        rows = [rows[i] for i in (ids or sorted(rows))]
        return cls({"gold": [r["gold"] for r in rows], "pred": [-1 if r["pred"] is None else r["pred"] for r in rows],
                    "family": [r["family"] for r in rows], "adheres": [r["adheres"] for r in rows]})

    @property
    def gold(self) -> list[int]:
        return self.cols["gold"]

    def score(self, metric: str, index: np.ndarray | None = None) -> float | None:
        return column_score(self.cols, metric, np.arange(len(self.gold)) if index is None else index)


METRICS = ("macro_f1", "accuracy", "good_f1", "adherence", "hard_macro_f1", "format_valid")
INTERVAL_METRICS = ("macro_f1", "accuracy", "good_f1", "hard_macro_f1")


def _seed_mean(runs: list[Preds], metric: str, index: np.ndarray | None = None) -> float | None:
    values = [v for v in (run.score(metric, index) for run in runs) if v is not None]
    return float(np.mean(values)) if values else None


def method_result(runs: list[Preds], s: Settings) -> dict:
    """Per metric: mean over seeds, std across seeds, and a bootstrap interval of the seed mean
    (eval records resampled, the same resample for every seed)."""
    out: dict = {"n": len(runs[0].gold), "seeds": len(runs)}
    for metric in METRICS:
        values = [v for v in (run.score(metric) for run in runs) if v is not None]
        interval = (bootstrap_interval(len(runs[0].gold), lambda i, m=metric: _seed_mean(runs, m, i), s.resamples)
                    if metric in INTERVAL_METRICS else None)
        out[metric] = {"mean": float(np.mean(values)) if values else None, "per_seed": values,
                       "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                       "interval": list(interval) if interval else None}
    return out


def difference(a: list[Preds], b: list[Preds], s: Settings, metric: str = "macro_f1") -> dict:
    """Paired bootstrap of seed-mean(a) - seed-mean(b) over the same eval records."""

    def stat(index: np.ndarray | None) -> float | None:
        x, y = _seed_mean(a, metric, index), _seed_mean(b, metric, index)
        return None if x is None or y is None else x - y

    interval = bootstrap_interval(len(a[0].gold), stat, s.resamples)
    return {"delta": stat(None), "interval": list(interval) if interval else None}


def curve(out: Path, method: str, seeds: list[int], s: Settings) -> dict[int, float]:
    """step -> macro-F1 on the curve subset, mean over seeds (step 0 is the SFT model)."""
    points: dict[int, list[float]] = {}
    for seed in seeds:
        for step in range(0, s.steps + 1, s.eval_every):
            path = out / f"seed{seed}" / "curves" / ("sft" if step == 0 else method) / f"step{step}.json"
            if path.exists():
                points.setdefault(step, []).append(json.loads(path.read_text())["metrics"]["macro_f1"])
    return {step: float(np.mean(v)) for step, v in sorted(points.items()) if len(v) == len(seeds)}


def steps_to(curves: dict[str, dict[int, float]], s: Settings) -> dict[str, dict]:
    """First checkpoint where a method's mean curve reaches GRPO's final value, and its share of the steps."""
    if s.steps not in curves.get("grpo", {}):
        return {}
    target = curves["grpo"][s.steps]
    out = {}
    for method, points in curves.items():
        first = min((step for step, value in points.items() if value >= target), default=None)
        out[method] = {"target": target, "step": first, "share": None if first is None else first / s.steps}
    return out


def collect(out: Path, seeds: list[int], methods: list[str], s: Settings) -> dict:
    results: dict = {"splits": {}, "differences": {}}
    for split in SPLITS:
        files = {m: [out / f"seed{seed}" / m / "eval" / f"{split}.predictions.jsonl" for seed in seeds] for m in methods}
        ids = sorted(json.loads(line)["id"] for line in files[methods[0]][0].read_text().splitlines())
        runs = {m: [Preds.read(f, ids) for f in paths] for m, paths in files.items()}
        results["splits"][split] = {m: method_result(r, s) for m, r in runs.items()}
        results["differences"][split] = {f"agrl - {b}": difference(runs["agrl"], runs[b], s)
                                         for b in ("grpo", "dpo") if "agrl" in runs and b in runs}
    results["curves"] = {m: curve(out, m, seeds, s) for m in methods if m in RL_METHODS}
    results["steps_to_grpo_final"] = steps_to(results["curves"], s)
    return results


# ---------------------------------------------------------------------------- report


def markdown(results: dict, meta: dict) -> str:
    s = meta["settings"]
    budget = s["steps"] * s["prompts"] * s["generations"]
    lines = [
        f"# Quality benchmark ({meta['date']}, {meta['machine']})", "",
        f"`{meta['command']}`; wall time {meta['wall_s'] / 60:.1f} min, {meta['jobs']} job(s).",
        (f"Seeds {meta['seeds']}; {s['steps']} RL steps x {s['prompts']} prompts x {s['generations']} completions "
         f"= {budget} generated completions per RL run (AGRL and AGR-only in deferred mode: no extra "
         "generation); DPO mines pairs from as many samples."),
        ("Cells: percent, mean over seeds [95% paired bootstrap interval of the seed mean, eval records "
         "resampled] ±std across seeds. hard = negation, alternative, accessory and model families."), "",
    ]
    for split, methods in results["splits"].items():
        n = next(iter(methods.values()))["n"]
        lines += [f"## {split} (n={n})", "", "| method | " + " | ".join(METRICS) + " |",
                  "|---|" + "---|" * len(METRICS)]
        lines += [f"| {m} | " + " | ".join(_cell(r[k]) for k in METRICS) + " |" for m, r in methods.items()]
        for name, diff in results["differences"][split].items():
            iv = diff["interval"]
            lines.append(f"\n{name}, macro-F1: {100 * diff['delta']:+.1f} points"
                         + (f" [{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]" if iv else ""))
        lines.append("")
    if results["steps_to_grpo_final"]:
        first = next(iter(results["steps_to_grpo_final"].values()))
        lines += [
            "## Steps to reach GRPO's final macro-F1", "",
            (f"Target {100 * first['target']:.1f} (GRPO at step {s['steps']}, mean over seeds, greedy, first "
             f"{s['curve_records']} records of eval_balanced); checkpoints every {s['eval_every']} steps."), "",
            "| method | first step | share of GRPO's steps | curve (step: macro-F1) |", "|---|---|---|---|",
        ]
        if results["curves"]["grpo"].get(0, -1.0) >= first["target"]:
            lines[-4] += " GRPO ended no better than the SFT model (step 0), so every method meets the target at 0."
        for method, hit in results["steps_to_grpo_final"].items():
            points = ", ".join(f"{k}: {100 * v:.1f}" for k, v in results["curves"][method].items())
            share = "–" if hit["share"] is None else f"{100 * hit['share']:.0f}%"
            lines.append(f"| {method} | {hit['step'] if hit['step'] is not None else 'not reached'} | {share} | "
                         f"{points} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/quality", help="everything goes under this directory")
    parser.add_argument("--seeds", help="comma-separated seeds: model init, SFT, RL (default 0,1,2; quick 0)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--steps", type=int, help="RL steps per method (default 120; quick 4)")
    parser.add_argument("--eval-every", type=int, help="checkpoint evals for the steps-to-target curve")
    parser.add_argument("--eval-limit", type=int, help="records per eval split (default: all)")
    parser.add_argument("--curve-records", type=int, help="eval_balanced records per curve point (default 200)")
    parser.add_argument("--rl-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra `agrl train --set` for every RL method, e.g. learning_rate=1e-4 (repeatable)")
    parser.add_argument("--sft-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra `agrl train` key for SFT, e.g. sft_guided_share=0.3 (repeatable)")
    parser.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra `agrl train` key for every stage (SFT, DPO, RL), e.g. lora_r=16 (repeatable)")
    parser.add_argument("--base", help="start SFT from this model directory (every seed) instead of a tiny model")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one torch thread each)")
    parser.add_argument("--quick", action="store_true", help="smoke sizes: small data, 4 steps, 1 seed")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else Settings()
    s = replace(s, steps=args.steps or s.steps, eval_every=args.eval_every or s.eval_every,
                eval_limit=args.eval_limit or s.eval_limit, curve_records=args.curve_records or s.curve_records,
                rl=s.rl | dict(item.split("=", 1) for item in args.rl_set),
                sft=s.sft | dict(item.split("=", 1) for item in args.sft_set),
                train=dict(item.split("=", 1) for item in args.train_set),
                base=str(Path(args.base).resolve()) if args.base else None)
    if s.base and not (Path(s.base) / "config.json").is_file():
        parser.error(f"--base {args.base}: not a model directory")
    if s.steps % s.eval_every:
        parser.error(f"--steps ({s.steps}) must be a multiple of --eval-every ({s.eval_every})")
    seeds = [int(x) for x in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown or "sft" not in methods:
        parser.error(f"--methods: unknown {sorted(unknown)} (choose from {METHODS}; sft is required)")
    out = Path(args.out).resolve()
    start = time.perf_counter()
    timings = run_tasks(build_tasks(out, seeds, methods, s), args.jobs, out / "logs")
    results = collect(out, seeds, methods, s)
    meta = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus", "jobs": args.jobs, "seeds": seeds,
            "command": " ".join(["python bench/quality.py", *(argv if argv is not None else sys.argv[1:])]),
            "wall_s": time.perf_counter() - start, "settings": vars(s), "task_seconds": timings}
    (out / "quality.json").write_text(json.dumps(meta | results, indent=2) + "\n")
    (out / "quality.md").write_text(markdown(results, meta))
    print((out / "quality.md").read_text())
    return results


if __name__ == "__main__":
    main()
