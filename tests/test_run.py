"""`agrl run RECIPE`: a tiny recipe with 2 jobs (a kill and a resume included), the bad-input refusals
(one line naming the file and key, exit 2, nothing written) and that every shipped recipe validates.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -x -q tests/test_run.py
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agrl.cli import app
from agrl.run.recipe import check_recipe, expand, load_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "data": {"seed": 0, "noise": 0.15, "sizes": {"sft": 32, "rl": 32, "eval_balanced": 8, "eval_wild": 8}},
    "model": {"size": "tiny", "seed": 0},
    "common": {"seed": 0, "report_to": "none", "disable_tqdm": True, "bf16": False, "logging_steps": 1,
               "save_strategy": "no"},
    "stages": {
        "sft": {"config": "sft.yaml", "from": "model", "data": "sft", "max_steps": 2, "per_device_train_batch_size": 8,
                "max_length": 256},
        "grpo": {"config": "grpo.yaml", "from": "sft", "data": "rl", "max_steps": 2, "per_device_train_batch_size": 8,
                 "max_completion_length": 32},
        "agrl": {"config": "agrl.yaml", "from": "sft", "data": "rl", "max_steps": 2, "per_device_train_batch_size": 8,
                 "max_completion_length": 32},
    },
    "eval": {"limit": 8, "batch_size": 8, "max_new_tokens": 32, "resamples": 20},
}


def _recipe(tmp_path: Path, change=None, name="tiny.yaml") -> Path:
    body = json.loads(json.dumps(TINY))
    if change:
        change(body)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def _agrl(*args: str, **kwargs) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "agrl", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **kwargs)


def _metrics(out: Path) -> dict:
    return {r["name"]: {s: e["metrics"] for s, e in r["evals"].items()}
            for r in json.loads((out / "results.json").read_text())["runs"]}


@pytest.mark.slow
def test_two_jobs_a_kill_and_a_resume_give_the_uninterrupted_results(tmp_path):
    recipe = _recipe(tmp_path, lambda b: b.update(  # GRPO's rate chosen on eval_wild (a test: no validation split)
        sweep={"split": "eval_wild", "metric": "macro_f1", "stages": {"grpo": {"learning_rate": [1e-5, 1e-4]}}}))
    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    assert _agrl("run", str(recipe), "--out", str(fresh), "--jobs", "2").wait(timeout=600) == 0
    stamps = {p.name: p.read_text() for p in (fresh / "stamps").glob("*.json")}
    assert {"train_sft.json", "train_grpo-learning_rate=1e-05.json", "train_grpo-learning_rate=0.0001.json",
            "train_agrl.json", "eval_agrl_eval_wild.json"} <= set(stamps)
    choices = json.loads((fresh / "choices.json").read_text())
    chosen = next(r for r in json.loads((fresh / "results.json").read_text())["runs"] if r["stage"] == "grpo"
                  and not r["sweep"])  # the chosen grid point is the stage's run, now on both eval splits too
    assert chosen["config"]["learning_rate"] == choices["grpo"]["learning_rate"]
    assert set(chosen["evals"]) == {"eval_wild", "eval_balanced"}
    # --jobs 2: after SFT three stages could start (two grid points and agrl); never more than two run at once.
    spans = {}
    for text in stamps.values():
        stamp = json.loads(text)
        spans.setdefault(stamp["job"], []).append((stamp["ended"] - stamp["wall_s"], stamp["ended"]))
    jobs = [(min(a for a, _ in s), max(b for _, b in s)) for s in spans.values()]
    assert max(sum(a <= t < b for a, b in jobs) for t, _ in jobs) == 2

    # Kill the whole process group (runner and its jobs) once SFT is done and the RL stages have started.
    proc = _agrl("run", str(recipe), "--out", str(killed), "--jobs", "2", start_new_session=True)
    deadline = time.time() + 300
    while not (killed / "stamps" / "train_sft.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before SFT was stamped"
        time.sleep(0.1)
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "timings.json").exists(), "killed too late to test a resume"
    partial = json.loads((killed / "results.json").read_text())  # rewritten as each job ends: a cut run reports
    assert "sft" in {r["name"] for r in partial["runs"]}
    before = {p.name: p.read_text() for p in (killed / "stamps").glob("*.json")}

    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(killed), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    timings = json.loads((killed / "timings.json").read_text())["steps"]
    assert timings["train sft"] is None and timings["data"] is None  # finished before the kill: skipped
    assert timings["train agrl"] is not None
    for name, text in before.items():  # a finished step's stamp (its cost included) is untouched
        assert (killed / "stamps" / name).read_text() == text
    assert _metrics(killed) == _metrics(fresh)
    body = json.loads((killed / "results.json").read_text())
    assert body["machine"]["cpus"] == os.cpu_count() and body["jobs"] == 2
    assert all(r["cost"][f"train {r['name']}"]["cpu_s"] > 0 for r in body["runs"])
    assert "| grpo |" in (killed / "report" / "report.md").read_text()

    # The report command reads the results.json alone.
    report = CliRunner().invoke(app, ["report", str(killed / "results.json"), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0, report.output
    assert "| agrl |" in (tmp_path / "rep" / "report.md").read_text()


def _bad(key, value):
    def change(body):
        node = body
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return change


@pytest.mark.parametrize("change, expected", [
    (_bad("evaluation", {}), "evaluation: unknown recipe key"),
    (_bad("model.flavour", "x"), "model.flavour: unknown key"),
    (_bad("stages.grpo.from", "dpo"), "stages.grpo.from: must be 'model' or an earlier stage"),
    (_bad("stages.grpo.config", "ppo.yaml"), "stages.grpo.config"),
    (_bad("stages.grpo.lerning_rate", 1e-4), ("stages.grpo:", "lerning_rate")),
    (_bad("sweep", {"split": "eval_wild", "metric": "macro_f1", "stages": {"grpo": {"warmup_ratio_x": [0.1]}}}),
     ("sweep.stages.grpo:", "warmup_ratio_x")),
    (_bad("sweep", {"split": "eval_wild", "metric": "macro_f1", "stages": {"ppo": {"learning_rate": [1e-4]}}}),
     "sweep.stages.ppo: no such stage"),
    (_bad("eval.splits", ["test"]), "eval.splits: 'test' is not a split"),
])
def test_a_bad_recipe_is_one_line_naming_file_and_key_before_any_job(tmp_path, change, expected):
    recipe = _recipe(tmp_path, change)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and str(recipe) in result.output
    assert all(part in result.output for part in ((expected,) if isinstance(expected, str) else expected))
    assert not out.exists()


def test_jobs_zero_and_another_recipes_out_are_refused(tmp_path):
    recipe = _recipe(tmp_path)
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "out"), "--jobs", "0"])
    assert result.exit_code == 2 and "--jobs 0: must be at least 1" in result.output
    assert not (tmp_path / "out").exists()
    # OUT holds a finished step of another recipe (its stamp differs): refused, nothing touched.
    out = tmp_path / "other"
    (out / "data").mkdir(parents=True)
    (out / "data" / "splits.json").write_text("[]\n")
    (out / "stamps").mkdir()
    (out / "stamps" / "data.json").write_text(json.dumps({"stamp": "0000", "wall_s": 1, "cpu_s": 1}))
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out)])
    assert result.exit_code == 2 and "made by another recipe (first: data)" in result.output
    assert sorted(p.name for p in out.rglob("*")) == ["data", "data.json", "splits.json", "stamps"]


def test_seeds_and_a_sweep_expand_into_runs_and_choose_on_validation(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, lambda b: b.update(
        seeds=[0, 1], sweep={"split": "eval_wild", "metric": "macro_f1", "stages": {"grpo": {"learning_rate": [1e-5, 1e-4]}}})))
    runs = expand(recipe)  # before the choice: the grid points (first seed) and what does not need the choice
    assert set(runs) == {"sft-s0", "sft-s1", "grpo-learning_rate=1e-05-s0", "grpo-learning_rate=0.0001-s0",
                         "agrl-s0", "agrl-s1"}
    assert runs["grpo-learning_rate=1e-05-s0"]["evals"] == ["eval_wild"] and runs["agrl-s1"]["from"] == "sft-s1"
    from agrl.run.recipe import choose

    for name, value in (("grpo-learning_rate=1e-05-s0", 0.4), ("grpo-learning_rate=0.0001-s0", 0.6)):
        (tmp_path / name / "eval").mkdir(parents=True)
        (tmp_path / name / "eval" / "eval_wild.json").write_text(json.dumps({"metrics": {"macro_f1": value}}))
    choices = choose(recipe, tmp_path)
    assert choices == {"grpo": {"learning_rate": 1e-4}}
    runs = expand(recipe, choices)
    assert runs["grpo-s1"]["keys"] == {"seed": 1, "learning_rate": 1e-4} and runs["grpo-s1"]["from"] == "sft-s1"
    chosen = runs["grpo-learning_rate=0.0001-s0"]  # seed 0's run is the chosen grid point, now on the eval sets
    assert "grpo-s0" not in runs and not chosen["sweep"] and chosen["evals"] == ["eval_wild", "eval_balanced"]
    assert runs["grpo-learning_rate=1e-05-s0"]["sweep"]


SHIPPED = [*(ROOT / "src" / "agrl" / "recipes" / "demo").glob("*.yaml"), *(ROOT / "configs").glob("*/*.yaml")]


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.parent.name != "accelerate"], ids=lambda p: p.stem)
def test_every_shipped_recipe_validates(path, tmp_path):
    """Each shipped recipe loads and each of its stages (every seed and grid point) is a valid train config.
    An import folder it names is stood in for by an empty one, a local model by the shipped base judge."""
    recipe = load_recipe(path)
    if recipe.model.path is not None:  # the shipped base judge stands in for the local model
        from agrl.model.tiny import base_judge_dir

        recipe = replace(recipe, model=replace(recipe.model, path=str(base_judge_dir("tiny-base"))))
    if recipe.data.dir is not None:
        recipe = replace(recipe, data=replace(recipe.data, dir=str(tmp_path / "import")))
        for split in ("train", "validation", "test"):
            (tmp_path / "import").mkdir(exist_ok=True)
            (tmp_path / "import" / f"{split}.jsonl").write_text("")
    check_recipe(recipe, tmp_path / "out")
    assert expand(recipe)


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.parent.name != "accelerate"], ids=lambda p: p.stem)
def test_the_typed_recipe_keeps_what_was_written_and_reads_back_from_recipe_json(path, tmp_path):
    """The stamps hash each section as written (recipe.written): for every shipped recipe that is the YAML's
    section itself (no default filled in), and OUT/recipe.json (as_json) parses back to the same plan."""
    from agrl.run.recipe import from_json, written
    from agrl.run.runner import plan

    raw = yaml.safe_load(path.read_text())
    recipe = load_recipe(path)
    for section in ("data", "model", "eval", "score", "sweep", "baselines", "report", "stages"):
        assert written(getattr(recipe, section)) == raw.get(section), section
    again = from_json(json.loads(json.dumps(recipe.as_json(), default=str)))
    assert again == recipe and again.path == recipe.path
    assert [(s.name, s.stamp) for s in plan(again, tmp_path)] == [(s.name, s.stamp) for s in plan(recipe, tmp_path)]


def test_the_stamps_are_those_of_the_untyped_recipe(tmp_path):
    """A finished OUT keeps its steps: the quick demo's data and model stamps as the dict-reading runner
    (caa9bce) computed them."""
    from agrl.run.runner import plan

    stamps = {step.name: step.stamp for step in plan(load_recipe("quick"), tmp_path)}
    assert (stamps["data"], stamps["model"]) == ("ac173b6d7bb2d55e", "10b6eccb14482576")


# ---------------------------------------------------------------------------- the GPU studies' features


def test_a_profile_and_sets_are_laid_over_the_recipe(tmp_path):
    recipe = _recipe(tmp_path, lambda b: b.update(profiles={"dry": {"stages": {"sft": {"max_steps": 1}}, "seeds": [3]}}))
    plain = load_recipe(recipe)
    assert plain.stages["sft"].keys["max_steps"] == 2 and "profiles" not in plain.as_json()
    dry = load_recipe(recipe, "dry", ["stages.grpo.learning_rate=3.0e-5", "data.sizes.sft=16"])
    assert dry.stages["sft"].keys["max_steps"] == 1 and dry.stages["sft"].keys["per_device_train_batch_size"] == 8
    assert dry.seeds == (3,) and dry.stages["grpo"].keys["learning_rate"] == 3e-5 and dry.data.sizes["sft"] == 16
    assert set(expand(dry)) == {"sft-s3", "grpo-s3", "agrl-s3"}


def test_a_once_stage_runs_once_and_every_seed_starts_from_it(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, lambda b: (b.update(seeds=[0, 1]), b["stages"]["sft"].update(once=True))))
    runs = expand(recipe)
    assert set(runs) == {"sft", "grpo-s0", "grpo-s1", "agrl-s0", "agrl-s1"}
    assert runs["sft"]["seed"] is None and "seed" not in runs["sft"]["keys"]
    assert {runs[n]["from"] for n in runs if n != "sft"} == {"sft"}
    assert runs["grpo-s1"]["keys"] == {"seed": 1}
    from agrl.run.recipe import stage_config

    assert stage_config(recipe, "agrl-s1", tmp_path)["model"] == str(tmp_path / "sft")


def test_data_add_puts_a_clean_generated_set_before_the_split_off_the_eval_queries(tmp_path):
    from agrl.core import synth
    from agrl.run.steps import make_data

    recipe = load_recipe(_recipe(tmp_path, lambda b: b["data"].update(
        add={"sft": {"seed": 1, "size": 24, "mix": {"plain": 0.5, "brand": 0.5}}},
        split={"rl": {"rl": 0.75, "validation": 0.25}})))
    out = tmp_path / "out"
    make_data(recipe, out)
    rows = [json.loads(line) for line in (out / "data" / "sft.jsonl").read_text().splitlines()]
    added = sum(r["id"].endswith("-add1") for r in rows)  # (generate may fall short of a size by a few)
    assert 16 <= added <= 24 and len(rows) - added >= 16 and len({r["id"] for r in rows}) == len(rows)
    assert all(r["id"].endswith("-add1") and r["family"] in ("plain", "brand") for r in rows[:added])
    assert not any(r["id"].endswith("-add1") for r in rows[added:])
    evals = {synth.normalize_query(json.loads(line)["query"]) for split in ("eval_balanced", "eval_wild")
             for line in (out / "data" / f"{split}.jsonl").read_text().splitlines()}
    assert not evals & {synth.normalize_query(r["query"]) for r in rows[:added]}
    assert (out / "data" / "validation.jsonl").stat().st_size > 0


def test_a_sweep_by_score_chooses_on_the_scored_macro_f1(tmp_path):
    from agrl.run.recipe import choose

    recipe = load_recipe(_recipe(tmp_path, lambda b: b.update(
        score={"splits": [], "batch_size": 8},
        sweep={"split": "eval_wild", "metric": "macro_f1", "by": "score", "stages": {"grpo": {"learning_rate": [1e-5, 1e-4]}}})))
    out = tmp_path / "out"
    from agrl.run.steps import make_data

    make_data(recipe, out)
    runs = expand(recipe)
    assert runs["grpo-learning_rate=1e-05"]["scores"] == ["eval_wild"] and runs["grpo-learning_rate=1e-05"]["evals"] == []
    assert choose(recipe, out) == {}  # no grid point scored yet: no choice
    gold = [json.loads(line) for line in (out / "data" / "eval_wild.jsonl").read_text().splitlines()]
    (out / "scores").mkdir()
    for name, right in (("grpo-learning_rate=1e-05", False), ("grpo-learning_rate=0.0001", True)):
        rows = [{"id": r["id"], "label": r["label"] if right else 1 + r["label"] % 4} for r in gold]
        (out / "scores" / f"{name}.eval_wild.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (out / "scores" / f"{name}.eval_wild.cost.json").write_text("{}")
    assert choose(recipe, out) == {"grpo": {"learning_rate": 1e-4}}
    chosen = expand(recipe, {"grpo": {"learning_rate": 1e-4}})["grpo-learning_rate=0.0001"]
    assert not chosen["sweep"] and chosen["evals"] == ["eval_balanced", "eval_wild"]


@pytest.mark.parametrize("args, change, expected", [
    (["--profile", "gpu"], None, "profiles.gpu: no such profile"),
    (["--set", "stages.sft.max_steps"], None, "--set stages.sft.max_steps: expected KEY=VALUE"),
    (["--set", "stages.sft.max_stepz=2"], None, ("stages.sft:", "max_stepz")),
    (["--set", "evaluation.limit=2"], None, "evaluation: unknown recipe key"),
    ([], lambda b: b["stages"]["grpo"].update(once=True), "stages.grpo.once: a `once` stage starts from"),
    ([], lambda b: b["stages"]["sft"].update(once="yes"), "stages.sft.once: must be true or false"),
    ([], lambda b: b.update(baselines={"kinds": ["svm"], "train": "sft", "splits": ["eval_wild"]}),
     "baselines.kinds: 'svm' is not a baseline"),
    ([], lambda b: b.update(baselines={"kinds": ["tfidf"], "train": "sft", "splits": ["test"]}),
     "baselines.splits: 'test' is not a split"),
    ([], lambda b: b["data"].update(add={"sft": {"seed": 1, "size": 8, "noize": 0}}), "data.add.sft.noize: unknown key"),
    ([], lambda b: b.update(sweep={"split": "eval_wild", "metric": "macro_f1", "by": "score",
                                   "stages": {"grpo": {"learning_rate": [1e-5]}}}), "sweep.by: score needs a score section"),
    ([], lambda b: b.pop("eval") and b.update(score={"batch_size": 8, "splits": ["eval_wild"]}, sweep={
        "split": "eval_wild", "metric": "macro_f1", "stages": {"grpo": {"learning_rate": [1e-5]}}}),
     "sweep.by: eval (the default) needs an eval section"),
])
def test_bad_gpu_study_input_is_one_line_naming_file_and_key(tmp_path, args, change, expected):
    recipe = _recipe(tmp_path, change)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and str(recipe) in result.output
    assert all(part in result.output for part in ((expected,) if isinstance(expected, str) else expected))
    assert not out.exists()


# ---------------------------------------------------------------------------- issue 26: the runner's defects


def _imported(tmp_path: Path, change=None) -> Path:
    """A recipe on an import folder (train, test) and a local model (a copy of the shipped base judge)."""
    import shutil

    from agrl.core import synth
    from agrl.data.records import write_jsonl
    from agrl.model.tiny import base_judge_dir

    splits = synth.generate(seed=0, sizes={"sft": 32, "rl": 0, "eval_balanced": 0, "eval_wild": 8})
    write_jsonl(splits["sft"], tmp_path / "import" / "train.jsonl")
    write_jsonl(splits["eval_wild"], tmp_path / "import" / "test.jsonl")
    shutil.copytree(base_judge_dir("tiny-base"), tmp_path / "local_model")
    (tmp_path / "rules.yaml").write_text((ROOT / "src" / "agrl" / "recipes" / "rules" / "default.yaml").read_text())
    body = {"data": {"dir": str(tmp_path / "import")}, "model": {"path": str(tmp_path / "local_model")},
            "common": TINY["common"],
            "stages": {"sft": {"config": "sft.yaml", "from": "model", "data": "train", "max_steps": 2,
                               "per_device_train_batch_size": 8, "max_length": 256,
                               "rules_config": str(tmp_path / "rules.yaml")}},
            "score": {"splits": ["test"], "batch_size": 8}}
    if change:
        change(body)
    path = tmp_path / "imported.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def _finished(recipe_path: Path, out: Path) -> None:
    """OUT as a finished run of the recipe leaves it: each step's output there, under the stamp it wants."""
    from agrl.run.runner import plan

    recipe = load_recipe(recipe_path)
    (out / "recipe.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(recipe.as_json()))
    for step in plan(recipe, out):
        step.done.parent.mkdir(parents=True, exist_ok=True)
        step.done.write_text("{}")
        (out / "stamps").mkdir(exist_ok=True)
        (out / "stamps" / f"{step.name.replace(' ', '_')}.json").write_text(json.dumps({"stamp": step.stamp}))


@pytest.mark.parametrize("what, first", [("model", "train sft"), ("data", "data"), ("rules", "train sft"),
                                         ("exclude", "data")])
def test_a_changed_input_file_is_refused_by_the_step_that_reads_it(tmp_path, what, first):
    """Defect 1: a step's stamp covers what it reads by content (the local model's weights, the import's
    splits, a rules file the stage names, the recipe whose eval queries are excluded), not by path."""
    if what == "exclude":
        other = _recipe(tmp_path, name="other.yaml")
        recipe = _recipe(tmp_path, lambda b: b["data"].update(exclude_queries_of=str(other)))
    else:
        recipe = _imported(tmp_path)
    out = tmp_path / "out"
    _finished(recipe, out)
    if what == "model":  # another model at the same path (same size, other weights)
        weights = tmp_path / "local_model" / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-8:] = bytes(8)
        weights.write_bytes(bytes(data))
    elif what == "data":
        (tmp_path / "import" / "test.jsonl").write_text(
            "".join((tmp_path / "import" / "test.jsonl").read_text().splitlines(keepends=True)[:4]))
    elif what == "rules":
        (tmp_path / "rules.yaml").write_text((tmp_path / "rules.yaml").read_text() + "\n# edited\n")
    else:
        other.write_text(other.read_text().replace("seed: 0\n  noise", "seed: 5\n  noise", 1))
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"made by another recipe (first: {first})" in result.output and "changed since" in result.output


@pytest.mark.parametrize("change, expected", [
    (lambda b: b["stages"].update(data={"config": "sft.yaml", "from": "model"}), "stages.data: 'data' is reserved"),
    (lambda b: b["stages"].update(model={"config": "sft.yaml", "from": "model"}), "stages.model: 'model' is reserved"),
    (lambda b: b["stages"].update({"../../x": {"config": "sft.yaml", "from": "model"}}),
     "stages.../../x: a stage name is a plain identifier"),
    (_bad("eval.limit", -1), "eval.limit: must be a whole number >= 1"),
    (_bad("stages.sft.records", -5), "stages.sft.records: must be a whole number >= 1"),
    (lambda b: b.update(score={"splits": ["eval_wild"], "batch_size": 8, "queries": -1}),
     "score.queries: must be a whole number >= 1"),
    (_bad("data.sizes.sft", -3), "data.sizes.sft: must be a whole number >= 0"),
    (_bad("data.add", [1]), "data.add: must be a mapping"),
    (_bad("data.sizes", [1, 2]), "data.sizes: must be a mapping"),
    (_bad("data.split", 5), "data.split: must be a mapping"),
    (lambda b: b.update(sweep={"split": "eval_wild", "metric": "macro_f1", "stages": ["sft"]}),
     "sweep.stages: must be a mapping"),
    (_bad("stages.sft.config", "/etc/passwd"), "stages.sft.config: /etc/passwd: a shipped stage"),
    (_bad("stages.sft.config", "../sft.yaml"), "stages.sft.config: ../sft.yaml: a shipped stage"),
    (_bad("eval.batch_size", 0), "eval.batch_size: must be a whole number >= 1"),
    (_bad("eval.resamples", "many"), "eval.resamples: must be a whole number"),
    (_bad("eval.curve", "nosplit"), "eval.curve: 'nosplit' is not a split"),
    (_bad("model", {"path": "no/such/model"}), "model.path no/such/model: no such model directory"),
    (_bad("model", {"import": "no_such.gguf"}), "model.import: no_such.gguf: no such GGUF file"),
    (_bad("data.exclude_queries_of", "no_such.yaml"), "data.exclude_queries_of: no_such.yaml: no such demo recipe"),
    (_bad("stages", {}), "stages: must map stage names"),
    (lambda b: b.update(sweep={"split": "eval_wild", "metric": "macro_f2", "stages": {"grpo": {"learning_rate": [1e-4]}}}),
     "sweep.metric: 'macro_f2' is not a metric"),
    (lambda b: b.update(baselines={"kinds": "bm25", "train": "sft", "splits": ["eval_wild"]}), "baselines.kinds: must be a list"),
    (_bad("seeds", []), "seeds: must not be empty"),
    (_bad("seeds", [1, 1]), "seeds: lists 1 twice"),
    (_bad("eval.splits", "eval_wild"), "eval.splits: must be a list"),
    (_bad("data.noise", 1.5), "data.noise: must be a number in [0, 1]"),
    (_bad("report", {"differences": [["agrl", "ppo"]]}), "report.differences: ['agrl', 'ppo']"),
])
def test_every_recipe_mistake_is_one_line_before_any_job(tmp_path, change, expected):
    """Defects 4, 5, 6: reserved or odd stage names, negative counts, wrong shapes, files out of reach and
    names that do not resolve are one line naming the file and key, exit 2, OUT untouched."""
    recipe = _recipe(tmp_path, change)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and str(recipe) in result.output, result.output
    assert expected in result.output, result.output
    assert not out.exists()


@pytest.mark.parametrize("only", ["", "sft,,grpo", "sft,sft"])
def test_an_empty_or_repeated_only_is_refused(tmp_path, only):
    result = CliRunner().invoke(app, ["run", str(_recipe(tmp_path)), "--out", str(tmp_path / "out"), "--only", only])
    assert result.exit_code == 2 and "--only" in result.output and "names each stage once" in result.output
    assert not (tmp_path / "out").exists()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:  # a zombie (nobody reaped it yet) is dead
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the job's death signal is Linux's prctl")
def test_one_runner_per_out_and_its_jobs_die_with_it(tmp_path):
    """Defects 2 and 3 with real processes: while a runner trains, a second `agrl run` on its OUT is refused
    naming it; a `kill -9` of the runner takes its trainer with it; a job an earlier runner left alive (it
    holds its lock) makes a rerun refuse."""
    recipe = _imported(tmp_path, lambda b: b["stages"]["sft"].update(max_steps=100000))
    out = tmp_path / "out"
    runner = _agrl("run", str(recipe), "--out", str(out), start_new_session=True)
    try:
        lock = out / "locks" / "sft.lock"
        deadline = time.time() + 240
        while not (lock.exists() and lock.read_text().strip()):
            assert runner.poll() is None and time.time() < deadline, "the runner ended before SFT started"
            time.sleep(0.2)
        trainer = int(lock.read_text())
        assert _alive(trainer)
        second = subprocess.run([sys.executable, "-m", "agrl", "run", str(recipe), "--out", str(out)],
                                env=os.environ | {"PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True,
                                check=False)
        assert second.returncode == 2, second.stderr
        assert f"another `agrl run` holds it now (pid {runner.pid}" in second.stderr
        os.kill(runner.pid, signal.SIGKILL)  # the runner alone, as `kill -9 PID` does
        runner.wait()
        deadline = time.time() + 20
        while _alive(trainer):
            assert time.time() < deadline, "the trainer outlived its runner"
            time.sleep(0.1)
    finally:
        try:
            os.killpg(runner.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # A job left alive by an earlier runner (here: a process holding the job's lock) stops a rerun.
    hold = ("import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.truncate(0); "
            "f.write(str(os.getpid())); f.flush(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert f"job sft of an earlier run is still running (pid {holder.pid})" in result.output
    finally:
        holder.kill()
        holder.wait()
