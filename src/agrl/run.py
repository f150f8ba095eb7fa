"""`agrl run RECIPE`: every step of a recipe (recipe.py) as jobs, `--jobs` at a time, then results.json
and the report.

Steps: `data` (the synthetic benchmark, or the import folder's train subsets), `model`, then per
concrete stage `train NAME`, `eval NAME SPLIT` (greedy `agrl eval`) and `score NAME SPLIT` (one-pass
`agrl score`), and `baseline KIND` (`agrl baseline` fit and predict, on CPU beside the stages). A job
is the data, the model, one stage (its training, evals and scores) or one baseline, run as
its own process (`python -m agrl.run OUT STEP...`, OMP_NUM_THREADS=threads) once the job it starts
from has finished. Each finished step writes OUT/stamps/STEP.json: a hash of everything that made
it (its inputs' stamps included) and its wall and CPU seconds. A rerun skips a step whose output
exists under the same stamp, resumes a killed one (training from its last checkpoint, scoring from
the last scored row) and refuses OUT when it holds a step made by another recipe (`--force` redoes
it). With a sweep, the grid points run first; OUT/choices.json records what they chose. results.json
is rewritten as each job ends, so a run cut short still reports what finished.

    agrl run configs/home_depot/tiny.yaml --out runs/hd_judges/tiny --jobs 2
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from agrl.errors import UserError
from agrl.files import atomic_write, read_jsonl_tolerant
from agrl.recipe import (
    choose,
    data_file,
    expand,
    load_recipe,
    score_source,
    splits_of,
    stage_config,
    stage_data,
)

Step = tuple[str, Path, Callable[[], None]]


class JobFailed(RuntimeError):
    """A job's process exited with an error (its log says why); a rerun resumes it."""


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stamps(recipe: dict, out: Path, runs: dict) -> dict[str, str]:
    """Per step, a hash of what made it and of its inputs' stamps: a changed recipe part changes the
    stamps of that step and of every step downstream of it."""
    made = {"data": digest(recipe["data"], recipe.get("score", {}).get("queries"),
                           sorted({s.get("records") for s in recipe["stages"].values()} - {None}, key=str)),
            "model": digest(recipe["model"])}
    for name, run in runs.items():
        parent = made["model"] if run["from"] == "model" else made[f"train {run['from']}"]
        made[f"train {name}"] = digest(stage_config(recipe, name, out, runs), parent, made["data"])
        for split in run["evals"]:
            made[f"eval {name} {split}"] = digest(recipe.get("eval"), made[f"train {name}"], made["data"])
        if (recipe.get("eval") or {}).get("curve"):
            made[f"curve {name}"] = digest(recipe["eval"], made[f"train {name}"], made["data"])
        for split in run["scores"]:
            made[f"score {name} {split}"] = digest(recipe["score"], made[f"train {name}"], made["data"])
    for kind in (recipe.get("baselines") or {}).get("kinds", ()):
        made[f"baseline {kind}"] = digest(recipe["baselines"], kind, made["data"])
    return made


def trained_file(config: dict, out: Path, name: str) -> Path:
    """The weights a finished stage leaves: an adapter when the stage trains LoRA (lora_r > 0)."""
    return out / name / ("adapter_model.safetensors" if config.get("lora_r") else "model.safetensors")


def plan(recipe: dict, out: Path, stages: list[str] | None = None, runs: dict | None = None) -> list[Step]:
    """(step name, the file that exists once it is done, the call) in order; `stages`: only these
    (recipe stage names or concrete ones)."""
    runs = runs or expand(recipe)
    names = [n for n, run in runs.items() if stages is None or n in stages or run["stage"] in stages]
    steps: list[Step] = [("data", out / "data" / "splits.json", lambda: make_data(recipe, out))]
    if "path" not in recipe["model"]:
        steps.append(("model", out / "model" / "config.json", lambda: make_model(recipe, out)))
    for kind in (recipe.get("baselines") or {}).get("kinds", ()):  # not stages: --only keeps them
        last = recipe["baselines"]["splits"][-1]
        steps.append((f"baseline {kind}", out / "baselines" / f"{kind}.{last}.jsonl",
                      lambda k=kind: baseline(recipe, out, k)))
    for name in names:
        config = stage_config(recipe, name, out, runs)
        steps.append((f"train {name}", trained_file(config, out, name), lambda n=name: train_stage(recipe, out, n, runs)))
    for name in names:
        if (recipe.get("eval") or {}).get("curve"):
            steps.append((f"curve {name}", out / name / "curve" / "curve.json", lambda n=name: curve_stage(recipe, out, n)))
        steps += [(f"eval {name} {split}", out / name / "eval" / f"{split}.json",
                   lambda n=name, s=split: evaluate_stage(recipe, out, n, s)) for split in runs[name]["evals"]]
        for split in runs[name]["scores"]:
            steps.append((f"score {name} {split}", out / "scores" / f"{name}.{split}.cost.json",
                          lambda n=name, s=split: score_stage(recipe, out, n, s)))
    return steps


# ---------------------------------------------------------------------------- steps (run in a job's process)


def make_data(recipe: dict, out: Path) -> None:
    from agrl import synth
    from agrl.data import split_by_query, write_jsonl

    data = recipe["data"]
    if "dir" not in data:
        exclude: set[str] = set()
        if data.get("exclude_queries_of"):  # keep this benchmark's pairs off another recipe's eval queries
            other = load_recipe(data["exclude_queries_of"])["data"]
            exclude = synth.eval_queries(synth.generate(seed=other["seed"], sizes=other.get("sizes"), noise=0.0))
        splits = synth.generate(seed=data["seed"], sizes=data.get("sizes"), noise=data["noise"], mix=data.get("mix"),
                                exclude_queries=exclude)
        for name, extra in (data.get("add") or {}).items():  # e.g. a large clean SFT set before the noisy rows
            sizes = dict.fromkeys(synth.SPLITS, 0) | {name: extra["size"]}
            added = synth.generate(seed=extra["seed"], sizes=sizes, noise=extra.get("noise", 0.0),
                                   mix={name: extra["mix"]} if extra.get("mix") else None,
                                   exclude_queries=exclude | synth.eval_queries(splits))[name]
            for record in added:  # ids stay unique in the joined split
                record.id = f"{record.id}-add{extra['seed']}"
            splits[name] = added + splits[name]
        for name, parts in data.get("split", {}).items():  # query-disjoint parts, e.g. rl -> rl_train + validation
            splits |= split_by_query(splits.pop(name), parts, seed=data["seed"])
        for name, records in splits.items():
            write_jsonl(records, out / "data" / f"{name}.jsonl")
    for stage in recipe["stages"].values():  # `records: N`: the first N train pairs of a seeded shuffle
        if "records" in stage:
            path = stage_data(recipe, stage, out)
            rows = _lines(data_file(recipe, stage.get("data", "train"), out))
            random.Random(recipe["common"].get("seed", 0)).shuffle(rows)
            atomic_write(path, "".join(row + "\n" for row in rows[:stage["records"]]))
    for split in (recipe.get("score") or {}).get("splits", ()):
        source = score_source(recipe, out, split)
        if source != data_file(recipe, split, out):  # the split's pairs of its first `queries` queries
            rows = [(row, json.loads(row)["query"]) for row in _lines(data_file(recipe, split, out))]
            keep = set(list(dict.fromkeys(query for _, query in rows))[:recipe["score"]["queries"]])
            atomic_write(source, "".join(row + "\n" for row, query in rows if query in keep))
    atomic_write(out / "data" / "splits.json", json.dumps(splits_of(recipe)) + "\n")


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_model(recipe: dict, out: Path) -> None:
    model = recipe["model"]
    if "import" in model:
        from agrl.pretrained import import_gguf

        import_gguf(model["import"], out / "model")
    elif model.get("base"):
        from agrl.tiny import copy_base_judge

        copy_base_judge(model["base"], out / "model")
    elif "init" in model:  # the tokenizer learns the train split's prompts and teacher reasoning
        from agrl.data import load_records
        from agrl.prompt import user_message
        from agrl.rules import RulesEngine
        from agrl.schemes import load_scheme
        from agrl.tiny import init_model

        scheme = load_scheme(recipe["data"].get("scheme", "default"))
        records = load_records(data_file(recipe, "train", out), scheme)
        engine = RulesEngine.from_records(records, scheme)
        corpus = [user_message(r) + "\n" + engine.teacher_reasoning(r) for r in records]
        init_model(out / "model", size=model["init"]["size"], seed=model["init"]["seed"], corpus=corpus)
    else:
        from agrl.tiny import init_model

        init_model(out / "model", size=model["size"], seed=model["seed"])


def train_stage(recipe: dict, out: Path, name: str, runs: dict) -> None:
    from agrl.train import train

    config = stage_config(recipe, name, out, runs)
    train(atomic_write(out / "configs" / f"{name}.yaml", yaml.safe_dump(config, sort_keys=False)))


def evaluate_stage(recipe: dict, out: Path, name: str, split: str) -> None:
    from agrl.evaluate import evaluate

    settings = recipe["eval"]
    evaluate(out / name, data_file(recipe, split, out), out / name / "eval" / f"{split}.json",
             scheme=recipe["data"].get("scheme", "default"), batch_size=settings["batch_size"],
             max_new_tokens=settings["max_new_tokens"], limit=settings.get("limit"), resamples=settings["resamples"],
             posterior=settings.get("posterior", True))


def curve_stage(recipe: dict, out: Path, name: str) -> None:
    """Every checkpoint of the stage and its final model evaluated on `eval.curve` (step -> metrics in
    curve/curve.json); the checkpoints are deleted then (a curve point is all the study keeps of them)."""
    from agrl.evaluate import evaluate

    settings, split = recipe["eval"], recipe["eval"]["curve"]
    models = {int(p.name.removeprefix("checkpoint-")): p for p in (out / name).glob("checkpoint-*")}
    models[_last_step(out / name / "metrics.jsonl")] = out / name
    curve = {}
    for step, model in sorted(models.items()):
        path = out / name / "curve" / f"step{step}.json"
        if not path.exists():
            evaluate(model, data_file(recipe, split, out), path, scheme=recipe["data"].get("scheme", "default"),
                     batch_size=settings["batch_size"], max_new_tokens=settings["max_new_tokens"],
                     limit=settings.get("limit"), resamples=0, posterior=settings.get("posterior", True))
        curve[step] = json.loads(path.read_text())["metrics"]
    atomic_write(out / name / "curve" / "curve.json", json.dumps(curve, indent=1) + "\n")
    for checkpoint in models.values():
        if checkpoint != out / name:
            shutil.rmtree(checkpoint)


def score_stage(recipe: dict, out: Path, name: str, split: str) -> None:
    from agrl.score import Scorer, score_file

    t0, cpu0 = time.perf_counter(), _cpu_s()
    target = out / "scores" / f"{name}.{split}.jsonl"
    scorer = Scorer(out / name, scheme=recipe["data"].get("scheme", "default"), batch_size=recipe["score"]["batch_size"])
    score_file(scorer, score_source(recipe, out, split), target, progress=False)
    cost = {"cpu_s": round(_cpu_s() - cpu0, 1), "wall_s": round(time.perf_counter() - t0, 1),
            "threads": os.environ.get("OMP_NUM_THREADS")}
    atomic_write(target.with_suffix(".cost.json"), json.dumps(cost) + "\n")


def baseline(recipe: dict, out: Path, kind: str) -> None:
    """`agrl baseline fit` on the recipe's train split, then `predict` on each of its splits."""
    from agrl import baselines
    from agrl.data import load_records
    from agrl.schemes import load_scheme

    settings, scheme = recipe["baselines"], recipe["data"].get("scheme", "default")
    model = baselines.fit(load_records(data_file(recipe, settings["train"], out), load_scheme(scheme)), kind, scheme)
    baselines.save(model, out / "baselines" / f"{kind}.joblib")
    for split in settings["splits"]:
        rows = baselines.predict(model, load_records(data_file(recipe, split, out), load_scheme(scheme)))
        baselines.write_predictions(rows, out / "baselines" / f"{kind}.{split}.jsonl")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_steps(out: Path, names: list[str]) -> None:
    """A job's process: run the named steps in order, each logged to OUT/logs/STEP.log, then stamped."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.basicConfig(level=logging.WARNING, handlers=[_ToStderrNow()])
    recipe = json.loads((out / "recipe.json").read_text())
    runs = expand(recipe, recipe.get("_choices"))
    steps = {name: call for name, _, call in plan(recipe, out, runs=runs)}
    wanted = stamps(recipe, out, runs)
    for name in names:
        t0, cpu0 = time.perf_counter(), _cpu_s()
        log = out / "logs" / f"{name.replace(' ', '_')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as handle, redirect_stdout(handle), redirect_stderr(handle):
            steps[name]()
        atomic_write(out / "stamps" / f"{name.replace(' ', '_')}.json",
                     json.dumps({"stamp": wanted[name], "wall_s": round(time.perf_counter() - t0, 2),
                                 "cpu_s": round(_cpu_s() - cpu0, 2),
                                 "date": datetime.now(UTC).isoformat(timespec="seconds"),
                                 "ended": round(time.time(), 2), "job": _job_of(name)}) + "\n")


class _ToStderrNow(logging.Handler):
    """Writes to sys.stderr as it is when a record is logged: a step's log file while it runs."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


# ---------------------------------------------------------------------------- the runner


def read_stamp(out: Path, name: str) -> dict:
    try:
        return json.loads((out / "stamps" / f"{name.replace(' ', '_')}.json").read_text())
    except (OSError, ValueError):
        return {}  # missing or unreadable: the step counts as made by another recipe


def run_recipe(recipe_name: str | Path, out: str | Path, jobs: int = 1, stages: list[str] | None = None,
               force: bool = False, threads: int | None = None, console: Console | None = None,
               title: str = "agrl run", profile: str | None = None, sets: list[str] = (),
               results_copy: str | Path | None = None) -> dict[str, Any]:
    """Run every step of the recipe (with `profile` and `sets` laid over it: recipe.overlay) into OUT
    (skipping finished ones), then results.json and the report. results.json (and `results_copy`) is
    rewritten as each job ends. Returns {"timings": step -> seconds (None: already done), "total_s",
    "report": paths, "summary", "results": path}. Every check (recipe, stages, OUT) runs before any job starts."""
    from agrl.recipe import check_recipe

    out = Path(out)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"--jobs {jobs}: must be at least 1")
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, expected the run's directory")
    recipe = load_recipe(recipe_name, profile, sets)
    unknown = set(stages or ()) - set(recipe["stages"])
    if unknown:
        raise UserError(f"{recipe['_path']}: no stage(s) {sorted(unknown)} (stages: {list(recipe['stages'])})")
    check_recipe(recipe, out)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    console = Console(file=console.file if console else sys.stderr)
    start = time.perf_counter()
    timings: dict[str, float | None] = {}
    runs = expand(recipe)
    _refuse_other_recipe(recipe, out, runs, force)

    def report_so_far(runs: dict) -> Path:  # after each job: a run cut short still reports what finished
        return write_results(recipe, out, runs, stages, jobs, threads, results_copy)

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        if recipe.get("sweep"):  # the grid points first: they choose the swept stages' keys
            timings |= _run_jobs(recipe, out, runs, stages, jobs, threads, progress, console, title, report_so_far)
            recipe["_choices"] = choose(recipe, out)  # (--only may leave a grid unfinished: no choice for it yet)
            atomic_write(out / "choices.json", json.dumps(recipe["_choices"], indent=2) + "\n")
            runs = expand(recipe, recipe["_choices"])
            _refuse_other_recipe(recipe, out, runs, force)
        more = _run_jobs(recipe, out, runs, stages, jobs, threads, progress, console, title, report_so_far)
        timings |= {k: v for k, v in more.items() if v is not None or k not in timings}
    total = time.perf_counter() - start
    atomic_write(out / "timings.json", json.dumps({"steps": timings, "total_s": total}, indent=2) + "\n")
    results = report_so_far(runs)
    from agrl.report import report_results

    report = report_results(results, out / "report")
    return {"timings": timings, "total_s": total, "report": report, "results": results,
            "summary": json.loads(report["summary"].read_text())}


def _refuse_other_recipe(recipe: dict, out: Path, runs: dict, force: bool) -> None:
    # A folder with files but neither recipe.json (written before the first job) nor stamps/ is not a run's.
    ours = (out / "recipe.json").exists() or (out / "stamps").is_dir()
    if not force and out.is_dir() and any(out.iterdir()) and not ours:
        raise UserError(f"--out {out}: holds files not made by a recipe (no recipe.json); "
                        "pass --force to write into it, or choose another --out")
    wanted = stamps(recipe, out, runs)
    other = [name for name, done, _ in plan(recipe, out, runs=runs)
             if done.exists() and read_stamp(out, name).get("stamp") != wanted[name]]
    if other and not force:
        raise UserError(f"--out {out}: holds {len(other)} step(s) made by another recipe (first: {other[0]}); "
                        "pass --force to redo them, or choose another --out")


def _job_of(step: str) -> str:
    if step.startswith("baseline "):
        return step.replace(" ", "-")
    return step if step in ("data", "model") else step.split(" ")[1]


def _run_jobs(recipe: dict, out: Path, runs: dict, stages: list[str] | None, jobs: int, threads: int,
              progress: Progress, console: Console, title: str,
              job_done: Callable[[dict], Any] = lambda runs: None) -> dict[str, float | None]:
    """Each job (data, model, one stage) as a process once the one it starts from is done, `jobs` at a time."""
    wanted = stamps(recipe, out, runs)
    steps = plan(recipe, out, stages, runs)
    todo: dict[str, list[str]] = {}
    timings: dict[str, float | None] = {}
    for name, done, _ in steps:
        if done.exists() and read_stamp(out, name).get("stamp") == wanted[name]:
            timings[name] = None
            continue
        if done.exists() and name.startswith("train "):  # another recipe's: no resume from its checkpoints
            shutil.rmtree(out / _job_of(name), ignore_errors=True)
        todo.setdefault(_job_of(name), []).append(name)
    after = {"model": "data", **{n: r["from"] for n, r in runs.items()},
             **{_job_of(name): "data" for name, _, _ in steps if name.startswith("baseline ")}}
    atomic_write(out / "recipe.json", json.dumps(recipe, default=str) + "\n")
    overall = progress.add_task(f"[bold]{title}", total=len(steps))
    progress.advance(overall, sum(v is None for v in timings.values()))
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                        "TOKENIZERS_PARALLELISM": "false",
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                    os.environ.get("PYTHONPATH")]))}
    running: dict[str, tuple[subprocess.Popen, int | None]] = {}
    failed: list[str] = []
    while todo or running:
        for job in [j for j in todo if after.get(j) not in {*todo, *running}]:
            if len(running) >= jobs:  # checked per start: --jobs is the most at a time
                break
            if after.get(job) in failed:
                failed.append(job)
                todo.pop(job)
                continue
            (out / "logs").mkdir(parents=True, exist_ok=True)
            with (out / "logs" / f"job_{job}.log").open("a") as log:
                proc = subprocess.Popen([sys.executable, "-m", "agrl.run", str(out), *todo[job]], env=env,
                                        stdout=log, stderr=subprocess.STDOUT)
            task = None
            if f"train {job}" in todo[job]:
                total = stage_config(recipe, job, out, runs).get("max_steps")
                task = progress.add_task(f"  {job} steps", total=total if total and total > 0 else None)
            running[job] = (proc, task)
            progress.update(overall, description=f"[bold]{title}[/bold]: {', '.join(running)}")
            todo.pop(job)
        time.sleep(0.2)
        for job, (proc, task) in list(running.items()):
            if task is not None:
                progress.update(task, completed=_last_step(out / job / "metrics.jsonl"))
            if proc.poll() is None:
                continue
            running.pop(job)
            if task is not None:
                progress.remove_task(task)
            for name, _, _ in steps:
                stamp = read_stamp(out, name) if _job_of(name) == job and name not in timings else {}
                if stamp.get("stamp") == wanted[name]:
                    timings[name] = stamp["wall_s"]
                    console.log(f"{name}: {stamp['wall_s']:.1f} s")
                    progress.advance(overall)
            if proc.returncode:
                failed.append(job)
                console.log(f"[red]{job} failed (exit {proc.returncode}); see {out / 'logs'}")
            job_done(runs)
    if failed:
        raise JobFailed(f"job(s) {', '.join(failed)} failed or did not start; see {out / 'logs'} "
                           "(a rerun resumes them)")
    return timings


def _last_step(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4096))
            lines = handle.read().decode(errors="replace").splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


# ---------------------------------------------------------------------------- results.json


COUNTERS = ("reward", "rewards/outcome/mean", "frac_reward_zero_std", "groups/all_wrong", "groups/all_wrong_hard",
            "groups/all_wrong_common", "groups/all_right", "agr/flagged_share", "agr/guided_group_share", "agr/guided_acc",
            "agr/group_acc_before", "agr/group_acc_after", "agr/replay_acc", "agr/replay_acc_at_flag",
            "agr/threshold", "dynamic_sampling/dropped_groups", "anchor/nll", "anchor/share", "entropy", "step_time")


def counters(path: Path) -> dict[str, list[list[float]]]:
    """Training counters by step from metrics.jsonl: name -> [[step, value], ...] (the study's mechanism table)."""
    rows = read_jsonl_tolerant(path) if path.exists() else []
    return {name: [[row["step"], row[name]] for row in rows if isinstance(row.get(name), (int, float))]
            for name in COUNTERS if any(name in row for row in rows)}


def machine() -> dict[str, Any]:
    gpu = None
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    versions = {}
    for package in ("torch", "transformers", "trl", "datasets", "peft"):  # the GPU host's differ from our pins
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(), "gpu": gpu,
            "python": platform.python_version(), "versions": versions}


def write_results(recipe: dict, out: Path, runs: dict, stages: list[str] | None, jobs: int, threads: int,
                  copy: str | Path | None = None) -> Path:
    """OUT/results.json (and `copy`): every run's config, eval metrics and intervals, score files with
    their metrics, the baselines' predictions and metrics, cost, the machine."""
    from agrl.report import score_metrics

    scheme = recipe["data"].get("scheme", "default")
    rows = []
    for name, run in runs.items():
        if stages is not None and run["stage"] not in stages and name not in stages:
            continue
        evals = {}
        for split in run["evals"]:
            path = out / name / "eval" / f"{split}.json"
            if path.exists():
                result = json.loads(path.read_text())
                evals[split] = {k: result.get(k) for k in ("n", "metrics", "intervals", "predictions")}
        scores = {split: {"file": str(out / "scores" / f"{name}.{split}.jsonl"),
                          "source": str(score_source(recipe, out, split)),
                          "metrics": score_metrics(out / "scores" / f"{name}.{split}.jsonl",
                                                   score_source(recipe, out, split), scheme),
                          **json.loads((out / "scores" / f"{name}.{split}.cost.json").read_text())}
                  for split in run["scores"] if (out / "scores" / f"{name}.{split}.cost.json").exists()}
        curve = out / name / "curve" / "curve.json"
        cost = {step: {k: s[k] for k in ("wall_s", "cpu_s")} for step in
                [f"train {name}", f"curve {name}", *(f"eval {name} {x}" for x in run["evals"]), *(f"score {name} {x}" for x in scores)]
                if (s := read_stamp(out, step))}
        rows.append({"name": name, "stage": run["stage"], "seed": run["seed"], "sweep": run["sweep"],
                     "dir": str(out / name), "config": stage_config(recipe, name, out, runs), "evals": evals,
                     "curve": json.loads(curve.read_text()) if curve.exists() else None,
                     "counters": counters(out / name / "metrics.jsonl"),
                     "scores": scores, "cost": cost})
    body = {"recipe": recipe["_path"], "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "jobs": jobs, "threads_per_job": threads, "choices": recipe.get("_choices"), "runs": rows,
            "resamples": (recipe.get("eval") or {}).get("resamples") or 1000,
            "differences": (recipe.get("report") or {}).get("differences"), "baselines": {},
            "profile": recipe.get("_profile"), "sets": recipe.get("_sets")}
    for kind in (recipe.get("baselines") or {}).get("kinds", ()):
        for split in recipe["baselines"]["splits"]:
            path = out / "baselines" / f"{kind}.{split}.jsonl"
            if path.exists():
                body["baselines"].setdefault(kind, {})[split] = {
                    "file": str(path), "source": str(data_file(recipe, split, out)),
                    "metrics": score_metrics(path, data_file(recipe, split, out), scheme)}
    text = json.dumps(body, indent=1, default=str) + "\n"
    if copy:
        atomic_write(Path(copy), text)
    return atomic_write(out / "results.json", text)


if __name__ == "__main__":  # a job's process: python -m agrl.run OUT STEP...
    run_steps(Path(sys.argv[1]), sys.argv[2:])
