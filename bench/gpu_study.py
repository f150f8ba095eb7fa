"""A GPU study from a recipe (configs/gpu/*.yaml, protocol bench/PROTOCOL_gpu.md): SFT, then every RL
method from it over a learning-rate grid and seeds, the rate chosen on validation, one results JSON.

Phases: data (Home Depot import, or the synthetic sets), SFT (one run), sweep (each method at each rate
of `lr_grid`, seed 0, scored on validation), choice (per method, the rate with the best validation
macro-F1 of one-pass scoring), seeds (the other seeds at the chosen rate), final evaluation (one-pass
`agrl score` of validation and test, or greedy `agrl eval` of both synthetic eval splits), the table.
Every run is `python -m agrl train CONFIG` (the driver writes each run's whole config: method, paths,
every key), `--jobs` processes at a time on the one GPU (a 135M model leaves most of an H200 idle).
The results JSON is rewritten after every phase, so a run cut short by the device's time limit still
returns what finished. A rerun skips finished runs (a run's final model and score files are its marks).
This is the driver that `agrl run` (issue 18) replaces: the recipes are its data.

    python bench/gpu_study.py --recipe configs/gpu/home_depot.yaml --work /tmp/agrl_gpu --out $OUT
    python bench/gpu_study.py --recipe configs/gpu/synthetic.yaml --work /tmp/w --out /tmp/o --dry --model M
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import datetime
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from agrl.data import load_records, write_jsonl
from agrl.files import read_jsonl_tolerant
from agrl.metrics import accuracy, macro_f1, percentile_interval, resamples_of
from agrl.schemes import load_scheme

COUNTERS = ("agr/flagged_share", "agr/guided_group_share", "agr/guided_acc", "agr/replay_acc",
            "dynamic_sampling/dropped_groups", "reward")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", required=True)
    p.add_argument("--work", required=True, help="WORK/smollm2 and WORK/home_depot (gpu_stage.sh run imports them); "
                   "the study's runs, data and logs go to WORK/study_NAME")
    p.add_argument("--out", required=True, help="folder of the results JSON")
    p.add_argument("--model", help="starting model (default: WORK/smollm2)")
    p.add_argument("--dry", action="store_true", help="smoke sizes: the recipe's `dry` section over it")
    p.add_argument("--methods", help="only these methods (comma-separated; default: the recipe's)")
    p.add_argument("--jobs", type=int, help="runs at a time (default: the recipe's); 1 runs them in this process")
    return p.parse_args(argv)


def load_recipe(path: str, dry: bool, methods: str | None = None) -> dict:
    recipe = yaml.safe_load(Path(path).read_text())
    smoke = recipe.pop("dry", {})
    if dry:
        recipe = merged(recipe, smoke)
    if methods:
        recipe["methods"] = {m: recipe["methods"][m] for m in methods.split(",")}
    return recipe


def merged(base: dict, over: dict) -> dict:
    """`over` laid on `base`: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ---- data -------------------------------------------------------------------------------------------------


def home_depot_data(recipe: dict, root: Path, work: Path, dry: bool) -> dict[str, Path]:
    """ROOT/home_depot from `agrl data import home-depot` (gpu_stage.sh run does it; the dry run imports a
    stand-in CSV written from synthetic pairs into the study's folder: no network or shared data needed)."""
    data = work / "hd_dry" if dry else root / "home_depot"
    if not (data / "train.jsonl").is_file():
        source = recipe["data"]["home_depot"]["input"]
        if dry:
            source = work / "hd_dry.csv.gz"
            write_stand_in_csv(source, recipe["data"]["home_depot"]["dry_rows"])
        agrl("data", "import", "home-depot", "--input", source, "--out", data, log=work / "logs" / "import.log")
    limit = recipe["data"].get("limit")
    files = {}
    for split in ("train", "validation", "test"):
        files[split] = data / f"{split}.jsonl"
        if limit:  # dry: the first records of each split
            files[split] = cut(files[split], work / "cut" / f"{split}.jsonl", limit)
    return files


def write_stand_in_csv(path: Path, rows: int) -> None:
    from agrl.synth import generate

    records = generate(seed=0, sizes={"sft": rows, "rl": 0, "eval_balanced": 0, "eval_wild": 0})["sft"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["id", "product_uid", "product_title", "search_term", "relevance"])
        for i, r in enumerate(records):  # default scheme codes 1..4 -> mean grades 1.0..3.0
            out.writerow([i, 100000 + i, r.product.title, r.query, f"{1 + (r.label - 1) * 2 / 3:.2f}"])


def cut(source: Path, target: Path, limit: int) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:limit]
    target.write_text("".join(lines), encoding="utf-8")
    return target


def synthetic_data(recipe: dict, work: Path) -> dict[str, Path]:
    """SFT: a large clean set (another seed, the hard families rare, none of the benchmark's eval queries)
    plus the demo benchmark's noisy reasoning rows; RL, validation and both eval splits: the benchmark's."""
    from agrl.synth import generate

    spec = recipe["data"]["synthetic"]
    folder = work / "synthetic"
    files = {name: folder / f"{name}.jsonl" for name in ("sft", "rl", "validation", "eval_balanced", "eval_wild")}
    if all(f.is_file() for f in files.values()):
        return files
    bench = generate(seed=spec["seed"], sizes=spec["sizes"], noise=spec["noise"])
    eval_queries = {r.query for name in ("eval_balanced", "eval_wild") for r in bench[name]}
    clean = generate(seed=spec["clean"]["seed"], noise=0.0, mix=spec["clean"].get("mix"),
                     sizes={"sft": spec["clean"]["size"], "rl": 0, "eval_balanced": 0, "eval_wild": 0},
                     exclude_queries=eval_queries)["sft"]
    held = spec["validation"]  # validation: the RL pool's first records, never trained on
    splits = {"sft": clean + bench["sft"], "rl": bench["rl"][held:], "validation": bench["rl"][:held],
              "eval_balanced": bench["eval_balanced"], "eval_wild": bench["eval_wild"]}
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        write_jsonl(rows, files[name])
    return files


# ---- runs -------------------------------------------------------------------------------------------------


IN_PROCESS = False  # jobs 1 (the dry run): the commands run in this process, no interpreter start-up each
JOBS = 1


def agrl(*args, log: Path) -> None:
    """`python -m agrl ARGS`, output to `log`; a failure stops the study with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if IN_PROCESS:
        from agrl.cli import app

        try:  # click returns the exit code of typer.Exit (agrl's `error: ...` path) without standalone mode
            code = app([str(a) for a in args], standalone_mode=False)
        except SystemExit as exit:
            code = exit.code
        if code:
            raise RuntimeError(f"agrl {' '.join(map(str, args))} failed: exit {code}")
        return
    with log.open("a") as handle:
        # the host's cores shared among the jobs: each process drives the GPU from Python (host-bound)
        threads = str(max(1, (os.cpu_count() or 1) // JOBS))
        done = subprocess.run([sys.executable, "-m", "agrl", *map(str, args)], stdout=handle, stderr=subprocess.STDOUT,
                              check=False, env=os.environ | {"OMP_NUM_THREADS": threads})
    if done.returncode:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"agrl {' '.join(map(str, args[:2]))} failed ({log}):\n" + "\n".join(tail))


def train(name: str, keys: dict, work: Path) -> Path:
    """One `agrl train` run into WORK/runs/NAME (skipped when its final model is there)."""
    out = work / "runs" / name
    if (out / "config.json").is_file() or (out / "adapter_config.json").is_file():
        return out
    config = work / "configs" / f"{name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(keys | {"output_dir": str(out)}, sort_keys=False))
    start = time.perf_counter()
    agrl("train", config, log=work / "logs" / f"{name}.log")
    (out / "wall_s").write_text(f"{time.perf_counter() - start:.1f}")
    return out


def score(model: Path, source: Path, name: str, split: str, recipe: dict, work: Path) -> Path:
    """One-pass label posteriors of a split (`agrl score`; resumes where it stopped)."""
    target = work / "scores" / f"{name}.{split}.jsonl"
    if not (target.is_file() and len(target.read_text().splitlines()) >= count_lines(source)):
        agrl("score", "--model", model, "--input", source, "--output", target, "--batch-size",
             recipe["score"]["batch_size"], log=work / "logs" / f"score.{name}.{split}.log")
    return target


def greedy_eval(model: Path, source: Path, name: str, split: str, recipe: dict, work: Path) -> dict:
    target = work / "evals" / f"{name}.{split}.json"
    if not target.is_file():
        spec = recipe["eval"]
        agrl("eval", "--model", model, "--data", source, "--out", target, "--batch-size", spec["batch_size"],
             "--max-new-tokens", spec["max_new_tokens"], "--limit", spec["limit"], "--resamples", 200,
             log=work / "logs" / f"eval.{name}.{split}.log")
    return json.loads(target.read_text())


def count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def parallel(jobs: int, tasks: list) -> list:
    """Run zero-argument callables, `jobs` at a time; the first failure is raised after all have ended."""
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = [pool.submit(task) for task in tasks]
        return [f.result() for f in futures]


# ---- metrics ----------------------------------------------------------------------------------------------


def scored(path: Path, gold: list) -> tuple[list[int], list[int | None]]:
    rows = {row["id"]: row["label"] for row in read_jsonl_tolerant(path)}
    return [r.label for r in gold], [rows.get(r.id) for r in gold]


def label_metrics(gold: list[int], pred: list, labels: tuple) -> dict:
    return {"macro_f1": macro_f1(gold, pred, labels), "accuracy": accuracy(gold, pred), "n": len(gold)}


def counters(run: Path) -> dict:
    """Means over the run's logged steps of the mechanism counters (metrics.jsonl)."""
    rows = list(read_jsonl_tolerant(run / "metrics.jsonl")) if (run / "metrics.jsonl").is_file() else []
    out = {}
    for key in COUNTERS:
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
        if values:
            out[key] = statistics.mean(values)
    return out


def seed_mean_interval(preds: dict[str, list[list]], gold: list[int], labels: tuple, resamples: int = 1000) -> dict:
    """Seed-mean macro-F1 per method with a 95% bootstrap interval (records resampled, one resample for every
    seed and method, so differences are paired), and the paired differences of AGRL against the others."""
    gold_arr = np.array(gold)

    def mean_f1(method, idx):
        values = [macro_f1(gold_arr[idx].tolist(), [p[i] for i in idx], labels) for p in preds[method]]
        values = [v for v in values if v is not None]
        return statistics.mean(values) if values else None

    everything = np.arange(len(gold))
    samples = {m: [] for m in preds}
    for idx in resamples_of(len(gold), resamples, 0):
        for m in preds:
            samples[m].append(mean_f1(m, idx))
    table = {m: {"macro_f1": mean_f1(m, everything), "interval": percentile_interval([v for v in samples[m] if v is not None]),
                 "seeds": len(preds[m])} for m in preds}
    if "agrl" in preds:
        for other in preds:
            if other != "agrl":
                diffs = [a - b for a, b in zip(samples["agrl"], samples[other]) if a is not None and b is not None]
                table[other]["agrl_minus_this"] = {"estimate": table["agrl"]["macro_f1"] - table[other]["macro_f1"],
                                                  "interval": percentile_interval(diffs)}
    return table


# ---- the study --------------------------------------------------------------------------------------------


def run_keys(recipe: dict, model: Path, train_file: Path, stage: dict, **more) -> dict:
    return {"scheme": recipe["scheme"], "model": str(model), "train_file": str(train_file)} | recipe["common"] | stage | more


def main(argv=None) -> dict:
    opts = parse_args(argv)
    global IN_PROCESS, JOBS
    recipe = load_recipe(opts.recipe, opts.dry, opts.methods)
    recipe["jobs"] = JOBS = opts.jobs or recipe["jobs"]
    IN_PROCESS = JOBS == 1
    work, out = Path(opts.work) / f"study_{recipe['name']}", Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(opts.model) if opts.model else Path(opts.work) / "smollm2"
    scheme = load_scheme(recipe["scheme"])
    labels = tuple(level.code for level in scheme.levels)
    clock = time.perf_counter()
    result = {"recipe": opts.recipe, "dry": opts.dry, "machine": machine(), "versions": versions(),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "phases_s": {},
              "runs": {}}
    target = out / f"gpu_study_{recipe['name']}{'_dry' if opts.dry else ''}.json"

    def phase(name: str):
        result["phases_s"][name] = round(time.perf_counter() - clock, 1)
        target.write_text(json.dumps(result, indent=2))

    hd = "home_depot" in recipe["data"]
    files = home_depot_data(recipe, Path(opts.work), work, opts.dry) if hd else synthetic_data(recipe, work)
    sft_file, rl_file = (files["train"], files["train"]) if hd else (files["sft"], files["rl"])
    finals = ("validation", "test") if hd else ("eval_balanced", "eval_wild")
    gold = {split: load_records(files[split], scheme) for split in {"validation", *finals}}
    phase("data")

    background = None
    if hd and recipe.get("baselines"):  # CPU work: beside the GPU runs, or after them when in process
        pool = concurrent.futures.ThreadPoolExecutor(1)
        background = pool.submit(baselines, recipe, files, work) if not IN_PROCESS else None
    sft = train("sft", run_keys(recipe, model, sft_file, recipe["sft"]), work)
    result["runs"]["sft"] = {"method": "sft", "wall_s": float((sft / "wall_s").read_text())}
    phase("sft")

    jobs, seeds, grid = recipe["jobs"], recipe["seeds"], recipe["lr_grid"]
    methods = recipe["methods"]

    def rl(method: str, lr: float, seed: int):
        name = f"{method}_lr{lr:g}_s{seed}"
        stage = methods[method] if methods[method]["method"] == "dpo" else recipe["rl"] | methods[method]
        keys = run_keys(recipe, sft, rl_file, stage, learning_rate=lr, seed=seed)
        path = train(name, keys, work)
        return name, path, score(path, files["validation"], name, "validation", recipe, work)

    sweep = parallel(jobs, [lambda m=m, lr=lr: (m, lr, *rl(m, lr, seeds[0])) for m in methods for lr in grid])
    chosen = {}
    for method, lr, name, path, val in sweep:
        f1 = label_metrics(*scored(val, gold["validation"]), labels)["macro_f1"]
        result["runs"][name] = {"method": method, "lr": lr, "seed": seeds[0], "validation_macro_f1": f1,
                                "wall_s": float((path / "wall_s").read_text()), "counters": counters(path)}
        if method not in chosen or (f1 or 0) > chosen[method][1]:
            chosen[method] = (lr, f1 or 0)
    result["chosen_lr"] = {m: lr for m, (lr, _) in chosen.items()}
    phase("sweep")

    more = parallel(jobs, [lambda m=m, s=s: (m, s, *rl(m, chosen[m][0], s)) for m in methods for s in seeds[1:]])
    for method, seed, name, path, _ in more:
        result["runs"][name] = {"method": method, "lr": chosen[method][0], "seed": seed,
                                "wall_s": float((path / "wall_s").read_text()), "counters": counters(path)}
    phase("seeds")

    finals_of = {"sft": [("sft", sft)]} | {m: [(f"{m}_lr{chosen[m][0]:g}_s{s}", work / "runs" / f"{m}_lr{chosen[m][0]:g}_s{s}")
                                               for s in seeds] for m in methods}
    tasks = [(m, name, path, split) for m, runs in finals_of.items() for name, path in runs for split in finals]
    if hd:
        paths = parallel(jobs, [lambda t=t: score(t[2], files[t[3]], t[1], t[3], recipe, work) for t in tasks])
        preds = {}
        for (method, name, _, split), path in zip(tasks, paths):
            g, p = scored(path, gold[split])
            result["runs"][name].setdefault("scores", {})[split] = label_metrics(g, p, labels)
            preds.setdefault(split, {}).setdefault(method, []).append(p)
        result["table"] = {split: seed_mean_interval(preds[split], [r.label for r in gold[split]], labels,
                                                     recipe["score"]["resamples"]) for split in finals}
    else:
        evals = parallel(jobs, [lambda t=t: greedy_eval(t[2], files[t[3]], t[1], t[3], recipe, work) for t in tasks])
        for (method, name, _, split), metrics in zip(tasks, evals):
            result["runs"][name].setdefault("eval", {})[split] = metrics.get("metrics", metrics)
        result["table"] = {split: {m: mean_of([result["runs"][n]["eval"][split] for n, _ in runs])
                                   for m, runs in finals_of.items()} for split in finals}
    phase("final")
    if hd and recipe.get("baselines"):
        result["baselines"] = background.result() if background else baselines(recipe, files, work)
        phase("baselines")
    print(json.dumps({"table": result["table"], "chosen_lr": result["chosen_lr"], "phases_s": result["phases_s"]},
                     indent=1))
    return result


def mean_of(evals: list[dict]) -> dict:
    """Seed means of the greedy eval's numeric metrics."""
    keys = [k for k, v in evals[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: statistics.mean(e[k] for e in evals if isinstance(e.get(k), (int, float))) for k in keys}


def baselines(recipe: dict, files: dict, work: Path) -> dict:
    """The classical baselines on the same test split (`agrl baseline fit/predict`, CPU)."""
    scheme = load_scheme(recipe["scheme"])
    labels = tuple(level.code for level in scheme.levels)
    gold = load_records(files["test"], scheme)
    table = {}
    for kind in recipe["baselines"]:
        model = work / "baselines" / f"{kind}.joblib"
        preds = work / "baselines" / f"{kind}.test.jsonl"
        if not preds.is_file():
            agrl("baseline", "fit", "--kind", kind, "--train", files["train"], "--out", model, "--scheme",
                 recipe["scheme"], log=work / "logs" / f"baseline.{kind}.log")
            agrl("baseline", "predict", "--model", model, "--input", files["test"], "--output", preds,
                 log=work / "logs" / f"baseline.{kind}.log")
        table[kind] = label_metrics(*scored(preds, gold), labels)
    return table


def machine() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU x{os.cpu_count()}"


def versions() -> dict:
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}


if __name__ == "__main__":
    main()
