"""The one-command demo (spec section 9): synthetic data -> tiny local model -> SFT -> DPO, GRPO and
AGRL from the same SFT checkpoint -> evaluation on eval_balanced and eval_wild -> report.

A recipe (YAML package data, recipes/demo/{default,quick}.yaml, or a file such as
configs/smollm2/cpu.yaml) sizes every part; its `model` section builds the tiny model (`size`, `seed`)
or imports a pretrained one (`import: smollm2` or a GGUF path, pretrained.py). Each training stage
runs through `agrl.train.train` from a config written to OUT/configs/STAGE.yaml, so any stage can be
rerun by hand (`agrl train runs/demo/configs/grpo.yaml`). A step whose output exists and was made
from the same recipe is skipped, so a killed demo continues where it stopped; OUT/stamps.json records
what made each step, and a step made by another recipe is refused (or, with force, redone). Every
stage's config is checked before any step runs. One rich display spans all stages (TRL's bars are off).

    result = run_demo("runs/demo", recipe="quick")     # or: agrl demo --out runs/demo [--quick]
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from importlib import resources
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
from rich.table import Table
from transformers import TrainerCallback

from agrl.errors import UserError
from agrl.files import atomic_write, yaml_file

DEMO_KEYS = ("config", "from", "data")  # recipe keys of a stage that are not `agrl train` keys
CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the stage configs of a source checkout
SPLITS = ("eval_balanced", "eval_wild")


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """A built-in recipe name (default, quick) or a YAML file; ValueError naming what is missing."""
    builtin = resources.files("agrl") / "recipes" / "demo" / f"{name_or_path}.yaml"
    path = Path(str(builtin)) if builtin.is_file() else Path(name_or_path)
    if not path.is_file():
        raise UserError(f"--recipe {name_or_path}: no such demo recipe (built-in: default, quick) or file")
    recipe = yaml_file(path, "demo recipe")
    for key in ("data", "model", "eval", "common", "stages"):
        if not isinstance(recipe, dict) or key not in recipe:
            raise UserError(f"{path}: {key}: required recipe section is missing")
    for key in ("data", "model", "eval", "common", "stages"):
        if not isinstance(recipe[key], dict):
            raise UserError(f"{path}: {key}: must be a mapping")
    earlier = ["model"]
    for name, stage in recipe["stages"].items():
        if not isinstance(stage, dict) or stage.get("from") not in earlier:
            raise UserError(f"{path}: stages.{name}.from: must be 'model' or an earlier stage")
        if stage.get("data") not in ("sft", "rl", *SPLITS):
            raise UserError(f"{path}: stages.{name}.data: must be one of sft, rl, {', '.join(SPLITS)}")
        earlier.append(name)
    for key in ("seed", "noise"):
        if key not in recipe["data"]:
            raise UserError(f"{path}: data.{key}: is required")
    fresh = not ({"base", "import"} & set(recipe["model"]))  # else a shipped base judge, or an imported GGUF
    for key in ("size", "seed") if fresh else ():
        if key not in recipe["model"]:
            raise UserError(f"{path}: model.{key}: is required (or model.base: a shipped base judge, "
                            "or model.import: a GGUF)")
    for key in ("batch_size", "max_new_tokens", "resamples"):
        if key not in recipe["eval"]:
            raise UserError(f"{path}: eval.{key}: is required")
    return recipe


def check_recipe(recipe: dict[str, Any], out: Path) -> None:
    """Every stage's `agrl train` config is checked (keys, types, ranges) before any step runs."""
    from agrl.tiny import SIZES
    from agrl.train.config import load_config

    if recipe["model"].get("base"):
        from agrl.tiny import base_judge_dir

        try:
            base_judge_dir(recipe["model"]["base"])
        except ValueError as err:
            raise UserError(f"recipe: model.base: {err}") from None
    elif "import" not in recipe["model"] and recipe["model"]["size"] not in SIZES:
        raise UserError(f"recipe: model.size: {recipe['model']['size']!r} is not one of {', '.join(SIZES)}")
    noise = recipe["data"]["noise"]
    if not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise UserError(f"recipe: data.noise: must be a share in [0, 1], got {noise!r}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in recipe["stages"]:
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(stage_config(recipe, name, out), sort_keys=False))
            try:
                load_config(path)
            except UserError as err:
                raise UserError(f"recipe: stages.{name}: {str(err).removeprefix(str(path) + ': ')}") from None


def stamps(recipe: dict[str, Any], out: Path) -> dict[str, str]:
    """Per step, a hash of everything that made it, its inputs' stamps included: a changed recipe
    part changes the stamps of that step and of every step downstream of it."""

    def digest(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    made = {"data": digest(recipe["data"]), "model": digest(recipe["model"])}
    for name, stage in recipe["stages"].items():
        parent = made[stage["from"]] if stage["from"] == "model" else made[f"train {stage['from']}"]
        made[f"train {name}"] = digest(stage_config(recipe, name, out), parent, made["data"])
    for name in recipe["stages"]:
        for split in SPLITS:
            made[f"eval {name} {split}"] = digest(recipe["eval"], made[f"train {name}"], made["data"])
    return made


def check_stages(recipe: dict[str, Any], stages: list[str] | None, where: str | Path) -> None:
    unknown = set(stages or ()) - set(recipe["stages"])
    if unknown:
        raise UserError(f"{where}: no stage(s) {sorted(unknown)} (stages: {list(recipe['stages'])})")


def stage_config(recipe: dict[str, Any], name: str, out: Path) -> dict[str, Any]:
    """The flat `agrl train` mapping of one stage: its `config` (configs/NAME.yaml, the one copy of the
    stage's settings), then the recipe's common keys, the stage's own keys, paths under OUT."""
    stage = recipe["stages"][name]
    base = {}
    if stage.get("config"):
        path = CONFIGS / stage["config"]
        if not path.is_file():
            raise UserError(f"recipe: stages.{name}.config: {path}: no such stage config (the demo reads "
                            "configs/*.yaml of a source checkout)")
        base = yaml_file(path, "stage config")
    config = {**base, **recipe["common"], **{k: v for k, v in stage.items() if k not in DEMO_KEYS}}
    config["model"] = str(out / stage["from"])
    config["train_file"] = str(out / "data" / f"{stage['data']}.jsonl")
    config["output_dir"] = str(out / name)
    return config


def quiet_libraries() -> None:
    """Per-stage bars and load chatter off: the demo's own display is the one progress view."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.basicConfig(level=logging.WARNING, handlers=[_ToStderrNow()])


class _ToStderrNow(logging.Handler):
    """Writes to sys.stderr as it is when a record is logged: a stage's log file while it runs."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


# ---------------------------------------------------------------------------- steps


def _make_data(recipe: dict, out: Path) -> None:
    from agrl import synth

    data = recipe["data"]
    exclude: set[str] = set()
    if data.get("exclude_queries_of"):  # keep this benchmark's pairs off another recipe's eval queries
        other = load_recipe(data["exclude_queries_of"])["data"]
        exclude = synth.eval_queries(synth.generate(seed=other["seed"], sizes=other.get("sizes"), noise=0.0))
    splits = synth.generate(seed=data["seed"], sizes=data.get("sizes"), noise=data["noise"], mix=data.get("mix"),
                            exclude_queries=exclude)
    synth.write(out / "data", splits)


def _make_model(recipe: dict, out: Path) -> None:
    if "import" in recipe["model"]:
        from agrl.pretrained import import_gguf

        import_gguf(recipe["model"]["import"], out / "model")
        return
    from agrl.tiny import copy_base_judge, init_model

    if recipe["model"].get("base"):
        copy_base_judge(recipe["model"]["base"], out / "model")
    else:
        init_model(out / "model", size=recipe["model"]["size"], seed=recipe["model"]["seed"])


def _train(recipe: dict, out: Path, name: str, callbacks: tuple = ()) -> None:
    from agrl.train import train

    path = atomic_write(out / "configs" / f"{name}.yaml", yaml.safe_dump(stage_config(recipe, name, out), sort_keys=False))
    train(path, callbacks=callbacks)


def _evaluate(recipe: dict, out: Path, name: str, split: str) -> None:
    from agrl.evaluate import evaluate

    settings = recipe["eval"]
    evaluate(out / name, out / "data" / f"{split}.jsonl", out / name / "eval" / f"{split}.json",
             batch_size=settings["batch_size"], max_new_tokens=settings["max_new_tokens"],
             limit=settings.get("limit"), resamples=settings["resamples"])


def trained_file(recipe: dict, name: str, out: Path) -> Path:
    """The weights a finished stage leaves: an adapter when the stage trains LoRA (lora_r > 0)."""
    lora = stage_config(recipe, name, out).get("lora_r")
    return out / name / ("adapter_model.safetensors" if lora else "model.safetensors")


def plan(recipe: dict, out: Path, stages: list[str] | None = None) -> list[tuple[str, Path, Callable[..., None]]]:
    """(step name, the file that exists once it is done, the call) in order; `stages`: only these.
    A training step's call takes `callbacks` (TrainerCallbacks)."""
    names = [name for name in recipe["stages"] if stages is None or name in stages]
    steps = [("data", out / "data" / "eval_wild.jsonl", lambda: _make_data(recipe, out)),
             ("model", out / "model" / "config.json", lambda: _make_model(recipe, out))]
    for name in names:
        steps.append((f"train {name}", trained_file(recipe, name, out),
                      lambda callbacks=(), name=name: _train(recipe, out, name, callbacks)))
    for name in names:
        steps += [(f"eval {name} {split}", out / name / "eval" / f"{split}.json",
                   lambda name=name, split=split: _evaluate(recipe, out, name, split)) for split in SPLITS]
    return steps


# ---------------------------------------------------------------------------- display


def _progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


class _StepProgress(TrainerCallback):
    """Shows a training stage's step count in the demo's display (the trainer calls it every step)."""

    def __init__(self, progress: Progress, task: int):
        self.progress, self.task = progress, task

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step, total=state.max_steps or None)


def run_demo(out: str | Path, recipe: str | Path = "default", console: Console | None = None,
             force: bool = False, stages: list[str] | None = None) -> dict[str, Any]:
    """Run every step of the recipe into OUT (skipping finished ones of the same recipe), then the report.
    `stages` runs only those (a stage's `from` must then be done already, or among them).

    Returns {"timings": step -> seconds (None: already done), "total_s", "report": paths, "summary": ...}
    and writes OUT/timings.json. A step OUT holds from another recipe is a UserError unless `force`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, expected the demo's directory")
    settings = load_recipe(recipe)
    check_stages(settings, stages, recipe)
    check_recipe(settings, out)
    wanted = stamps(settings, out)
    stamp_file = out / "stamps.json"
    made = _read_stamps(stamp_file)
    redo = [name for name, done_file, _ in plan(settings, out) if done_file.exists() and made.get(name) != wanted[name]]
    if redo and not force:
        raise UserError(f"--out {out}: holds {len(redo)} step(s) made by another recipe (first: {redo[0]}); "
                        "pass --force to redo them, or choose another --out")
    # Bound to the real stderr now: each step's own output (TRL's log lines, warnings, eval tables)
    # is redirected to OUT/logs/STEP.log while the display keeps drawing here.
    console = Console(file=console.file if console else sys.stderr)
    quiet_libraries()
    steps = plan(settings, out, stages)
    timings: dict[str, float | None] = {}
    start = time.perf_counter()
    with _progress(console) as progress:
        overall = progress.add_task("[bold]agrl demo", total=len(steps) + 1)
        for name, done_file, call in steps:
            if done_file.exists() and name not in redo:
                timings[name] = None
                progress.advance(overall)
                continue
            if name.startswith("train ") and name in redo:  # no resume from the other recipe's checkpoints
                shutil.rmtree(out / name.removeprefix("train "), ignore_errors=True)
            progress.update(overall, description=f"[bold]agrl demo[/bold]: {name}")
            made.pop(name, None)
            timings[name] = _timed(progress, settings, out, name, call)
            made[name] = wanted[name]
            atomic_write(stamp_file, json.dumps(made, indent=2) + "\n")
            console.log(f"{name}: {timings[name]:.1f} s")
            progress.advance(overall)
        progress.update(overall, description="[bold]agrl demo[/bold]: report")
        report = _report(settings, out, stages)
        progress.advance(overall)
    total = time.perf_counter() - start
    atomic_write(out / "timings.json", json.dumps({"steps": timings, "total_s": total}, indent=2) + "\n")
    summary = json.loads(report["summary"].read_text())
    return {"timings": timings, "total_s": total, "report": report, "summary": summary}


def _read_stamps(path: Path) -> dict[str, str]:
    try:
        stamps_made = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}  # unreadable: every existing step counts as made by another recipe
    return stamps_made if isinstance(stamps_made, dict) else {}


def _timed(progress: Progress, recipe: dict, out: Path, name: str, call: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    stage = name.removeprefix("train ")
    log = out / "logs" / f"{name.replace(' ', '_')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle, redirect_stdout(handle), redirect_stderr(handle):
        if stage not in recipe["stages"]:
            call()
            return time.perf_counter() - t0
        total = stage_config(recipe, stage, out).get("max_steps")
        total = total if total and total > 0 else None
        task = progress.add_task(f"  {stage} steps", total=total)
        call(callbacks=(_StepProgress(progress, task),))
        progress.remove_task(task)
    return time.perf_counter() - t0


def _report(recipe: dict, out: Path, stages: list[str] | None = None) -> dict[str, Path]:
    from agrl.report import write_report

    return write_report([out / name for name in recipe["stages"] if stages is None or name in stages], out / "report")


# (metric, column header): headers short enough that a split's table fits 80 columns uncut.
RESULT_COLUMNS = (("macro_f1", "macro-F1 [95% CI]"), ("accuracy", "acc"), ("good_f1", "good-F1"),
                  ("format_valid", "valid"), ("adherence", "adher."))


def results_tables(summary: dict) -> list[Table]:
    """One table per eval split: method x headline metric (macro-F1 with its 95% interval), from the
    report's summary.json. Each fits an 80-column terminal without cutting a name."""
    tables = []
    for split, methods in summary["comparison"].items():
        table = Table(title=f"agrl demo: {split}", title_justify="left")
        table.add_column("method", no_wrap=True)
        for metric, header in RESULT_COLUMNS:
            table.add_column(header, justify="right", no_wrap=True)
        for method, stats in methods.items():
            table.add_row(method, *(_cell(stats.get(metric), metric == "macro_f1") for metric, _ in RESULT_COLUMNS))
        tables.append(table)
    return tables


def _cell(stat: dict | None, interval: bool) -> str:
    if stat is None:
        return "–"
    if interval and stat["interval"]:
        return f"{stat['mean']:.3f} [{stat['interval'][0]:.2f}, {stat['interval'][1]:.2f}]"
    return f"{stat['mean']:.3f}"
