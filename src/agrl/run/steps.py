"""A job of `agrl run` (run.py): its own process, `python -m agrl.run.steps OUT JOB STEP...`, started by the
runner. It holds OUT/locks/JOB.lock while it lives and dies with the runner; runs each named step of the
runner's plan (run.plan: kind, name, args, stamp) with the function of its kind below, logs it to
OUT/logs/STEP.log and writes its stamp (OUT/stamps/STEP.json: the plan's hash, wall and CPU seconds).

    data      the synthetic benchmark (or the import's `records` and `score.queries` cuts), OUT/data
    model     the starting model, OUT/model (`agrl model init`, a shipped base judge, a GGUF import)
    train     one stage (`agrl train` on OUT/configs/NAME.yaml), OUT/NAME
    eval      greedy `agrl eval` of a stage on a split; curve: every checkpoint of it on `eval.curve`
    score     one-pass `agrl score` of a stage on a split, OUT/scores
    baseline  `agrl baseline` fit and predict, OUT/baselines
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import shutil
import signal
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

import yaml

from agrl.data.schemes import DEFAULT
from agrl.files import atomic_write, try_lock
from agrl.run.recipe import (
    Layout,
    Recipe,
    data_file,
    expand,
    from_json,
    load_recipe,
    score_source,
    splits_of,
    stage_config,
    stage_data,
)
from agrl.run.runner import Step, _last_step, plan


def call(recipe: Recipe, out: Path, runs: dict, step: Step) -> None:
    """The step's function (by its kind) on its args."""
    if step.kind == "train":
        return train_stage(recipe, out, *step.args, runs)
    return {"data": make_data, "model": make_model, "eval": evaluate_stage, "curve": curve_stage,
            "score": score_stage, "baseline": baseline}[step.kind](recipe, out, *step.args)




def make_data(recipe: Recipe, out: Path) -> None:
    from agrl.core import synth
    from agrl.data.records import split_by_query, write_jsonl

    data = recipe.data
    if data.dir is None:
        exclude: set[str] = set()
        if data.exclude_queries_of:  # keep this benchmark's pairs off another recipe's eval queries
            other = load_recipe(data.exclude_queries_of).data
            exclude = synth.eval_queries(synth.generate(seed=other.seed, sizes=other.sizes, noise=0.0))
        splits = synth.generate(seed=data.seed, sizes=data.sizes, noise=data.noise, mix=data.mix,
                                exclude_queries=exclude)
        for name, extra in (data.add or {}).items():  # e.g. a large clean SFT set before the noisy rows
            sizes = dict.fromkeys(synth.SPLITS, 0) | {name: extra.size}
            added = synth.generate(seed=extra.seed, sizes=sizes, noise=extra.noise,
                                   mix={name: extra.mix} if extra.mix else None,
                                   exclude_queries=exclude | synth.eval_queries(splits))[name]
            for record in added:  # ids stay unique in the joined split
                record.id = f"{record.id}-add{extra.seed}"
            splits[name] = added + splits[name]
        for name, parts in (data.split or {}).items():  # query-disjoint parts, e.g. rl -> rl_train + validation
            splits |= split_by_query(splits.pop(name), parts, seed=data.seed)
        for name, records in splits.items():
            write_jsonl(records, Layout(out).split(name))
    for stage in recipe.stages.values():  # `records: N`: the first N train pairs of a seeded shuffle
        if stage.records is not None:
            path = stage_data(recipe, stage, out)
            rows = _lines(data_file(recipe, "train" if stage.data is None else stage.data, out))
            random.Random((recipe.common or {}).get("seed", 0)).shuffle(rows)
            atomic_write(path, "".join(row + "\n" for row in rows[:stage.records]))
    for split in recipe.score.splits if recipe.score else ():
        source = score_source(recipe, out, split)
        if source != data_file(recipe, split, out):  # the split's pairs of its first `queries` queries
            rows = [(row, json.loads(row)["query"]) for row in _lines(data_file(recipe, split, out))]
            keep = set(list(dict.fromkeys(query for _, query in rows))[:recipe.score.queries])
            atomic_write(source, "".join(row + "\n" for row, query in rows if query in keep))
    atomic_write(Layout(out).splits, json.dumps(splits_of(recipe)) + "\n")


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_model(recipe: Recipe, out: Path) -> None:
    model = recipe.model
    if model.import_ is not None:
        from agrl.model.pretrained import import_gguf

        import_gguf(model.import_, Layout(out).model)
    elif model.base:
        from agrl.model.tiny import copy_base_judge

        copy_base_judge(model.base, Layout(out).model)
    elif model.init is not None:  # the tokenizer learns the train split's prompts and teacher reasoning
        from agrl.data.records import load_records
        from agrl.core.prompt import user_message
        from agrl.core.rules import RulesEngine
        from agrl.data.schemes import load_scheme
        from agrl.model.tiny import init_model

        scheme = load_scheme(recipe.data.scheme or DEFAULT)
        records = load_records(data_file(recipe, "train", out), scheme)
        engine = RulesEngine.from_records(records, scheme)
        corpus = [user_message(r) + "\n" + engine.teacher_reasoning(r) for r in records]
        init_model(Layout(out).model, size=model.init.size, seed=model.init.seed, corpus=corpus)
    else:
        from agrl.model.tiny import init_model

        init_model(Layout(out).model, size=model.size, seed=model.seed)


def train_stage(recipe: Recipe, out: Path, name: str, runs: dict) -> None:
    from agrl.train import train

    config = stage_config(recipe, name, out, runs)
    train(atomic_write(Layout(out).config(name), yaml.safe_dump(config, sort_keys=False)))


def evaluate_stage(recipe: Recipe, out: Path, name: str, split: str) -> None:
    from agrl.evaluation.evaluate import evaluate

    settings = recipe.eval
    evaluate(Layout(out).stage(name), data_file(recipe, split, out), Layout(out).eval(name, split),
             scheme=recipe.data.scheme or DEFAULT, batch_size=settings.batch_size,
             max_new_tokens=settings.max_new_tokens, limit=settings.limit, resamples=settings.resamples,
             posterior=settings.posterior)


def curve_stage(recipe: Recipe, out: Path, name: str) -> None:
    """Every checkpoint of the stage and its final model evaluated on `eval.curve` (step -> metrics in
    curve/curve.json); the checkpoints are deleted then (a curve point is all the study keeps of them)."""
    from agrl.evaluation.evaluate import evaluate

    settings, split = recipe.eval, recipe.eval.curve
    at, stage = Layout(out), Layout(out).stage(name)
    models = {int(p.name.removeprefix("checkpoint-")): p for p in stage.glob("checkpoint-*")}
    models[_last_step(stage / "metrics.jsonl")] = stage
    curve = {}
    for step, model in sorted(models.items()):
        path = at.curve(name, step)
        if not path.exists():
            evaluate(model, data_file(recipe, split, out), path, scheme=recipe.data.scheme or DEFAULT,
                     batch_size=settings.batch_size, max_new_tokens=settings.max_new_tokens,
                     limit=settings.limit, resamples=0, posterior=settings.posterior)
        curve[step] = json.loads(path.read_text())["metrics"]
    atomic_write(at.curve(name), json.dumps(curve, indent=1) + "\n")
    for checkpoint in models.values():
        if checkpoint != stage:
            shutil.rmtree(checkpoint)


def score_stage(recipe: Recipe, out: Path, name: str, split: str) -> None:
    from agrl.model.score import Scorer, score_file

    t0, cpu0 = time.perf_counter(), _cpu_s()
    target = Layout(out).score(name, split)
    scorer = Scorer(Layout(out).stage(name), scheme=recipe.data.scheme or DEFAULT, batch_size=recipe.score.batch_size)
    score_file(scorer, score_source(recipe, out, split), target, progress=False)
    cost = {"cpu_s": round(_cpu_s() - cpu0, 3), "wall_s": round(time.perf_counter() - t0, 3),  # ms: a small split scores in under 0.1 s
            "threads": os.environ.get("OMP_NUM_THREADS")}
    atomic_write(Layout(out).score(name, split, ".cost.json"), json.dumps(cost) + "\n")


def baseline(recipe: Recipe, out: Path, kind: str) -> None:
    """`agrl baseline fit` on the recipe's train split, then `predict` on each of its splits."""
    from agrl.evaluation import baselines
    from agrl.data.records import load_records
    from agrl.data.schemes import load_scheme

    settings, scheme = recipe.baselines, recipe.data.scheme or DEFAULT
    model = baselines.fit(load_records(data_file(recipe, settings.train, out), load_scheme(scheme)), kind, scheme)
    baselines.save(model, Layout(out).baseline(kind))
    for split in settings.splits:
        rows = baselines.predict(model, load_records(data_file(recipe, split, out), load_scheme(scheme)))
        baselines.write_predictions(rows, Layout(out).baseline(kind, split))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_steps(out: Path, job: str, names: list[str]) -> None:
    """A job's process: run the named steps in order, each logged to OUT/logs/STEP.log, then stamped."""
    lock = _job_lock(out, job)  # held while this process lives: a rerun refuses while it does
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.basicConfig(level=logging.WARNING, handlers=[_ToStderrNow()])
    at = Layout(out)
    recipe = from_json(json.loads(at.recipe.read_text()))  # parsed back as the runner parsed it
    runs = expand(recipe, recipe.choices)
    steps = {step.name: step for step in plan(recipe, out, runs=runs)}
    for name in names:
        t0, cpu0 = time.perf_counter(), _cpu_s()
        log = at.log(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as handle, redirect_stdout(handle), redirect_stderr(handle):
            call(recipe, out, runs, steps[name])
        atomic_write(at.stamp(name),
                     json.dumps({"stamp": steps[name].stamp, "wall_s": round(time.perf_counter() - t0, 2),
                                 "cpu_s": round(_cpu_s() - cpu0, 2),
                                 "date": datetime.now(UTC).isoformat(timespec="seconds"),
                                 "ended": round(time.time(), 2), "job": job}) + "\n")
    lock.close()


def _die_with_runner() -> None:
    """A job dies with the runner that started it (PR_SET_PDEATHSIG: the kernel sends SIGKILL when the
    runner dies, a `kill -9` of it included), so no trainer is left writing into OUT. Linux only; elsewhere
    the job's lock (`_job_lock`) makes a rerun refuse while it lives."""
    runner = os.environ.get("AGRL_RUNNER_PID")
    if sys.platform != "linux" or not runner:
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != int(runner):  # the runner died before the line above: die now
        os._exit(1)


def _job_lock(out: Path, job: str):
    """OUT/locks/JOB.lock, flocked and holding this process's pid for as long as the job runs."""
    path = Layout(out).job_lock(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    if not try_lock(handle):
        handle.seek(0)
        raise SystemExit(f"job {job}: already running (pid {handle.read().strip()}); not started twice")
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class _ToStderrNow(logging.Handler):
    """Writes to sys.stderr as it is when a record is logged: a step's log file while it runs."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


if __name__ == "__main__":  # a job's process: python -m agrl.run.steps OUT JOB STEP...
    _die_with_runner()
    run_steps(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
