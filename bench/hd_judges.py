"""LLM judges on Home Depot: train them from a recipe (configs/home_depot/*.yaml), then score them.

Protocol: bench/PROTOCOL_home_depot.md. A recipe names the import folder (`agrl data import
home-depot`), the starting model (a fresh tiny model whose tokenizer is trained on the train split's
prompts and teacher reasoning, or a local HF model such as `make smollm2`'s), and the stages, each
an `agrl train configs/STAGE.yaml --set ...` subprocess. Every stage's final model is then scored
with `agrl score` (one forward pass a pair) on the recipe's splits. Everything is resumable: a
finished stage or score file is skipped, a killed stage resumes from its last checkpoint, `agrl
score` appends to its output. `bench/home_depot.py --judges OUT` puts the scored stages in the table.

    PYTHONPATH=src python bench/hd_judges.py --recipe configs/home_depot/tiny.yaml --out runs/hd_judges/tiny
    PYTHONPATH=src python bench/hd_judges.py --recipe ... --out ... --stages grpo   # one stage (+ its scores)

OUT holds: model/ (tiny: + corpus.txt), STAGE/ (the run), data/ (train subsets), scores/STAGE.SPLIT.jsonl
with .cost.json (CPU and wall seconds of scoring), runs.jsonl (each subprocess: wall, CPU, threads).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE_KEYS = ("config", "from", "records")  # stage keys that are not `agrl train` keys
AGRL = [sys.executable, "-m", "agrl"]


def load_recipe(path: Path) -> dict:
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("data", "model", "stages", "score"):
        if not isinstance(recipe, dict) or not isinstance(recipe.get(key), dict):
            sys.exit(f"{path}: {key}: required mapping is missing")
    earlier = ["model"]
    for name, stage in recipe["stages"].items():
        if stage.get("from") not in earlier:
            sys.exit(f"{path}: stages.{name}.from: must be 'model' or an earlier stage")
        earlier.append(name)
    return recipe


def finished(run_dir: Path) -> bool:
    """The stage's final save is there (full weights or a LoRA adapter), not only checkpoints."""
    return any((run_dir / name).is_file() for name in ("model.safetensors", "adapter_model.safetensors"))


def rel(path: Path) -> str:
    """A path as `agrl train` should record it: relative to the checkout when inside it (runs resume
    from any cwd of the driver; a run's identity is its paths)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def call(argv: list, out: Path, what: str) -> dict:
    """Run one subprocess (its output to OUT/what.log); log wall and CPU seconds to OUT/runs.jsonl."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    log = out / f"{what.replace('/', '.')}.log"
    print(f"{what}: {' '.join(map(str, argv))}", file=sys.stderr, flush=True)
    with log.open("a", encoding="utf-8") as handle:
        code = subprocess.run([str(a) for a in argv], stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                              env=os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cost = {"what": what, "wall_s": round(time.time() - start, 1),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "threads": os.environ.get("OMP_NUM_THREADS", f"unset ({os.cpu_count()} cores)"), "rc": code}
    with (out / "runs.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(cost) + "\n")
    if code:
        sys.exit(f"{what} failed (exit {code}); see {log}")
    return cost


def write_corpus(data: Path, scheme: str, path: Path) -> None:
    """The tiny tokenizer's corpus: every train prompt and its teacher reasoning (what SFT will show it)."""
    from agrl.data import load_records
    from agrl.files import atomic_write
    from agrl.prompt import user_message
    from agrl.rules import RulesEngine
    from agrl.schemes import load_scheme

    records = load_records(data / "train.jsonl", load_scheme(scheme))
    engine = RulesEngine.from_records(records, load_scheme(scheme))
    atomic_write(path, "".join(user_message(r) + "\n" + engine.teacher_reasoning(r) + "\n" for r in records))


def starting_model(recipe: dict, data: Path, out: Path) -> Path:
    spec = recipe["model"]
    if "path" in spec:
        path = ROOT / spec["path"]
        if not (path / "config.json").is_file():
            sys.exit(f"model.path {spec['path']}: no model there (for runs/smollm2: `make smollm2`)")
        return path
    model = out / "model"
    if not (model / "model.safetensors").is_file():
        corpus = out / "corpus.txt"
        if not corpus.is_file():
            write_corpus(data, recipe["data"]["scheme"], corpus)
        init = spec["init"]
        call([*AGRL, "model", "init", "--out", model, "--size", init["size"], "--seed", init["seed"],
              "--corpus", corpus], out, "model")
    return model


def train_subset(data: Path, count: int, seed: int, out: Path) -> Path:
    """The first `count` train pairs of a seeded shuffle (train.jsonl is grouped by query)."""
    from agrl.files import atomic_write

    path = out / "data" / f"train_{count}_seed{seed}.jsonl"
    if not path.is_file():
        rows = lines(data / "train.jsonl")
        random.Random(seed).shuffle(rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, "".join(row + "\n" for row in rows[:count]))
    return path


def train_stage(name: str, recipe: dict, data: Path, model: Path, out: Path) -> None:
    stage = recipe["stages"][name]
    run_dir = out / name
    if finished(run_dir):
        return
    train_file = data / "train.jsonl"
    common = recipe.get("common", {})
    if "records" in stage:
        train_file = train_subset(data, stage["records"], common.get("seed", 0), out)
    start = model if stage["from"] == "model" else out / stage["from"]
    keys = {**common, **{k: v for k, v in stage.items() if k not in RECIPE_KEYS},
            "model": rel(start), "train_file": rel(train_file), "scheme": recipe["data"]["scheme"],
            "output_dir": rel(run_dir)}
    sets = [f"--set={k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in keys.items()]
    call([*AGRL, "train", ROOT / "configs" / stage["config"], *sets], out, name)


def first_queries(data: Path, split: str, count: int | None, out: Path) -> Path:
    """The split's pairs of its first `count` queries (file order), as `home_depot.py --test-limit` takes them."""
    from agrl.files import atomic_write

    source = data / f"{split}.jsonl"
    if count is None:
        return source
    path = out / "data" / f"{split}_first{count}queries.jsonl"
    if not path.is_file():
        rows = [(row, json.loads(row)["query"]) for row in lines(source)]
        keep = set(list(dict.fromkeys(query for _, query in rows))[:count])
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, "".join(row + "\n" for row, query in rows if query in keep))
    return path


def score_stage(name: str, recipe: dict, data: Path, out: Path) -> None:
    for split in recipe["score"]["splits"]:
        target = out / "scores" / f"{name}.{split}.jsonl"
        source = first_queries(data, split, recipe["score"].get("queries"), out)
        if target.is_file() and len(lines(target)) >= len(lines(source)):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        # no --scheme: `agrl score` reads the one the model trained with from its config.yaml
        cost = call([*AGRL, "score", "--model", out / name, "--input", source, "--output", target,
                     "--batch-size", recipe["score"]["batch_size"], "--device", "cpu"], out, f"score.{name}.{split}")
        cost_file = target.with_suffix(".cost.json")
        old = json.loads(cost_file.read_text()) if cost_file.is_file() else {"cpu_s": 0.0, "wall_s": 0.0}
        cost_file.write_text(json.dumps({k: round(old[k] + cost[k], 1) for k in ("cpu_s", "wall_s")}
                                        | {"threads": cost["threads"]}) + "\n")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, help="configs/home_depot/*.yaml")
    parser.add_argument("--out", required=True, help="run folder (resumable)")
    parser.add_argument("--data", default=None, help="import folder (default: the recipe's data.dir)")
    parser.add_argument("--stages", default=None, help="comma-separated stages (default: all of the recipe's)")
    args = parser.parse_args(argv)
    recipe = load_recipe(Path(args.recipe))
    data = Path(args.data).resolve() if args.data else ROOT / recipe["data"]["dir"]
    if not (data / "test.jsonl").is_file():
        sys.exit(f"{data}: no import there; run `agrl data import home-depot --out {data}`")
    stages = args.stages.split(",") if args.stages else list(recipe["stages"])
    unknown = set(stages) - set(recipe["stages"])
    if unknown:
        sys.exit(f"--stages: {sorted(unknown)} not in the recipe ({', '.join(recipe['stages'])})")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    model = starting_model(recipe, data, out)
    for name in stages:
        source = recipe["stages"][name]["from"]
        if source != "model" and not finished(out / source):
            sys.exit(f"stage {name}: its starting stage {source} is not trained yet")
        train_stage(name, recipe, data, model, out)
        score_stage(name, recipe, data, out)
    return out


if __name__ == "__main__":
    main()
