"""`agrl run RECIPE`: the runner. It checks the recipe whole (recipe.py), takes OUT for itself, plans
every step, schedules the steps' jobs, `--jobs` at a time, then writes results.json and the report; the
steps themselves run in the jobs' processes (steps.py).

`plan` is the one list of typed steps (Step: kind, name, job, after, done, stamp, args): `data`,
`model`, then per concrete stage `train NAME`, `curve NAME`, `eval NAME SPLIT` (greedy `agrl eval`) and
`score NAME SPLIT` (one-pass `agrl score`), and `baseline KIND` (`agrl baseline`, on CPU beside the
stages). Stamps, `--only`, the schedule, the skips, results.json and its costs all read it. A job (the
data, the model, one stage with its evals and scores, or one baseline) is its own process
(`python -m agrl.run.steps OUT JOB STEP...`, OMP_NUM_THREADS=threads), started once the job it starts from
has finished. A step's stamp hashes what makes it, its inputs' stamps, and the content of the files it
reads from outside OUT (`inputs`). A rerun skips a step whose output exists under the same stamp, resumes
a killed one (training from its last checkpoint, scoring from the last scored row) and refuses OUT when
it holds a step made by another recipe or from changed inputs (`--force` redoes it). One runner holds
OUT at a time (`_hold`); its jobs die with it. With a sweep, the grid points run first; OUT/choices.json
records what they chose. results.json is rewritten as each job ends, so a run cut short still reports
what finished.

    agrl run configs/home_depot/tiny.yaml --out runs/hd_judges/tiny --jobs 2
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from agrl.data.schemes import DEFAULT
from agrl.errors import UserError
from agrl.files import atomic_write, content_fingerprint, read_jsonl_tolerant, try_lock
from agrl.run.recipe import (
    Layout,
    Recipe,
    choose,
    data_file,
    expand,
    load_recipe,
    score_source,
    stage_config,
    written,
)


class JobFailed(RuntimeError):
    """A job's process exited with an error (its log says why); a rerun resumes it."""


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def inputs(recipe: Recipe) -> dict[str, dict]:
    """The content fingerprints (files.content_fingerprint, as `agrl score` records its model's) of what
    the data and model steps read from outside OUT: the import folder, a scheme file, the recipe whose
    eval queries are excluded; the local model, the GGUF, the shipped base judge. Computed once a run."""
    data, model = recipe.data, recipe.model
    read: dict[str, dict] = {"data": {}, "model": {}}
    if data.dir is not None:
        read["data"]["dir"] = content_fingerprint(data.dir)
    if data.scheme and Path(data.scheme).is_file():
        read["data"]["scheme"] = content_fingerprint(data.scheme)
    if data.exclude_queries_of:
        read["data"]["exclude_queries_of"] = written(load_recipe(data.exclude_queries_of).data)
    if model.path:
        read["model"]["path"] = content_fingerprint(model.path)
    if model.import_:
        from agrl.model.pretrained import resolve_source

        try:
            read["model"]["import"] = content_fingerprint(resolve_source(model.import_))
        except UserError:
            pass  # (smollm2 not installed: the model step says so)
    if model.base:
        from agrl.model.tiny import base_judge_dir

        read["model"]["base"] = content_fingerprint(base_judge_dir(model.base))
    return read


@dataclass(frozen=True)
class Step:
    """One step of a run: its kind (data, model, train, eval, curve, score, baseline) and name ("eval sft
    eval_wild"), the job (process) it runs in and the job that must end before that one starts, the file
    that exists once it is done, its stamp (a hash of what makes it and of its inputs' stamps, files read
    from outside OUT by content), and what the job's process calls: steps.py's function for the kind
    with `args` (a stage's name, a split, a baseline kind)."""

    kind: str
    name: str
    job: str
    after: str | None
    done: Path
    stamp: str
    args: tuple = ()


def plan(recipe: Recipe, out: Path, stages: list[str] | None = None, runs: dict | None = None) -> list[Step]:
    """Every step of the run, in order, built in one pass; stamps, `--only`, the jobs' schedule, the skips
    and results.json all read this list. `stages`: only these (recipe stage names or concrete ones; the
    data, model and baselines stay). A changed recipe part or input changes the stamps of its step and of
    every step downstream. The stamps hash each section as the recipe wrote it (recipe.written)."""
    runs = runs or expand(recipe)
    at = Layout.of(recipe, out)
    read = recipe.inputs or inputs(recipe)
    steps: list[Step] = []

    def step(kind: str, name: str, job: str, after: str | None, done: Path, stamp: str, *args) -> str:
        steps.append(Step(kind, name, job, after, done, stamp, args))
        return stamp

    data = step("data", "data", "data", None, at.splits,
                digest(written(recipe.data), recipe.score.queries if recipe.score else None,
                       sorted({s.records for s in recipe.stages.values()} - {None}, key=str),
                       *([read["data"]] if read["data"] else [])))
    trained = {"model": digest(written(recipe.model), *([read["model"]] if read["model"] else []))}
    if recipe.model.path is None:
        step("model", "model", "model", "data", at.model / "config.json", trained["model"])
    for kind in recipe.baselines.kinds if recipe.baselines else ():  # not stages: --only keeps them
        step("baseline", f"baseline {kind}", f"baseline-{kind}", "data",
             at.baseline(kind, recipe.baselines.splits[-1]), digest(written(recipe.baselines), kind, data), kind)
    kept = []
    for name, run in runs.items():  # every run's stamp: a kept run's may start from one left out
        config = stage_config(recipe, name, out, runs)
        files = {key: content_fingerprint(config[key]) for key in ("rules_config", "scheme")
                 if isinstance(config.get(key), str) and Path(config[key]).is_file()}
        trained[name] = digest(config, trained[run["from"]], data, *([files] if files else []))
        if stages is None or name in stages or run["stage"] in stages:
            kept.append(name)
            step("train", f"train {name}", name, run["from"], at.trained(name, bool(config.get("lora_r"))),
                 trained[name], name)
    settings = written(recipe.eval) if recipe.eval is not None else None
    scoring = written(recipe.score) if recipe.score is not None else None
    for name in kept:
        if recipe.eval is not None and recipe.eval.curve:
            step("curve", f"curve {name}", name, None, at.curve(name), digest(settings, trained[name], data), name)
        for split in runs[name]["evals"]:
            step("eval", f"eval {name} {split}", name, None, at.eval(name, split),
                 digest(settings, trained[name], data), name, split)
        for split in runs[name]["scores"]:
            step("score", f"score {name} {split}", name, None, at.score(name, split, ".cost.json"),
                 digest(scoring, trained[name], data), name, split)
    return steps


# ---------------------------------------------------------------------------- the runner


def read_stamp(out: Path, name: str) -> dict:
    try:
        return json.loads(Layout(out).stamp(name).read_text())
    except (OSError, ValueError):
        return {}  # missing or unreadable: the step counts as made by another recipe


def _done(out: Path, step: Step) -> bool:
    return step.done.exists() and read_stamp(out, step.name).get("stamp") == step.stamp


def run_recipe(recipe_name: str | Path, out: str | Path, jobs: int = 1, stages: list[str] | None = None,
               force: bool = False, threads: int | None = None, console: Console | None = None,
               title: str = "agrl run", profile: str | None = None, sets: list[str] = (),
               results_copy: str | Path | None = None) -> dict[str, Any]:
    """Run every step of the recipe (with `profile` and `sets` laid over it: recipe.overlay) into OUT
    (skipping finished ones), then results.json and the report. results.json (and `results_copy`) is
    rewritten as each job ends. Returns {"timings": step -> seconds (None: already done), "total_s",
    "report": paths, "summary", "results": path}. Every check (recipe, stages, OUT) runs before any job starts."""
    from agrl.run.recipe import check_recipe

    out = Path(out)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"--jobs {jobs}: must be at least 1")
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, expected the run's directory")
    recipe = load_recipe(recipe_name, profile, sets)
    if stages is not None and (not all(stages) or len(set(stages)) < len(stages)):
        raise UserError(f"--only {','.join(stages)!r}: names each stage once, comma-separated (e.g. sft,grpo)")
    unknown = set(stages or ()) - set(recipe.stages)
    if unknown:
        raise UserError(f"{recipe.path}: no stage(s) {sorted(unknown)} (stages: {list(recipe.stages)})")
    check_recipe(recipe, out)
    recipe = replace(recipe, inputs=inputs(recipe))  # (read once: the job processes take it from OUT/recipe.json)
    with _hold(out):
        return _run(recipe, out, jobs, stages, force, threads, console, title, results_copy)


def _run(recipe: Recipe, out: Path, jobs: int, stages: list[str] | None, force: bool, threads: int | None,
         console: Console | None, title: str, results_copy: str | Path | None) -> dict[str, Any]:
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
        if recipe.sweep is not None:  # the grid points first: they choose the swept stages' keys
            timings |= _run_jobs(recipe, out, runs, stages, jobs, threads, progress, console, title, report_so_far)
            recipe = replace(recipe, choices=choose(recipe, out))  # (--only may leave a grid unfinished: no choice for it yet)
            atomic_write(Layout(out).choices, json.dumps(recipe.choices, indent=2) + "\n")
            runs = expand(recipe, recipe.choices)
            _refuse_other_recipe(recipe, out, runs, force)
        more = _run_jobs(recipe, out, runs, stages, jobs, threads, progress, console, title, report_so_far)
        timings |= {k: v for k, v in more.items() if v is not None or k not in timings}
    total = time.perf_counter() - start
    atomic_write(Layout(out).timings, json.dumps({"steps": timings, "total_s": total}, indent=2) + "\n")
    results = report_so_far(runs)
    from agrl.evaluation.report import report_results

    report = report_results(results, Layout(out).report)
    return {"timings": timings, "total_s": total, "report": report, "results": results,
            "summary": json.loads(report["summary"].read_text())}


@contextmanager
def _hold(out: Path) -> Iterator[None]:
    """OUT for this runner alone while it lives: an flock on the folder (the kernel drops it when the runner
    dies, however it dies); a second `agrl run` on OUT is refused naming the holder (OUT/runner.json). A job
    an earlier, killed runner left alive (it holds OUT/locks/JOB.lock) is refused too."""
    out.mkdir(parents=True, exist_ok=True)  # an OSError here is the CLI's one line naming --out (files.os_error_line)
    handle = os.open(out, os.O_RDONLY)
    try:
        if not try_lock(handle):
            try:
                holder = json.loads(Layout(out).runner.read_text())
                who = f"pid {holder['pid']} on {holder['host']} since {holder['started']}: {' '.join(holder['argv'])}"
            except (OSError, ValueError, KeyError):
                who = "a process that has not written OUT/runner.json yet"
            raise UserError(f"--out {out}: another `agrl run` holds it now ({who}); wait for it, or choose another --out")
        for lock in sorted(Layout(out).job_lock("*").parent.glob("*.lock")):
            with lock.open("a+") as job:
                if not try_lock(job):
                    job.seek(0)
                    raise UserError(f"--out {out}: job {lock.stem} of an earlier run is still running (pid "
                                    f"{job.read().strip() or '?'}); stop it or let it end, then rerun")
        yield
    finally:
        try:
            if json.loads(Layout(out).runner.read_text())["pid"] == os.getpid():
                Layout(out).runner.unlink()
        except (OSError, ValueError, KeyError):
            pass
        os.close(handle)


def _claim(out: Path) -> None:
    atomic_write(Layout(out).runner, json.dumps({
        "pid": os.getpid(), "host": platform.node(), "argv": sys.argv,
        "started": datetime.now(UTC).isoformat(timespec="seconds")}) + "\n")


def _refuse_other_recipe(recipe: Recipe, out: Path, runs: dict, force: bool) -> None:
    # A folder with files but neither recipe.json (written before the first job) nor stamps/ is not a run's.
    ours = Layout(out).recipe.exists() or Layout(out).stamp("data").parent.is_dir()
    if not force and out.is_dir() and any(p != Layout(out).runner for p in out.iterdir()) and not ours:
        raise UserError(f"--out {out}: holds files not made by a recipe (no recipe.json); "
                        "pass --force to write into it, or choose another --out")
    other = [step.name for step in plan(recipe, out, runs=runs) if step.done.exists() and not _done(out, step)]
    if other and not force:
        raise UserError(f"--out {out}: holds {len(other)} step(s) made by another recipe (first: {other[0]}), or "
                        "from inputs (model, data, rules or scheme files) that changed since; pass --force to redo "
                        "them, or choose another --out")
    _claim(out)


def _run_jobs(recipe: Recipe, out: Path, runs: dict, stages: list[str] | None, jobs: int, threads: int,
              progress: Progress, console: Console, title: str,
              job_done: Callable[[dict], Any] = lambda runs: None) -> dict[str, float | None]:
    """Each job (data, model, one stage) as a process once the one it starts from is done, `jobs` at a time."""
    at = Layout(out)
    steps = plan(recipe, out, stages, runs)
    todo: dict[str, list[Step]] = {}
    after: dict[str, str | None] = {}
    timings: dict[str, float | None] = {}
    for step in steps:
        after.setdefault(step.job, step.after)  # (a job's first step, its training, names what it starts from)
        if _done(out, step):
            timings[step.name] = None
            continue
        if step.done.exists() and step.kind == "train":  # another recipe's: no resume from its checkpoints
            shutil.rmtree(at.stage(step.job), ignore_errors=True)
        todo.setdefault(step.job, []).append(step)
    atomic_write(at.recipe, json.dumps(recipe.as_json(), default=str) + "\n")
    overall = progress.add_task(f"[bold]{title}", total=len(steps))
    progress.advance(overall, sum(v is None for v in timings.values()))
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                        "TOKENIZERS_PARALLELISM": "false", "AGRL_RUNNER_PID": str(os.getpid()),
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
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
            at.log(f"job_{job}").parent.mkdir(parents=True, exist_ok=True)
            with at.log(f"job_{job}").open("a") as log:
                proc = subprocess.Popen([sys.executable, "-m", "agrl.run.steps", str(out), job, *(s.name for s in todo[job])],
                                        env=env, stdout=log, stderr=subprocess.STDOUT)
            task = None
            if any(step.kind == "train" for step in todo[job]):
                total = stage_config(recipe, job, out, runs).get("max_steps")
                task = progress.add_task(f"  {job} steps", total=total if total and total > 0 else None)
            running[job] = (proc, task)
            progress.update(overall, description=f"[bold]{title}[/bold]: {', '.join(running)}")
            todo.pop(job)
        time.sleep(0.2)
        for job, (proc, task) in list(running.items()):
            if task is not None:
                progress.update(task, completed=_last_step(at.stage(job) / "metrics.jsonl"))
            if proc.poll() is None:
                continue
            running.pop(job)
            if task is not None:
                progress.remove_task(task)
            for step in steps:
                stamp = read_stamp(out, step.name) if step.job == job and step.name not in timings else {}
                if stamp.get("stamp") == step.stamp:
                    timings[step.name] = stamp["wall_s"]
                    console.log(f"{step.name}: {stamp['wall_s']:.1f} s")
                    progress.advance(overall)
            if proc.returncode:
                failed.append(job)
                console.log(f"[red]{job} failed (exit {proc.returncode}); see {at.logs}")
            job_done(runs)
    if failed:
        raise JobFailed(f"job(s) {', '.join(failed)} failed or did not start; see {at.logs} "
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


def write_results(recipe: Recipe, out: Path, runs: dict, stages: list[str] | None, jobs: int, threads: int,
                  copy: str | Path | None = None) -> Path:
    """OUT/results.json (and `copy`): every run's config, eval metrics and intervals, score files with
    their metrics, the baselines' predictions and metrics, cost, the machine."""
    from agrl.evaluation.metrics import score_metrics

    scheme, at = recipe.data.scheme or DEFAULT, Layout.of(recipe, out)
    steps = plan(recipe, out, stages, runs)
    rows = []
    for name in dict.fromkeys(step.job for step in steps if step.kind == "train"):
        run = runs[name]
        evals = {}
        for split in run["evals"]:
            if at.eval(name, split).exists():
                result = json.loads(at.eval(name, split).read_text())
                evals[split] = {k: result.get(k) for k in ("n", "metrics", "intervals", "predictions")}
        scores = {split: {"file": str(at.score(name, split)), "source": str(score_source(recipe, out, split)),
                          "metrics": score_metrics(at.score(name, split), score_source(recipe, out, split), scheme),
                          **json.loads(at.score(name, split, ".cost.json").read_text())}
                  for split in run["scores"] if at.score(name, split, ".cost.json").exists()}
        cost = {step.name: {k: stamp[k] for k in ("wall_s", "cpu_s")} for step in steps
                if step.job == name and (stamp := read_stamp(out, step.name))}
        rows.append({"name": name, "stage": run["stage"], "seed": run["seed"], "sweep": run["sweep"],
                     "dir": str(at.stage(name)), "config": stage_config(recipe, name, out, runs), "evals": evals,
                     "curve": json.loads(at.curve(name).read_text()) if at.curve(name).exists() else None,
                     "counters": counters(at.stage(name) / "metrics.jsonl"),
                     "scores": scores, "cost": cost})
    body = {"recipe": recipe.path, "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "jobs": jobs, "threads_per_job": threads, "choices": recipe.choices, "runs": rows,
            "resamples": (recipe.eval.resamples if recipe.eval else None) or 1000,
            "differences": written(recipe.report.differences) if recipe.report else None, "baselines": {},
            "profile": recipe.profile, "sets": list(recipe.sets)}
    for kind in recipe.baselines.kinds if recipe.baselines else ():
        for split in recipe.baselines.splits:
            path = at.baseline(kind, split)
            if path.exists():
                body["baselines"].setdefault(kind, {})[split] = {
                    "file": str(path), "source": str(data_file(recipe, split, out)),
                    "metrics": score_metrics(path, data_file(recipe, split, out), scheme)}
    text = json.dumps(body, indent=1, default=str) + "\n"
    if copy:
        atomic_write(Path(copy), text)
    return atomic_write(at.results, text)
