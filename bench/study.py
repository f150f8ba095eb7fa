"""The method study (issue 10): SFT, DPO, GRPO, GRPO + dynamic sampling, GRPO-PR, AGR-only and AGRL
from the shipped base judge, under the protocol fixed in bench/PROTOCOL.md before the first run.

Phases, each a set of runs; a run is one `agrl train` (subprocess, one torch thread) from its seed's
SFT checkpoint, then greedy `agrl eval`s of its checkpoints on the validation split (the curve) and
of its final model on both eval sets. A finished run writes bench/results/study/RUN.json (its curve,
its training counters and its per-record eval predictions) and deletes its checkpoints; a rerun
skips runs whose result file exists, so a killed study loses at most the runs in progress.

- sweep: every method at each learning rate of the grid, seed 0; the best final validation
  macro-F1 picks each method's rate (written to choices.json; eval sets never looked at).
- main: every method at its chosen rate, every seed.
- stability: every RL method at 4x its chosen rate, seed 0 (does it collapse to one label?).
- immediate: AGRL in immediate mode at AGRL's chosen rate, seed 0.
- report: tables (study.md), curves (study_curves.png) from the result files only.

    PYTHONPATH=src python bench/study.py --phase all --jobs 2      # the whole study (PROTOCOL.md)
    PYTHONPATH=src python bench/study.py --phase report            # tables and plots from results
    PYTHONPATH=src python bench/study.py --quick --phase all --out /tmp/study  # smoke, minutes
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from agrl.data import split_by_query, write_jsonl
from agrl.metrics import good_f1, macro_f1
from agrl.schemes import load_scheme
from agrl.synth import HARD, generate
from agrl.tiny import base_judge_dir

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "study"
RL = ("grpo", "grpo_dynamic", "grpo_pr", "agr_only", "agrl")
METHODS = ("dpo", *RL)
SPLITS = ("eval_balanced", "eval_wild")
SCHEME = load_scheme("default")
RECIPE = ROOT / "src" / "agrl" / "recipes" / "demo" / "default.yaml"


@dataclass(frozen=True)
class Settings:
    """The protocol's budget (PROTOCOL.md); --quick shrinks it for a smoke run."""

    seeds: tuple[int, ...] = (0, 1, 2)
    lrs: tuple[float, ...] = (2e-5, 6e-5, 2e-4)  # the sweep grid, every method
    steps: int = 100  # optimizer steps of every RL method
    prompts: int = 8  # prompts per step
    generations: int = 4  # completions per prompt
    completion_tokens: int = 96
    temperature: float = 0.7
    eval_every: int = 20  # checkpoints on the validation curve
    validation_share: float = 0.2  # of the RL pool's queries (849 records)
    eval_limit: int | None = None  # records per eval set (None: all 1,000)
    curve_limit: int | None = None  # validation records per curve point (None: all)
    resamples: int = 1000
    data_sizes: dict = field(default_factory=lambda: {"sft": 600, "rl": 4000, "eval_balanced": 1000,
                                                      "eval_wild": 1000})


QUICK = Settings(seeds=(0, 1), lrs=(5e-5, 2e-4), steps=4, prompts=4, completion_tokens=64, eval_every=2,
                 eval_limit=24, curve_limit=24, resamples=100,
                 data_sizes={"sft": 64, "rl": 160, "eval_balanced": 40, "eval_wild": 40})


@dataclass(frozen=True)
class Run:
    phase: str
    method: str  # "sft" or one of METHODS
    seed: int
    lr: float | None = None
    sets: tuple[tuple[str, object], ...] = ()  # extra `agrl train --set`s
    sft: tuple[tuple[str, object], ...] = ()  # extra `--set`s of the SFT run it starts from

    @property
    def name(self) -> str:
        extra = "".join(f"-{k}={v}" for k, v in (*self.sets, *self.sft))
        if self.method == "sft":
            return f"sft{extra}-s{self.seed}"
        return f"{self.phase}-{self.method}-lr{self.lr:g}{extra}-s{self.seed}"

    @property
    def start(self) -> Run:
        """The SFT run this run starts from."""
        return Run("sft", "sft", self.seed, sets=self.sft)


# ---------------------------------------------------------------------------- data


def prepare_data(work: Path, s: Settings) -> Path:
    """The demo recipe's synthetic benchmark (seed 0), its RL pool split by query into rl_train and
    validation (query-disjoint from each other and, by construction, from the eval sets)."""
    data = work / "data"
    if (data / "validation.jsonl").exists():
        return data
    recipe = yaml.safe_load(RECIPE.read_text())["data"]
    splits = generate(seed=recipe["seed"], sizes=s.data_sizes, noise=recipe["noise"])
    parts = split_by_query(splits.pop("rl"), {"rl_train": 1 - s.validation_share,
                                              "validation": s.validation_share}, seed=0)
    data.mkdir(parents=True, exist_ok=True)
    for name, records in {**splits, **parts}.items():
        write_jsonl(records, data / f"{name}.jsonl")
    return data


# ---------------------------------------------------------------------------- commands of a run


def _sets(values: dict) -> list[str]:
    argv = []
    for key, value in values.items():
        argv += ["--set", f"{key}={'null' if value is None else value}"]
    return argv


def sft_argv(run: Run, work: Path) -> list[str]:
    """SFT from the shipped base judge with the demo recipe's SFT stage (the seed changes its order)."""
    recipe = yaml.safe_load(RECIPE.read_text())
    stage = {k: v for k, v in recipe["stages"]["sft"].items() if k not in ("config", "from", "data")}
    sets = {"report_to": "none", "disable_tqdm": True, "logging_steps": 1, "save_strategy": "no", **stage,
            "model": base_judge_dir(recipe["model"]["base"]), "train_file": work / "data" / "sft.jsonl",
            "output_dir": work / "runs" / run.name, "seed": run.seed, **dict(run.sets)}
    return ["train", str(ROOT / "configs" / recipe["stages"]["sft"]["config"]), *_sets(sets)]


def train_argv(run: Run, work: Path, s: Settings) -> list[str]:
    """configs/METHOD.yaml with the protocol's budget, paths, seed and learning rate."""
    sets = {"model": work / "runs" / run.start.name, "train_file": work / "data" / "rl_train.jsonl",
            "output_dir": work / "runs" / run.name, "seed": run.seed, "learning_rate": run.lr,
            "report_to": "none", "disable_tqdm": True}
    if run.method == "dpo":  # pairs mined from as many sampled completions as an RL run generates
        sets |= {"max_train_records": s.steps * s.prompts, "dpo_samples": s.generations,
                 "dpo_max_new_tokens": s.completion_tokens, "save_strategy": "'no'"}
    else:
        sets |= {"max_steps": s.steps, "per_device_train_batch_size": s.prompts * s.generations,
                 "num_generations": s.generations, "max_completion_length": s.completion_tokens,
                 "temperature": s.temperature, "save_steps": s.eval_every, "save_total_limit": None,
                 "logging_steps": 1}
    sets |= dict(run.sets)
    return ["train", str(ROOT / "configs" / f"{run.method}.yaml"), *_sets(sets)]


def eval_argv(model: Path, data: Path, out: Path, s: Settings, limit: int | None) -> list[str]:
    argv = ["eval", "--model", str(model), "--data", str(data), "--out", str(out), "--batch-size", "64",
            "--max-new-tokens", str(s.completion_tokens + 32), "--resamples", "0", "--no-posterior"]
    return argv + (["--limit", str(limit)] if limit else [])


ENV = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                    "HF_HUB_OFFLINE": "1",
                    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}


def agrl(argv: list[str], log: Path) -> None:
    with log.open("a") as handle:
        handle.write(f"$ agrl {' '.join(argv)}\n")
        handle.flush()
        code = subprocess.call([sys.executable, "-m", "agrl", *argv], stdout=handle, stderr=subprocess.STDOUT,
                               env=ENV, cwd=ROOT)
    if code != 0:
        raise RuntimeError(f"agrl {argv[0]} failed (exit {code}); see {log}")


# ---------------------------------------------------------------------------- one run


def columns(predictions: Path) -> dict:
    """Per-record eval outcome as columns in id order (pred -1: rejected by the parser)."""
    rows = sorted(map(json.loads, predictions.read_text().splitlines()), key=lambda r: r["id"])
    return {"ids_sha": hashlib.sha256("\n".join(r["id"] for r in rows).encode()).hexdigest()[:16],
            "gold": [r["gold"] for r in rows], "family": [r["family"] for r in rows],
            "pred": [-1 if r["pred"] is None else r["pred"] for r in rows],
            "adheres": [None if r["adheres"] is None else int(r["adheres"]) for r in rows],
            "step_accuracy": [r["step_accuracy"] for r in rows]}


COUNTERS = ("rewards/outcome/mean", "frac_reward_zero_std", "groups/all_wrong", "groups/all_wrong_hard",
            "groups/all_wrong_common", "groups/all_right", "agr/guided_group_share", "agr/guided_acc",
            "agr/group_acc_before", "agr/group_acc_after", "agr/replay_acc", "agr/replay_acc_at_flag",
            "agr/threshold", "dynamic_sampling/dropped_groups", "entropy", "step_time")


def counters(out: Path) -> dict[str, list[list[float]]]:
    """Training counters by step from metrics.jsonl: name -> [[step, value], ...]."""
    path = out / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {name: [[row["step"], row[name]] for row in rows if isinstance(row.get(name), (int, float))]
            for name in COUNTERS if any(name in row for row in rows)}


def code_version() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def curve_steps(run: Run, s: Settings) -> list[int]:
    """Checkpoints evaluated on validation: SFT its model (step 0); DPO and the stability runs their final
    model (keyed by the budget's step count); the rest every `eval_every` steps."""
    if run.method == "sft":
        return [0]
    if run.method == "dpo" or run.phase == "stability":
        return [s.steps]
    return list(range(s.eval_every, s.steps + 1, s.eval_every))


def done(run: Run, results: Path, eval_sets: bool) -> bool:
    path = results / f"{run.name}.json"
    return path.exists() and (not eval_sets or "eval" in json.loads(path.read_text()))


def execute(run: Run, work: Path, s: Settings, results: Path, eval_sets: bool = True) -> Path:
    """Train, evaluate on validation (and on the eval sets when `eval_sets`), write the result file,
    delete the checkpoints. Idempotent: every finished piece is on disk and skipped on a rerun."""
    target = results / f"{run.name}.json"
    out, data = work / "runs" / run.name, work / "data"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{run.name}.log"
    start = time.perf_counter()
    if not (out / "model.safetensors").exists():
        agrl(sft_argv(run, work) if run.method == "sft" else train_argv(run, work, s), log)
    train_s = time.perf_counter() - start
    curve = {}
    for step in curve_steps(run, s):
        model = out if step in (0, s.steps) else out / f"checkpoint-{step}"
        path = out / "curve" / f"step{step}.json"
        if not path.exists():
            agrl(eval_argv(model, data / "validation.jsonl", path, s, s.curve_limit), log)
        metrics = json.loads(path.read_text())["metrics"]
        curve[step] = {k: metrics[k] for k in ("macro_f1", "accuracy", "format_valid", "adherence")}
    evals = {}
    for split in SPLITS if eval_sets else ():
        path = out / "eval" / f"{split}.json"
        if not path.exists():
            agrl(eval_argv(out, data / f"{split}.jsonl", path, s, s.eval_limit), log)
        evals[split] = {"metrics": json.loads(path.read_text())["metrics"],
                        "columns": columns(path.with_suffix(".predictions.jsonl"))}
    result = {"name": run.name, "phase": run.phase, "method": run.method, "seed": run.seed, "lr": run.lr,
              "sets": dict(run.sets), "sft": dict(run.sft), "code": code_version(), "settings": _jsonable(vars(s)),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cpus, 1 torch thread",
              "train_s": train_s, "wall_s": time.perf_counter() - start,
              "curve": curve, "counters": counters(out)} | ({"eval": evals} if eval_sets else {})
    if target.exists():  # adding the eval sets to a finished run: it trained on the code and time it recorded
        result |= {k: v for k, v in json.loads(target.read_text()).items() if k in ("code", "date", "train_s")}
    results.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(result) + "\n")
    tmp.replace(target)
    for checkpoint in out.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    return target


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------------------- phases


def load(results: Path, phase: str | None = None) -> list[dict]:
    out = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))
           if p.name not in ("choices.json", "study_stats.json")]
    return [r for r in out if phase is None or r["phase"] == phase]


def choose(results: Path, s: Settings) -> dict[str, float]:
    """Each method's rate: the best final validation macro-F1 of its seed-0 sweep runs (ties: lower rate)."""
    sweep = load(results, "sweep")
    choices = {}
    for method in METHODS:
        runs = [r for r in sweep if r["method"] == method]
        if len(runs) < len(s.lrs):
            raise SystemExit(f"the sweep of {method} is not finished ({len(runs)}/{len(s.lrs)} runs); "
                             "run --phase sweep first")
        final = lambda r: r["curve"][str(max(map(int, r["curve"])))]["macro_f1"]
        choices[method] = min(runs, key=lambda r: (-final(r), r["lr"]))["lr"]
    (results / "choices.json").write_text(json.dumps(choices, indent=2) + "\n")
    return choices


# Design choices the paper leaves open (issue 10, item 5), one at a time, seed 0, chosen rates, validation
# only: (method, its extra --sets, extra --sets of the SFT it starts from). Picked after the main study
# from its validation counters (PROTOCOL.md, notes).
VARIANTS: list[tuple[str, tuple, tuple]] = [
    # guided rollouts were right 9% of the time in the main study (agr/guided_acc): the SFT judge never
    # saw a guided prompt. 30% of SFT rows again with guidance (random level) in the prompt, same target.
    ("agrl", (), (("sft_guided_share", 0.3),)),
    ("grpo", (), (("sft_guided_share", 0.3),)),
]


def phase_runs(phase: str, results: Path, s: Settings) -> list[Run]:
    if phase == "pilot":  # sizing before the protocol: GRPO and AGRL at the grid's middle rate
        return [Run("pilot", m, s.seeds[0], s.lrs[len(s.lrs) // 2]) for m in ("grpo", "agrl")]
    if phase == "sweep":
        return [Run("sweep", m, s.seeds[0], lr) for m in METHODS for lr in s.lrs]
    choices = choose(results, s)
    if phase == "main":  # seed 0 at the chosen rate is the sweep's run (same code path, same seed)
        return [Run("sweep", m, s.seeds[0], choices[m]) for m in METHODS] + [
            Run("main", m, seed, choices[m]) for m in METHODS for seed in s.seeds[1:]]
    if phase == "stability":
        return [Run("stability", m, s.seeds[0], 4 * choices[m]) for m in RL]
    if phase == "immediate":
        return [Run("immediate", "agrl", s.seeds[0], choices["agrl"], (("agr_mode", "immediate"),))]
    if phase == "variants":
        return [Run("variant", method, s.seeds[0], choices[method], sets, sft) for method, sets, sft in VARIANTS]
    if phase == "variant_seeds":  # the variants on every seed, with the eval sets (seed 0: the variant run)
        return [Run("variant", method, s.seeds[0], choices[method], sets, sft) for method, sets, sft in VARIANTS] + [
            Run("vseeds", method, seed, choices[method], sets, sft) for method, sets, sft in VARIANTS
            for seed in s.seeds[1:]]
    raise ValueError(phase)


def eval_sets(run: Run, phase: list[Run]) -> bool:
    """The eval sets are read only by runs that enter a table: not by the sweep's other rates."""
    if run.phase in ("sweep", "variant"):  # unless its seed 0 joins the runs of the other seeds
        return any(r.phase == {"sweep": "main", "variant": "vseeds"}[run.phase] for r in phase)
    return True


def run_all(runs: list[Run], work: Path, s: Settings, results: Path, jobs: int) -> None:
    """SFT of each seed first (every run of a seed starts from it), then the runs, `jobs` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    prepare_data(work, s)
    todo = sorted({r.start for r in runs}, key=lambda r: r.name) + runs
    todo = [r for r in todo if not done(r, results, eval_sets(r, runs))]
    print(f"[{time.strftime('%H:%M:%S')}] {len(todo)} runs to do", flush=True)

    def one(run: Run) -> None:
        start = time.perf_counter()
        execute(run, work, s, results, eval_sets(run, runs))
        print(f"[{time.strftime('%H:%M:%S')}] {run.name}: {time.perf_counter() - start:.0f} s", flush=True)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, [r for r in todo if r.method == "sft"]))
        list(pool.map(one, [r for r in todo if r.method != "sft"]))


# ---------------------------------------------------------------------------- statistics


def score(cols: dict, metric: str, index: np.ndarray) -> float | None:
    gold, pred = np.asarray(cols["gold"])[index], np.asarray(cols["pred"])[index]
    if metric == "macro_f1":
        return macro_f1(gold, pred, SCHEME.codes)
    if metric == "hard_macro_f1":
        hard = np.isin(np.asarray(cols["family"])[index], HARD)
        return macro_f1(gold[hard], pred[hard], SCHEME.codes) if hard.any() else None
    if metric == "accuracy":
        return float(np.mean(gold == pred))
    if metric == "good_f1":
        return good_f1(gold, pred, SCHEME.good)
    if metric == "format_valid":
        return float(np.mean(pred != -1))
    column = cols["adheres" if metric == "adherence" else metric]  # adherence, step_accuracy: over valid ones
    values = np.array([np.nan if v is None else v for v in np.asarray(column, dtype=object)[index]], dtype=float)
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else None


METRICS = ("macro_f1", "hard_macro_f1", "accuracy", "good_f1", "adherence", "step_accuracy", "format_valid")


def seed_mean(runs: list[dict], split: str, metric: str, index: np.ndarray, seeds: np.ndarray) -> float | None:
    values = [score(runs[i]["eval"][split]["columns"], metric, index) for i in seeds]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def bootstrap(stat, n_records: int, n_seeds: int, resamples: int, seed: int = 0):
    """95% percentile interval of stat(records, seeds), resampling seeds and records (both with
    replacement; paired: one draw serves every method in a difference)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        value = stat(rng.integers(0, n_records, n_records), rng.integers(0, n_seeds, n_seeds))
        if value is not None:
            values.append(value)
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else None


def by_method(results: Path) -> dict[str, list[dict]]:
    """method -> its main runs in seed order (seed 0 from the sweep at the chosen rate; SFT per seed)."""
    choices = json.loads((results / "choices.json").read_text())
    runs = load(results)
    out = {"sft": sorted([r for r in runs if r["method"] == "sft" and not r["sets"]], key=lambda r: r["seed"])}
    for method, lr in choices.items():
        out[method] = sorted([r for r in runs if r["method"] == method and r["lr"] == lr and not r["sets"]
                              and r["phase"] in ("sweep", "main")], key=lambda r: r["seed"])
    seeds = [r["seed"] for r in out["sft"]]
    return {m: rs for m, rs in out.items() if [r["seed"] for r in rs] == seeds}  # complete methods only


def table(groups: dict[str, list[dict]], split: str, resamples: int) -> dict:
    out = {}
    for method, runs in groups.items():
        n = len(runs[0]["eval"][split]["columns"]["gold"])
        every = np.arange(n), np.arange(len(runs))
        row = {}
        for metric in METRICS:
            per_seed = [score(r["eval"][split]["columns"], metric, every[0]) for r in runs]
            interval = bootstrap(lambda i, s_, m=metric, rs=runs: seed_mean(rs, split, m, i, s_), n, len(runs), resamples)
            row[metric] = {"mean": seed_mean(runs, split, metric, *every), "per_seed": per_seed,
                           "std": float(np.std([v for v in per_seed if v is not None], ddof=1)) if len(runs) > 1
                           else None, "interval": interval}
        out[method] = row
    return out


def difference(a: list[dict], b: list[dict], split: str, metric: str, resamples: int) -> dict:
    n = len(a[0]["eval"][split]["columns"]["gold"])

    def stat(index, seeds):
        x, y = seed_mean(a, split, metric, index, seeds), seed_mean(b, split, metric, index, seeds)
        return None if x is None or y is None else x - y

    return {"delta": stat(np.arange(n), np.arange(len(a))), "interval": bootstrap(stat, n, len(a), resamples)}


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


def cell(stat: dict) -> str:
    if stat["mean"] is None:
        return "–"
    text = f"{100 * stat['mean']:.1f}"
    if stat["interval"]:
        text += f" [{100 * stat['interval'][0]:.1f}, {100 * stat['interval'][1]:.1f}]"
    return text + (f" ±{100 * stat['std']:.1f}" if stat["std"] is not None else "")


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


def report(results: Path, s: Settings, meta: dict) -> str:
    groups = by_method(results)
    sft = {r["seed"]: r for r in groups["sft"]}
    for method in RL:  # step 0 of every curve: its seed's SFT model
        for r in groups.get(method, []):
            r["curve"].setdefault("0", sft[r["seed"]]["curve"]["0"])
    lines = [f"# The method study ({meta['date']}, {meta['machine']})", "",
             (f"Protocol: bench/PROTOCOL.md. Command: `{meta['command']}`. Result files: bench/results/study/*.json "
              f"(code {', '.join(sorted({r['code'] for rs in groups.values() for r in rs}))})."),
             (f"Seeds {list(s.seeds)}; {s.steps} RL steps x {s.prompts} prompts x {s.generations} completions; "
              f"learning rates chosen per method on validation (seed 0) from {list(s.lrs)}."),
             ("Cells: percent, mean over seeds [95% bootstrap interval, seeds and records resampled] ±std across "
              "seeds. hard = negation, alternative, accessory and model families."), ""]
    choices = json.loads((results / "choices.json").read_text())
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
    sweep = load(results, "sweep")
    for method in METHODS:
        cells = [next((f"{100 * _final(r):.1f}" for r in sweep if r["method"] == method and r["lr"] == lr), "–")
                 for lr in s.lrs]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {choices.get(method, '–'):g} |")
    stability = load(results, "stability")
    if stability:
        lines += ["", "## Stability at 4x the chosen rate (seed 0)", "",
                  "| method | lr | eval_balanced macro-F1 | eval_wild macro-F1 | top label share (eval_balanced) |",
                  "|---|---|---|---|---|"]
        for r in stability:
            lines.append(f"| {r['method']} | {r['lr']:g} | {100 * r['eval']['eval_balanced']['metrics']['macro_f1']:.1f} "
                         f"| {100 * r['eval']['eval_wild']['metrics']['macro_f1']:.1f} | {100 * _top_share(r):.0f}% |")
    immediate = load(results, "immediate")
    if immediate and "agrl" in groups:
        deferred = groups["agrl"][0]
        lines += ["", "## AGRL: immediate against deferred mode (seed 0)", "",
                  "| mode | eval_balanced | eval_wild | validation | train seconds |", "|---|---|---|---|---|"]
        for mode, r in (("deferred", deferred), ("immediate", immediate[0])):
            lines.append(f"| {mode} | {100 * r['eval']['eval_balanced']['metrics']['macro_f1']:.1f} | "
                         f"{100 * r['eval']['eval_wild']['metrics']['macro_f1']:.1f} | {100 * _final(r):.1f} | "
                         f"{r['train_s']:.0f} |")
    lines += variant_lines(results, groups, s)
    walls = [r["wall_s"] for r in load(results)]
    lines += ["", f"Runs: {len(walls)}; summed run wall time {sum(walls) / 3600:.1f} h (1 torch thread each)."]
    plot(groups, curves, results)
    (results / "study_stats.json").write_text(json.dumps({"stats": stats, "choices": choices}, indent=1) + "\n")
    return "\n".join(lines) + "\n"


def _mean_counter(run: dict, name: str) -> str:
    values = [v for _, v in run["counters"].get(name, [])]
    return f"{100 * np.mean(values):.1f}" if values else "–"


def variant_lines(results: Path, groups: dict[str, list[dict]], s: Settings) -> list[str]:
    """Variants on validation (seed 0) beside their method's main run, then on every seed if run."""
    variants = load(results, "variant")
    if not variants:
        return []
    lines = ["", "## Variants (seed 0, validation; chosen on validation only)", "",
             "| run | validation macro-F1 (step: value) | guided_acc | all_wrong_hard |", "|---|---|---|---|"]
    for r in [*(groups[m][0] for m in dict.fromkeys(v["method"] for v in variants) if m in groups), *variants]:
        curve = ", ".join(f"{k}: {100 * v['macro_f1']:.1f}" for k, v in sorted(r["curve"].items(), key=lambda x: int(x[0])))
        lines.append(f"| {r['name']} | {curve} | {_mean_counter(r, 'agr/guided_acc')} | "
                     f"{_mean_counter(r, 'groups/all_wrong_hard')} |")
    seeded: dict[str, list[dict]] = {}
    for r in sorted([v for v in variants if "eval" in v] + load(results, "vseeds"), key=lambda r: r["seed"]):
        seeded.setdefault(r["method"] + "".join(f" {k}={v}" for k, v in (*r["sets"].items(), *r["sft"].items())),
                          []).append(r)
    if not seeded:
        return lines
    starts = {r["seed"]: r for r in load(results) if r["method"] == "sft" and r["sets"]}
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
            runs = seeded.get(other) or groups.get(other)
            for metric in ("macro_f1", "hard_macro_f1") if agrl and runs else ():
                d = difference(seeded[agrl[0]], runs, split, metric, s.resamples)
                iv = d["interval"]
                lines.append(f"- {agrl[0]} - {other}, {metric}: {100 * d['delta']:+.1f}"
                             + (f" [{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]" if iv else ""))
    return lines


def plot(groups: dict[str, list[dict]], curves: dict, results: Path) -> None:
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
    fig.savefig(results / "study_curves.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", required=True,
                        choices=("pilot", "sweep", "main", "stability", "immediate", "variants", "variant_seeds", "all",
                                 "report"))
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--work", default="runs/study", help="checkpoints, eval files and logs")
    parser.add_argument("--out", help="result files (default bench/results/study; quick: WORK/results)")
    parser.add_argument("--quick", action="store_true", help="smoke sizes: 4 steps, 2 seeds, 2 rates")
    parser.add_argument("--steps", type=int, help="RL steps (the protocol fixes them; for the pilot)")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else Settings()
    s = replace(s, steps=args.steps or s.steps)
    work = Path(args.work).resolve()
    results = Path(args.out).resolve() if args.out else (work / "results" if args.quick else RESULTS)
    phases = ("sweep", "main", "stability", "immediate") if args.phase == "all" else (args.phase,)
    start = time.perf_counter()
    for phase in phases:
        if phase != "report":
            run_all(phase_runs(phase, results, s), work, s, results, args.jobs)
    meta = {"date": datetime.datetime.now(datetime.UTC).date().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
            "command": "python bench/study.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.phase in ("all", "report") or (results / "choices.json").exists() and phases == ("main",):
        text = report(results, s, meta)
        (results / "study.md").write_text(text)
        print(text)
    print(f"wall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
