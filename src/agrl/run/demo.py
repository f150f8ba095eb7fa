"""`agrl demo`: the friendly name for `agrl run` (run.py) on a built-in recipe (spec section 9):
synthetic data -> the shipped base judge -> SFT -> DPO, GRPO and AGRL from the same SFT checkpoint ->
evaluation on eval_balanced and eval_wild -> report, with one progress display over every step.

The recipes are package data (recipes/demo/{default,quick,base}.yaml; recipe.py describes their
sections); `--recipe FILE` runs any other (configs/smollm2/cpu.yaml). What a rerun skips, resumes or
refuses is `agrl run`'s. This module adds only the result tables the command prints.

    result = run_demo("runs/demo", recipe="quick")     # or: agrl demo --out runs/demo [--quick]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agrl.run.recipe import check_recipe, load_recipe, stage_config  # noqa: F401  (the demo's public names)
from agrl.run.runner import plan, run_recipe  # noqa: F401


def run_demo(out: str | Path, recipe: str | Path = "default", console: Console | None = None,
             force: bool = False, stages: list[str] | None = None, jobs: int = 1) -> dict[str, Any]:
    """`agrl run` on a demo recipe; returns run_recipe's result (timings, total_s, report, summary)."""
    return run_recipe(recipe, out, jobs=jobs, stages=stages, force=force, console=console, title="agrl demo")


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
