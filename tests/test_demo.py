"""`agrl demo --quick` end to end (data -> tiny model -> SFT -> DPO, GRPO, AGRL -> eval -> report), and
the recipe checks. The quick recipe trains 2-3 steps a stage on a few dozen records: the test checks
that every stage ran and the report holds each method's numbers, not that the numbers are good.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -x -q tests/test_demo.py
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agrl.cli import app
from agrl.run.demo import load_recipe, plan, stage_config
from agrl.run.recipe import written
from agrl.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]

METHODS = ("sft", "dpo", "grpo", "agrl")


# The demo's stage settings (flat: common + stage keys) as its recipes resolve them from the shipped stages:
# the demo must run exactly these (its numbers in docs/results.md). The default's RL stages are the method
# study's budget and chosen rates (bench/PROTOCOL.md); the rest is what it ran before reading the configs.
_COMMON = {"seed": 0, "report_to": "none", "disable_tqdm": True, "bf16": False, "logging_steps": 1, "save_strategy": "no"}
_RL = {"num_generations": 4, "beta": 0.0}
DEMO_BEFORE = {
    "default": {
        "sft": {"method": "sft", "num_train_epochs": 3, "per_device_train_batch_size": 32, "learning_rate": 5e-4,
                "lr_scheduler_type": "cosine", "warmup_steps": 5, "sft_label_weight": 10, "max_length": 512},
        "dpo": {"method": "dpo", "max_train_records": 800, "dpo_samples": 4, "dpo_max_new_tokens": 96,
                "num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 2e-4, "beta": 0.1,
                "max_length": 640},
        "grpo": {"method": "grpo", "max_steps": 100, "per_device_train_batch_size": 32, "max_completion_length": 96,
                 "temperature": 0.7, "learning_rate": 2e-4, **_RL},
        "agrl": {"method": "agrl", "max_steps": 100, "per_device_train_batch_size": 32, "max_completion_length": 96,
                 "temperature": 0.7, "learning_rate": 2e-4, "agr_mode": "deferred", "agr_k": 2, **_RL},
    },
    "quick": {
        "sft": {"method": "sft", "max_steps": 3, "per_device_train_batch_size": 16, "learning_rate": 2e-3,
                "max_length": 256},
        "dpo": {"method": "dpo", "max_train_records": 8, "dpo_samples": 2, "dpo_max_new_tokens": 48, "max_steps": 2,
                "per_device_train_batch_size": 4, "learning_rate": 2e-4, "max_length": 256},
        "grpo": {"method": "grpo", "max_steps": 2, "per_device_train_batch_size": 8, "max_completion_length": 48,
                 "learning_rate": 2e-5, **_RL},
        "agrl": {"method": "agrl", "max_steps": 2, "per_device_train_batch_size": 8, "max_completion_length": 48,
                 "learning_rate": 2e-5, "agr_mode": "deferred", "agr_k": 2, **_RL},
    },
}


def _resolved(config: dict, path: Path) -> tuple[dict, dict]:
    from dataclasses import asdict

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    _, run, args = load_config(path)
    return {k: v for k, v in asdict(run).items() if k != "trl_keys"}, args.to_dict()


@pytest.mark.parametrize("name", ["default", "quick"])
def test_demo_reads_the_stage_configs_and_runs_what_it_ran_before(name, tmp_path):
    """The shipped stages (agrl/recipes/stages/*.yaml) hold each stage once; the demo's recipe adds only its paths and its own keys, and
    every resolved value (agrl's and TRL's) equals the demo's before it read the configs."""
    recipe = load_recipe(name)
    out = tmp_path / "out"
    for stage, before in DEMO_BEFORE[name].items():
        assert recipe.stages[stage].config == f"{stage}.yaml"
        paths = {k: v for k, v in stage_config(recipe, stage, out).items() if k in ("model", "train_file", "output_dir")}
        now = _resolved(stage_config(recipe, stage, out), tmp_path / "now.yaml")
        then = _resolved({**_COMMON, **before, **paths}, tmp_path / "then.yaml")
        assert now == then, stage


@pytest.mark.parametrize("name", ["default", "quick"])
def test_recipe_stages_are_valid_train_configs(name, tmp_path):
    """Each stage of a built-in recipe loads through `agrl train`'s config loader (no unknown keys)."""
    recipe = load_recipe(name)
    assert tuple(recipe.stages) == METHODS
    for stage in recipe.stages:
        path = tmp_path / f"{stage}.yaml"
        path.write_text(yaml.safe_dump(stage_config(recipe, stage, tmp_path / "out")))
        method, run, args = load_config(path)
        assert method == stage
        assert args.output_dir == str(tmp_path / "out" / stage)
        assert run.model == str(tmp_path / "out" / ("model" if stage == "sft" else "sft"))
        assert args.disable_tqdm  # the demo's display is the only progress view


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_smollm2_recipes_are_valid_lora_train_configs(name, tmp_path):
    """configs/smollm2/*.yaml: every stage trains LoRA from the imported model or SFT's adapter."""
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "configs" / "smollm2" / f"{name}.yaml")
    assert written(recipe.model) == {"import": "smollm2"} and tuple(recipe.stages) == METHODS
    for stage in recipe.stages:
        path = tmp_path / f"{stage}.yaml"
        path.write_text(yaml.safe_dump(stage_config(recipe, stage, tmp_path / "out")))
        method, run, args = load_config(path)
        assert method == stage and run.lora_r > 0 and args.bf16 == (name == "gpu")
    steps = plan(recipe, tmp_path / "out", stages=["sft"])
    assert [step.name for step in steps] == ["data", "model", "train sft", "eval sft eval_balanced",
                                             "eval sft eval_wild"]
    assert steps[2].done == tmp_path / "out" / "sft" / "adapter_model.safetensors"  # a LoRA stage is done


def test_bad_recipe_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": {"seed": 0, "noise": 0.1}, "model": {"size": "tiny", "seed": 0},
                                    "eval": {"batch_size": 8, "max_new_tokens": 8, "resamples": 0}, "common": {},
                                    "stages": {"grpo": {"from": "sft", "data": "rl"}}}))
    with pytest.raises(ValueError, match="stages.grpo.from"):
        load_recipe(path)
    with pytest.raises(ValueError, match="no such demo recipe"):
        load_recipe(tmp_path / "missing.yaml")
    result = CliRunner().invoke(app, ["demo", "--quick", "--stages", "sft,ppo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "no stage(s) ['ppo']" in result.output and not (tmp_path / "d").exists()


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "report" / "summary.json").read_text())
    for split in ("eval_balanced", "eval_wild"):
        for method in METHODS:
            stats = summary["comparison"][split][method]
            assert 0.0 <= stats["macro_f1"]["mean"] <= 1.0
            assert 0.0 <= stats["accuracy"]["mean"] <= 1.0
    report = (out / "report" / "report.md").read_text()
    assert all(f"| {method} |" in report for method in METHODS)
    timings = json.loads((out / "timings.json").read_text())["steps"]
    assert set(timings) == {step.name for step in plan(load_recipe("quick"), out)}
    assert all(seconds is not None for seconds in timings.values())
    for method in METHODS:  # each stage wrote its config (re-runnable by hand) and its model
        assert (out / "configs" / f"{method}.yaml").is_file()
        assert (out / method / "model.safetensors").is_file()

    # A second run finds every step done and only rebuilds the report.
    again = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert all(v is None for v in json.loads((out / "timings.json").read_text())["steps"].values())


def test_results_tables_fit_80_columns():
    """Every method name, header and number shows uncut in an 80-column terminal."""
    from rich.console import Console

    from agrl.run.demo import RESULT_COLUMNS, results_tables

    stat = {"mean": 0.8771, "interval": [0.8512, 0.9011]}
    methods = ("sft", "dpo", "grpo", "grpo_dynamic", "grpo_pr", "agr_only", "agrl")
    summary = {"comparison": {split: {m: {metric: stat for metric, _ in RESULT_COLUMNS} for m in methods}
                              for split in ("eval_balanced", "eval_wild")}}
    console = Console(width=80, record=True, color_system=None)
    for table in results_tables(summary):
        console.print(table)
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for word in (*methods, "eval_balanced", "eval_wild", "0.877 [0.85, 0.90]", *(h for _, h in RESULT_COLUMNS)):
        assert word in text, word


@pytest.mark.slow
def test_the_built_wheel_runs_its_own_demo(tmp_path):
    """A wheel carries what its demo reads (the stage configs, recipes, rules, schemes): built from a copy of
    the source, installed into a fresh venv that sees this environment's dependencies (a .pth naming its
    site-packages, whose own .pth files, the editable agrl's included, are not read) but not the source."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = lambda *cmd, **kw: subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, **kw)
    built = run(sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"),
                cwd=source)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel = next((tmp_path / "wheel").glob("agrl-*.whl"))
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", str(venv)).returncode == 0
    python = venv / "bin" / "python"
    site = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(site, "shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    assert run(str(python), "-c", "import agrl").returncode != 0  # the source is not reachable from there
    installed = run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel))
    assert installed.returncode == 0, installed.stderr[-2000:]
    where = run(str(python), "-c", "import agrl; print(agrl.__file__)", cwd=tmp_path).stdout.strip()
    assert where.startswith(site), where
    demo = run(str(venv / "bin" / "agrl"), "demo", "--quick", "--out", str(tmp_path / "demo"), cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert (tmp_path / "demo" / "report" / "report.md").is_file()
    assert (tmp_path / "demo" / "configs" / "sft.yaml").is_file()
