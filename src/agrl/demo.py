"""The one-command demo (spec section 9): synthetic data -> tiny local model -> SFT -> DPO, GRPO and
AGRL from the same SFT checkpoint -> evaluation on eval_balanced and eval_wild -> report.

A recipe (YAML package data, recipes/demo/{default,quick}.yaml, or a file such as
configs/smollm2/cpu.yaml) sizes every part; its `model` section builds the tiny model (`size`, `seed`)
or imports a pretrained one (`import: smollm2` or a GGUF path, pretrained.py). Each training stage
runs through `agrl.train.train` from a config written to OUT/configs/STAGE.yaml, so any stage can be
rerun by hand (`agrl train runs/demo/configs/grpo.yaml`). A stage whose output exists is skipped, so a
killed demo continues where it stopped. One rich display spans all stages (TRL's bars are off).

    result = run_demo("runs/demo", recipe="quick")     # or: agrl demo --out runs/demo [--quick]
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from importlib import resources
from pathlib import Path
from typing import Any, Self

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

DEMO_KEYS = ("from", "data")  # recipe keys of a stage that are not `agrl train` keys
SPLITS = ("eval_balanced", "eval_wild")


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """A built-in recipe name (default, quick) or a YAML file; ValueError naming what is missing."""
    builtin = resources.files("agrl") / "recipes" / "demo" / f"{name_or_path}.yaml"
    path = Path(str(builtin)) if builtin.is_file() else Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"{name_or_path}: no such demo recipe (built-in: default, quick) or file")
    recipe = yaml.safe_load(path.read_text())
    for key in ("data", "model", "eval", "common", "stages"):
        if not isinstance(recipe, dict) or key not in recipe:
            raise ValueError(f"{path}: {key}: required recipe section is missing")
    for name, stage in recipe["stages"].items():
        if stage.get("from") not in ("model", *recipe["stages"]):
            raise ValueError(f"{path}: stages.{name}.from: must be 'model' or an earlier stage")
    return recipe


def check_stages(recipe: dict[str, Any], stages: list[str] | None, where: str | Path) -> None:
    unknown = set(stages or ()) - set(recipe["stages"])
    if unknown:
        raise ValueError(f"{where}: no stage(s) {sorted(unknown)} (stages: {list(recipe['stages'])})")


def stage_config(recipe: dict[str, Any], name: str, out: Path) -> dict[str, Any]:
    """The flat `agrl train` mapping of one stage: common keys, the stage's keys, paths under OUT."""
    stage = recipe["stages"][name]
    config = {**recipe["common"], **{k: v for k, v in stage.items() if k not in DEMO_KEYS}}
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
    splits = synth.generate(seed=data["seed"], sizes=data.get("sizes"), noise=data["noise"])
    synth.write(out / "data", splits)


def _make_model(recipe: dict, out: Path) -> None:
    if "import" in recipe["model"]:
        from agrl.pretrained import import_gguf

        import_gguf(recipe["model"]["import"], out / "model")
        return
    from agrl.tiny import init_model

    init_model(out / "model", size=recipe["model"]["size"], seed=recipe["model"]["seed"])


def _train(recipe: dict, out: Path, name: str) -> None:
    from agrl.train import train

    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(stage_config(recipe, name, out), sort_keys=False))
    train(path)


def _evaluate(recipe: dict, out: Path, name: str, split: str) -> None:
    from agrl.evaluate import evaluate

    settings = recipe["eval"]
    evaluate(out / name, out / "data" / f"{split}.jsonl", out / name / "eval" / f"{split}.json",
             batch_size=settings["batch_size"], max_new_tokens=settings["max_new_tokens"],
             limit=settings.get("limit"), resamples=settings["resamples"])


def trained_file(recipe: dict, name: str, out: Path) -> Path:
    """The weights a finished stage leaves: an adapter when the stage trains LoRA (lora_r > 0)."""
    lora = {**recipe["common"], **recipe["stages"][name]}.get("lora_r")
    return out / name / ("adapter_model.safetensors" if lora else "model.safetensors")


def plan(recipe: dict, out: Path, stages: list[str] | None = None) -> list[tuple[str, Path, Callable[[], None]]]:
    """(step name, the file that exists once it is done, the call) in order; `stages`: only these."""
    names = [name for name in recipe["stages"] if stages is None or name in stages]
    steps = [("data", out / "data" / "eval_wild.jsonl", lambda: _make_data(recipe, out)),
             ("model", out / "model" / "config.json", lambda: _make_model(recipe, out))]
    for name in names:
        steps.append((f"train {name}", trained_file(recipe, name, out),
                      lambda name=name: _train(recipe, out, name)))
    for name in names:
        steps += [(f"eval {name} {split}", out / name / "eval" / f"{split}.json",
                   lambda name=name, split=split: _evaluate(recipe, out, name, split)) for split in SPLITS]
    return steps


# ---------------------------------------------------------------------------- display


def _progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


class _StepWatcher:
    """Shows a training stage's step count: polls its metrics.jsonl (logging_steps=1) once a second."""

    def __init__(self, progress: Progress, task: int, metrics: Path, total: int | None):
        self.progress, self.task, self.metrics, self.total = progress, task, metrics, total
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            if self.metrics.exists():
                lines = self.metrics.read_text().splitlines()
                steps = [json.loads(line)["step"] for line in lines[-3:] if line.strip()]
                if steps:
                    self.progress.update(self.task, completed=max(steps), total=self.total)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def run_demo(
    out: str | Path, recipe: str | Path = "default", console: Console | None = None, stages: list[str] | None = None
) -> dict[str, Any]:
    """Run every step of the recipe into OUT (skipping finished ones), then the report.
    `stages` runs only those (a stage's `from` must then be done already, or among them).

    Returns {"timings": step -> seconds (None: already done), "total_s", "report": paths, "summary": ...}
    and writes OUT/timings.json.
    """
    out = Path(out)
    settings = load_recipe(recipe)
    check_stages(settings, stages, recipe)
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
            if done_file.exists():
                timings[name] = None
                progress.advance(overall)
                continue
            progress.update(overall, description=f"[bold]agrl demo[/bold]: {name}")
            timings[name] = _timed(progress, settings, out, name, call)
            console.log(f"{name}: {timings[name]:.1f} s")
            progress.advance(overall)
        progress.update(overall, description="[bold]agrl demo[/bold]: report")
        report = _report(settings, out, stages)
        progress.advance(overall)
    total = time.perf_counter() - start
    (out / "timings.json").write_text(json.dumps({"steps": timings, "total_s": total}, indent=2) + "\n")
    summary = json.loads(report["summary"].read_text())
    return {"timings": timings, "total_s": total, "report": report, "summary": summary}


def _timed(progress: Progress, recipe: dict, out: Path, name: str, call: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    stage = name.removeprefix("train ")
    log = out / "logs" / f"{name.replace(' ', '_')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle, redirect_stdout(handle), redirect_stderr(handle):
        if stage not in recipe["stages"]:
            call()
            return time.perf_counter() - t0
        total = {**recipe["common"], **recipe["stages"][stage]}.get("max_steps")
        total = total if total and total > 0 else None
        task = progress.add_task(f"  {stage} steps", total=total)
        with _StepWatcher(progress, task, out / stage / "metrics.jsonl", total):
            call()
        progress.remove_task(task)
    return time.perf_counter() - t0


def _report(recipe: dict, out: Path, stages: list[str] | None = None) -> dict[str, Path]:
    from agrl.report import write_report

    return write_report([out / name for name in recipe["stages"] if stages is None or name in stages], out / "report")


def results_table(summary: dict) -> Table:
    """Method x headline metric for each split, from the report's summary.json (macro-F1 with its 95% interval)."""
    metrics = ("macro_f1", "accuracy", "good_f1", "format_valid", "adherence")
    table = Table(title="agrl demo: results")
    for column in ("split", "method", "macro_f1 [95%]", *metrics[1:]):
        table.add_column(column)
    for split, methods in summary["comparison"].items():
        for method, stats in methods.items():
            table.add_row(split, method, *(_cell(stats.get(metric), metric == "macro_f1") for metric in metrics))
    return table


def _cell(stat: dict | None, interval: bool) -> str:
    if stat is None:
        return "–"
    if interval and stat["interval"]:
        return f"{stat['mean']:.3f} [{stat['interval'][0]:.2f}, {stat['interval'][1]:.2f}]"
    return f"{stat['mean']:.3f}"
